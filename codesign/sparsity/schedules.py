"""Sparsity schedules, shaped like learning-rate schedulers: ``step()``, ``state_dict()``.

A schedule only says which sparsity level holds at the current step and whether masks are due
for re-computation; ``prune.update_masks_`` does the re-computation. Keeping them apart lets a
schedule be tested with plain numbers.

Usage inside a training loop (one ``step()`` per optimizer step)::

    schedule = CubicSchedule(0.0, 0.7, start_step=0, end_step=400, frequency=20)
    for batch in loader:
        if schedule.update_due:
            update_masks_(model, schedule.sparsity / schedule.final_sparsity)
        ...  # forward, backward, optimizer.step()
        schedule.step()
"""

from __future__ import annotations

from typing import Any

from codesign.errors import SparsityError
from codesign.sparsity.masks import check_level


class SparsitySchedule:
    """Base: a step counter and a sparsity level per step."""

    def __init__(self, final_sparsity: float) -> None:
        check_level(final_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.last_step = 0

    def sparsity_at(self, step: int) -> float:
        raise NotImplementedError

    def update_due_at(self, step: int) -> bool:
        raise NotImplementedError

    @property
    def sparsity(self) -> float:
        """The level that holds at the current step."""
        return self.sparsity_at(self.last_step)

    @property
    def update_due(self) -> bool:
        """Whether masks should be re-computed before the current step's forward pass."""
        return self.update_due_at(self.last_step)

    def step(self) -> None:
        self.last_step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])


class OneShotSchedule(SparsitySchedule):
    """The final level from step 0 on; masks are computed once, at ``at_step``.

    >>> s = OneShotSchedule(0.5)
    >>> s.sparsity, s.update_due
    (0.5, True)
    """

    def __init__(self, final_sparsity: float, at_step: int = 0) -> None:
        super().__init__(final_sparsity)
        self.at_step = at_step

    def sparsity_at(self, step: int) -> float:
        return self.final_sparsity

    def update_due_at(self, step: int) -> bool:
        return step == self.at_step


class CubicSchedule(SparsitySchedule):
    """Gradual pruning of Zhu & Gupta 2017 ("To prune, or not to prune", eq. 1).

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3 for t in {t0, t0 + dt, ..., t0 + n*dt}:
    fast pruning early, when redundant weights abound, slower as few remain. Here
    t0 = ``start_step``, t0 + n*dt = ``end_step``, dt = ``frequency``. Between updates the level
    of the last update holds; before t0 it is s_i, after ``end_step`` s_f. Masks are due at every
    update step, including ``end_step`` even when dt does not divide the span.

    >>> s = CubicSchedule(0.0, 0.8, start_step=0, end_step=100, frequency=10)
    >>> [round(s.sparsity_at(t), 4) for t in (0, 9, 10, 50, 100, 150)]
    [0.0, 0.0, 0.2168, 0.7, 0.8, 0.8]
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        *,
        start_step: int,
        end_step: int,
        frequency: int = 1,
    ) -> None:
        super().__init__(final_sparsity)
        check_level(initial_sparsity)
        if start_step < 0 or end_step <= start_step:
            raise SparsityError(
                f"cubic schedule needs 0 <= start_step < end_step, got start_step={start_step}, "
                f"end_step={end_step} (train for more steps or start earlier)"
            )
        if frequency < 1:
            raise SparsityError(f"cubic schedule frequency must be >= 1 step, got {frequency}")
        self.initial_sparsity = float(initial_sparsity)
        self.start_step = start_step
        self.end_step = end_step
        self.frequency = frequency

    def sparsity_at(self, step: int) -> float:
        if step < self.start_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        last_update = step - (step - self.start_step) % self.frequency
        progress = (last_update - self.start_step) / (self.end_step - self.start_step)
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_f + (s_i - s_f) * (1.0 - progress) ** 3

    def update_due_at(self, step: int) -> bool:
        if not self.start_step <= step <= self.end_step:
            return False
        return (step - self.start_step) % self.frequency == 0 or step == self.end_step
