"""What one training task contributes to the shared loop in :mod:`motion_adapters.training.trainer`.

The trainer owns everything every task needs (accelerate, gradient accumulation, clipping, EMA, checkpoints and
exact resume, logging, the progress bar); a task only builds its models, says which parameters train, turns a
micro-batch into losses and writes what it trained.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

#: ``(loss_fn, weight)``: the loop calls ``loss_fn()``, multiplies by ``weight`` and back-propagates each pass
#: on its own (``no_sync`` for all but the last, so DDP reduces the gradients once per micro-batch).
LossPass = tuple[Callable[[], torch.Tensor], float]


class Task(Protocol):
    """One task of the trainer (built on the accelerator's device, right after the run's seed is set)."""

    memory: dict  # what is on: ``adamw8bit`` (read by the trainer), precision, checkpointing, attention …
    validates: bool  # whether ``validate`` renders anything (validation prompts are ignored otherwise)

    @property
    def model(self) -> torch.nn.Module:
        """The module the accelerator prepares with the optimizer (wrapped for DDP under several processes)."""

    @property
    def trained(self) -> torch.nn.Module:
        """A module holding every trained parameter under stable names (checkpoints, EMA)."""

    def param_groups(self) -> list[dict]:
        """Optimizer groups ``[{"params": [...], "lr": float, "name": str}]``."""

    def prepared(self, model: torch.nn.Module, accelerator) -> None:
        """Receive the prepared ``model`` (and prepare any other trained module)."""

    def passes(self, items: list[dict], step: int) -> list[LossPass]:
        """The loss passes of one micro-batch at optimizer step ``step``."""

    def export(self, out_dir: Path, training: dict) -> dict[str, str]:
        """Write what was trained into ``out_dir`` (called on the main process, with the EMA applied if on);
        ``training`` is the run's metadata. Returns ``{output name: path}``."""

    def validate(self, out_dir: Path, step: int, tb) -> list[Path]:
        """Render validation samples into ``out_dir`` (main process only; ``tb`` a SummaryWriter or None)."""
