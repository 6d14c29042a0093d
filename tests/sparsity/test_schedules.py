"""Schedules: the cubic schedule's values at known steps, update steps, state round trip."""

from __future__ import annotations

import pytest

from codesign.errors import SparsityError
from codesign.sparsity.schedules import CubicSchedule, OneShotSchedule


def test_cubic_values_at_known_steps() -> None:
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, t0 = 100, n dt = 200, dt = 50,
    # s_i = 0.1, s_f = 0.9: at t = 150: 0.9 - 0.8 * 0.75^3 = 0.5625;
    # t = 200: 0.9 - 0.8 * 0.125 = 0.8; t = 250: 0.9 - 0.8 / 64 = 0.8875.
    s = CubicSchedule(0.1, 0.9, start_step=100, end_step=300, frequency=50)
    expected = {
        0: 0.1,
        99: 0.1,
        100: 0.1,
        149: 0.1,
        150: 0.5625,
        199: 0.5625,
        200: 0.8,
        250: 0.8875,
        299: 0.8875,
        300: 0.9,
        10_000: 0.9,
    }
    for step, value in expected.items():
        assert s.sparsity_at(step) == pytest.approx(value), step
    assert [t for t in range(0, 400) if s.update_due_at(t)] == [100, 150, 200, 250, 300]


def test_cubic_is_monotone_and_updates_at_end_step_when_frequency_does_not_divide() -> None:
    s = CubicSchedule(0.0, 0.7, start_step=0, end_step=10, frequency=4)
    values = [s.sparsity_at(t) for t in range(12)]
    assert values == sorted(values) and values[-1] == 0.7
    assert [t for t in range(12) if s.update_due_at(t)] == [0, 4, 8, 10]


def test_schedule_steps_like_an_lr_scheduler_and_round_trips_state() -> None:
    s = CubicSchedule(0.0, 0.8, start_step=0, end_step=100, frequency=10)
    for _ in range(50):
        s.step()
    assert s.last_step == 50 and s.sparsity == pytest.approx(0.7) and s.update_due
    other = CubicSchedule(0.0, 0.8, start_step=0, end_step=100, frequency=10)
    other.load_state_dict(s.state_dict())
    assert other.sparsity == s.sparsity


def test_one_shot() -> None:
    s = OneShotSchedule(0.5)
    assert s.update_due and s.sparsity == 0.5
    s.step()
    assert not s.update_due and s.sparsity == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_step": 10, "end_step": 10}, "start_step < end_step"),
        ({"start_step": -1, "end_step": 10}, "start_step < end_step"),
        ({"start_step": 0, "end_step": 10, "frequency": 0}, "frequency"),
    ],
)
def test_cubic_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SparsityError, match=message):
        CubicSchedule(0.0, 0.5, **kwargs)
    with pytest.raises(SparsityError, match="outside"):
        CubicSchedule(0.0, 1.0, start_step=0, end_step=10)
