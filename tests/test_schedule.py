"""The learning-rate schedule's arithmetic (the trainers' use of it: test_gpu_path.py)."""

import math

import pytest
import torch

from recbole_bbqrec.config_checks import check_devices
from recbole_bbqrec.errors import ConfigError
from recbole_bbqrec.schedule import (LearningRateSchedule, budget_progress, decay_factor,
                                     steps_progress)


def test_decays_run_from_one_to_the_floor_and_stay_there():
    for kind in ("linear", "cosine"):
        values = [decay_factor(p / 10, kind, 0.1) for p in range(11)]
        assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
        assert all(a > b for a, b in zip(values, values[1:])), (kind, values)
        assert decay_factor(1.7, kind, 0.1) == pytest.approx(0.1)
    assert decay_factor(0.5, "cosine", 0.0) == pytest.approx(0.5)
    assert decay_factor(0.25, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert decay_factor(0.25, "linear", 0.0) == pytest.approx(0.75)
    assert decay_factor(0.9, "none", 0.1) == 1.0


def test_progress_counts_after_the_warmup_and_after_stage_one():
    assert steps_progress(3, 10, 110) == 0.0  # still warming up
    assert steps_progress(60, 10, 110) == pytest.approx(0.5)
    # stage 1 took 20 of a 100 s budget: 60 s on the clock is half of the training time
    assert budget_progress(60.0, 20.0, 100.0) == pytest.approx(0.5)
    assert budget_progress(30.0, 120.0, 100.0) == 1.0  # stage 1 alone spent the budget


def test_schedule_scales_every_group_and_keeps_their_ratio():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-2}])
    schedule = LearningRateSchedule(warmup_steps=4, decay="linear", min_ratio=0.0)
    assert schedule.apply(optimizer, step=1, progress=0.0) == pytest.approx(0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-3])
    schedule.apply(optimizer, step=50, progress=0.75)  # base rates kept, not compounded
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2.5e-4, 2.5e-3])
    assert not LearningRateSchedule().active


def test_a_warmup_without_decay_stops_setting_the_rate_after_its_last_step():
    warmup_only = LearningRateSchedule(warmup_steps=3)
    assert [warmup_only.changes_at(step) for step in range(5)] == [True] * 4 + [False]
    assert LearningRateSchedule(decay="cosine").changes_at(10 ** 6)
    assert not LearningRateSchedule().changes_at(0)


@pytest.mark.parametrize("key, value", [("lr_decay", "step"), ("lr_min_ratio", 1.5),
                                        ("lr_min_ratio", "low")])
def test_bad_schedule_keys_are_refused_with_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        check_devices({key: value})


def test_the_plain_torch_schedule_refuses_what_the_config_check_refuses():
    with pytest.raises(ValueError, match="lr_decay"):
        LearningRateSchedule(decay="step")
    with pytest.raises(ValueError, match="lr_min_ratio"):
        LearningRateSchedule(decay="cosine", min_ratio=-0.1)
