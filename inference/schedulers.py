"""Samplers, all built from AnimateDiff's training schedule (linear betas 0.00085–0.012).

Community checkpoints ship SD's image scheduler (``scaled_linear``); using it for AnimateDiff gives the
"washed-out / worse than A1111" results of diffusers #5881, so the base's scheduler is never used.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)

from motion_adapters.base import skeleton_config
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


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def canonical_name(name: str) -> str:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in SCHEDULERS:
        raise MotionAdapterError(f"--scheduler: expected one of {', '.join(SCHEDULERS)}, found {name!r}")
    return key


def make_scheduler(name: str = "ddim"):
    """A fresh scheduler of the given kind on AnimateDiff's beta schedule."""
    key = canonical_name(name)
    cfg = skeleton_config("scheduler")
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
