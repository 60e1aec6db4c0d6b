"""Exponential moving average of the trained parameters (exported instead of the raw weights when on).

Why not ``diffusers.training_utils.EMAModel``: it cannot reproduce these numbers, and the shipped embedded
models were trained with this EMA (a rebuild from scratch reproduces them bitwise), so switching would change
the results of every run with ``optim.ema_decay``:

* its first update always uses decay 0 (``get_decay`` returns 0 while ``step <= 0``), i.e. the shadow becomes
  a copy of the weights; ours applies ``min(decay, 1/10)`` there, keeping a tenth of the initial weights.
  From the second update on both use ``(1 + k) / (10 + k)`` for update ``k`` (counted from 0) capped at
  ``decay``; no ``update_after_step`` makes its sequence start at 1/10 (0 gives 0, 2/11, …; −1 gives 2/11,
  3/12, …);
* it updates as ``s − (1 − d)·(s − p)``, ours as ``d·s + (1 − d)·p``: equal in exact arithmetic, not in
  float32 (measured: up to 2.4e-7 apart for the same ``d``, so trajectories drift apart bitwise);
* its ``state_dict`` is Python scalars plus a positional list of tensors; ours is flat named tensors
  (``ema::<parameter name>``, ``ema::__updates__``) stored in the checkpoint's safetensors file beside the
  trained weights and matched by name, so resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class EMA:
    """``shadow = d·shadow + (1 − d)·param`` after each optimizer step, with the usual warm-up
    ``d = min(decay, (1 + step) / (10 + step))`` so early averages do not drag the random init along."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.params = named_params
        self.shadow = {n: p.detach().float().clone() for n, p in named_params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in self.params.items():
            self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"ema::{n}": t.detach().cpu().contiguous() for n, t in self.shadow.items()}
        out["ema::__updates__"] = torch.tensor(self.updates)
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for n in self.shadow:
            self.shadow[n].copy_(tensors[f"ema::{n}"])
        self.updates = int(tensors["ema::__updates__"])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the live parameters (export, validation)."""
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])
