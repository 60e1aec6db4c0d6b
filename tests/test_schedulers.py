"""The one sampler factory: every named sampler (and the training DDIM) keeps the exact config it had when
three factories existed (a snapshot taken from them), and names are checked with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from motion_adapters.errors import MotionAdapterError
from motion_adapters.schedulers import SCHEDULERS, canonical_name, make_scheduler, scheduler_config

SNAPSHOT = json.loads((Path(__file__).parent / "scheduler_configs.json").read_text())


def _config(scheduler) -> dict:
    cfg = {k: (sorted(v) if k == "_use_default_values" else v) for k, v in dict(scheduler.config).items()}
    return {"class": type(scheduler).__name__, "config": json.loads(json.dumps(cfg))}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_sampler_keeps_its_config(name):
    assert _config(make_scheduler(name)) == SNAPSHOT[name]


def test_training_sampler_is_the_ddim_it_always_was():
    assert _config(make_scheduler("ddim")) == SNAPSHOT["training"]
    cfg = scheduler_config()
    assert (cfg["beta_schedule"], cfg["beta_start"], cfg["beta_end"]) == ("linear", 0.00085, 0.012)


def test_names_and_aliases():
    assert canonical_name(" Euler A ") == "euler_a" and canonical_name("DPM++ 2M Karras") == "dpmpp_2m_karras"
    with pytest.raises(MotionAdapterError, match="Sampler: expected one of ddim, euler.*found 'heun'"):
        canonical_name("heun", "Sampler")
    with pytest.raises(MotionAdapterError, match="scheduler: expected one of"):
        make_scheduler(None)
