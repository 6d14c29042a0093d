"""Prune and fine-tune: one-shot or Zhu & Gupta's cubic schedule, on ``codesign.train``.

The cubic schedule raises every unstructured level from ``initial_sparsity`` to the spec's
level between ``start_step`` and ``end_step``, re-computing masks every ``frequency`` steps;
the steps after ``end_step`` recover at the final level. N:M layers take their pattern at once
(a group can only hold N or fewer, so there is nothing to ramp).

With only a few thousand training images, distillation from the dense model (``teacher``,
KL on logits at temperature 2-4, see DESIGN.md "Training with little data") keeps the pruned
model from overfitting; ``TrainSpec.distill_temperature`` turns it on.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from codesign.config import SparsitySpec, TrainSpec
from codesign.data import Dataset
from codesign.errors import SparsityError
from codesign.runtime import Runtime
from codesign.sparsity.masks import NMPattern, check_level, parse_pattern
from codesign.sparsity.prune import prune_, update_masks_, weight_masks
from codesign.sparsity.schedules import CubicSchedule, OneShotSchedule, SparsitySchedule
from codesign.train import train


@dataclasses.dataclass(frozen=True)
class CubicTiming:
    """When the cubic schedule prunes, as fractions of the fine-tuning steps.

    Defaults follow Zhu & Gupta's practice of pruning over most of training and leaving
    the rest to recover at the final level: start at 0, end at 60 %, 10 updates per epoch.
    """

    initial_sparsity: float = 0.0
    start_fraction: float = 0.0
    end_fraction: float = 0.6
    updates_per_epoch: int = 10

    def __post_init__(self) -> None:
        check_level(self.initial_sparsity)
        if not 0.0 <= self.start_fraction < self.end_fraction <= 1.0:
            raise SparsityError(
                "cubic timing needs 0 <= start < end <= 1 (fractions of the fine-tuning steps), "
                f"got start={self.start_fraction}, end={self.end_fraction}"
            )
        if self.updates_per_epoch < 1:
            raise SparsityError(
                f"cubic timing needs >= 1 mask update per epoch, got {self.updates_per_epoch}"
            )


def make_schedule(
    spec: SparsitySpec, steps_per_epoch: int, epochs: int, timing: CubicTiming | None = None
) -> SparsitySchedule:
    """The schedule ``spec.schedule`` names, in optimizer steps, for the spec's level.

    N:M specs (no unstructured level to ramp) get a one-shot schedule whatever they name.
    """
    pattern = parse_pattern(spec.sparsity)
    level = 0.0 if pattern is None or isinstance(pattern, NMPattern) else pattern.sparsity
    if spec.schedule == "oneshot" or level == 0.0:
        return OneShotSchedule(level)
    timing = timing or CubicTiming()
    total = steps_per_epoch * epochs
    start = round(timing.start_fraction * total)
    end = round(timing.end_fraction * total)
    if total < 2 or end <= start:
        raise SparsityError(
            f"the cubic schedule needs fine-tuning steps to prune over, but {epochs} epochs of "
            f"{steps_per_epoch} steps with end_fraction={timing.end_fraction} leave none: "
            "give more epochs or use schedule='oneshot'"
        )
    frequency = max(1, steps_per_epoch // max(1, timing.updates_per_epoch))
    return CubicSchedule(
        timing.initial_sparsity, level, start_step=start, end_step=end, frequency=frequency
    )


def finetune_pruned(
    model: nn.Module,
    spec: SparsitySpec,
    dataset: Dataset,
    train_spec: TrainSpec,
    *,
    teacher: nn.Module | None = None,
    timing: CubicTiming | None = None,
    state_path: str | Path | None = None,
    state_key: str | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Prune ``model`` in place with ``spec`` and fine-tune it on ``dataset.train``, where
    ``runtime`` says (see :func:`codesign.train.train`).

    ``model`` may be dense (it is pruned here) or freshly pruned by ``prune_`` with the same
    spec (e.g. to evaluate it one-shot first); under the cubic schedule its unstructured masks
    are then reset to keep everything (the original weights still sit under the mask) and
    raised again on the schedule. ``teacher`` defaults to a frozen copy of the model before
    pruning when ``train_spec.distill_temperature > 0``. ``timing`` places the cubic schedule
    (default: prune over the first 60 % of the steps). Returns ``codesign.train.train``'s dict
    (``train_seconds``, ``epochs``, ``steps``, ``final_loss``) plus ``"schedule"``.
    """
    steps_per_epoch = max(1, math.ceil(len(dataset.train) / train_spec.batch_size))
    schedule = make_schedule(spec, steps_per_epoch, train_spec.epochs, timing)
    if teacher is None and train_spec.distill_temperature > 0:
        if weight_masks(model):
            raise SparsityError(
                "distillation needs the dense model as teacher: pass teacher=..., or give "
                "finetune_pruned the unpruned model"
            )
        teacher = copy.deepcopy(model).eval()
    if teacher is not None:
        teacher.requires_grad_(False)
    final = schedule.final_sparsity
    start_fraction = schedule.sparsity_at(0) / final if final else 1.0
    masks = weight_masks(model)
    if not masks:
        prune_(model, spec, target_fraction=start_fraction)
    elif isinstance(schedule, CubicSchedule):
        for mask in masks.values():
            if not isinstance(mask.pattern, NMPattern):
                mask.mask.fill_(True)
        update_masks_(model, start_fraction)

    def on_step(step: int) -> None:
        # Stateless in ``step``, so a resumed run re-computes exactly the same masks.
        if final and schedule.update_due_at(step):
            update_masks_(model, schedule.sparsity_at(step) / final)

    # The masks a resumed run re-computes follow the spec and the timing: a state written
    # under another schedule belongs to another run, whatever the caller's key says.
    schedule_key = {
        "sparsity": spec.to_dict(),
        "timing": dataclasses.asdict(timing or CubicTiming()),
        "caller": state_key,
    }
    result = train(
        model,
        dataset,
        train_spec,
        teacher=teacher,
        on_step=on_step,
        state_path=state_path,
        state_key=json.dumps(schedule_key, sort_keys=True),
        progress=progress,
        runtime=runtime,
    )
    if final:
        update_masks_(model, 1.0)  # a run shorter than its schedule still ends at the level
    result["schedule"] = type(schedule).__name__
    return result
