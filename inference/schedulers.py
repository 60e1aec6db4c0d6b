"""Compatibility path for :mod:`motion_adapters.schedulers` (the one sampler factory, shared with training).

New code imports ``motion_adapters.schedulers``; this module only keeps ``inference.generator``'s import
working until it does too.
"""

from motion_adapters.schedulers import SCHEDULERS, canonical_name, make_scheduler

__all__ = ["SCHEDULERS", "canonical_name", "make_scheduler"]
