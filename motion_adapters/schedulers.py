"""Samplers for training and inference, all on AnimateDiff's training schedule (linear betas 0.00085–0.012).

Community checkpoints ship SD's image scheduler (``scaled_linear``); sampling AnimateDiff with it gives
washed-out clips (diffusers issue #5881), so a base's own scheduler is never used.
"""

from __future__ import annotations

import json
from importlib import resources

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from motion_adapters.errors import MotionAdapterError

SCHEDULERS = {
    "ddim": "DDIM, linear betas, linspace spacing (AnimateDiff's sampler; default)",
    "euler": "Euler",
    "euler_a": "Euler ancestral",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M with Karras sigmas",
    "lcm": "LCM (AnimateLCM / few-step models)",
}
ALIASES = {"euler a": "euler_a", "euler-a": "euler_a", "dpm++ 2m": "dpmpp_2m", "dpm++_2m": "dpmpp_2m",
           "dpm++ 2m karras": "dpmpp_2m_karras"}


def canonical_name(name: object, param: str = "scheduler") -> str:
    """The ``SCHEDULERS`` key of a sampler name or alias (case and surrounding spaces ignored)."""
    if not isinstance(name, str):
        raise MotionAdapterError(f"{param}: expected one of {', '.join(SCHEDULERS)}, found {name!r}")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in SCHEDULERS:
        raise MotionAdapterError(f"{param}: expected one of {', '.join(SCHEDULERS)}, found {name!r}")
    return key


def scheduler_config() -> dict:
    """AnimateDiff's DDIM schedule as a diffusers scheduler config (the shipped ``sd15/scheduler`` file)."""
    asset = resources.files("motion_adapters.assets").joinpath("sd15/scheduler/scheduler_config.json")
    return json.loads(asset.read_text())


def make_scheduler(name: str = "ddim") -> SchedulerMixin:
    """A fresh sampler of the given kind on AnimateDiff's beta schedule; ``ddim`` is the one training uses."""
    key = canonical_name(name)
    cfg = scheduler_config()
    if key == "ddim":
        return DDIMScheduler.from_config(cfg)
    if key == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if key == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    if key in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=key.endswith("karras"))
    return LCMScheduler.from_config(cfg)
