"""finetune_pruned on a tiny synthetic data set: schedules reach their level, errors."""

from __future__ import annotations

import copy

import pytest
import torch

import codesign.sparsity.finetune as finetune_module
from codesign.config import SparsitySpec, TrainSpec
from codesign.data import Dataset, Split
from codesign.errors import SparsityError
from codesign.sparsity import prune_, sparsity_report
from codesign.sparsity.finetune import CubicTiming, finetune_pruned, make_schedule
from codesign.sparsity.schedules import CubicSchedule, OneShotSchedule


def _dataset(count: int = 64) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return Dataset(
        "synthetic", Split(images, labels), Split(images[:16], labels[:16]), 10, False, 0
    )


def test_cubic_global_finetune_reaches_the_level_with_distillation(tiny_net) -> None:
    spec = SparsitySpec("0.8", scope="global", schedule="cubic", exclude=())
    levels: list[float] = []
    original_update = finetune_module.update_masks_

    def spy(model, fraction):  # record the levels the schedule asks for
        levels.append(fraction)
        return original_update(model, fraction)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune_module, "update_masks_", spy)
        result = finetune_pruned(
            tiny_net,
            spec,
            _dataset(),
            TrainSpec(epochs=2, batch_size=16, distill_temperature=2.0),
            timing=CubicTiming(end_fraction=0.5, updates_per_epoch=2),
            progress=False,
        )
    assert result["schedule"] == "CubicSchedule" and result["steps"] == 8
    # 4 steps per epoch, updates every 2 steps from 0 to step 4 (the end), then the final call.
    assert levels == pytest.approx([0.0, 0.875, 1.0, 1.0])
    assert sparsity_report(tiny_net)["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_oneshot_nm_finetune_on_an_already_pruned_model(tiny_net) -> None:
    teacher = copy.deepcopy(tiny_net)
    spec = SparsitySpec("1:2", exclude=("conv1",))
    prune_(tiny_net, spec)
    finetune_pruned(
        tiny_net,
        spec,
        _dataset(),
        TrainSpec(epochs=1, batch_size=32, distill_temperature=2.0),
        teacher=teacher,
        progress=False,
    )
    report = sparsity_report(tiny_net)
    assert all(row["nm_compliant"] for row in report["layers"] if row["pattern"] == "1:2")
    with pytest.raises(SparsityError, match="teacher"):
        finetune_pruned(tiny_net, spec, _dataset(), TrainSpec(epochs=1, distill_temperature=2.0))


def test_make_schedule() -> None:
    assert isinstance(make_schedule(SparsitySpec("2:4", schedule="cubic"), 10, 2), OneShotSchedule)
    cubic = make_schedule(SparsitySpec("0.7", schedule="cubic"), 10, 4)
    assert isinstance(cubic, CubicSchedule)
    assert (cubic.start_step, cubic.end_step, cubic.frequency) == (0, 24, 1)
    with pytest.raises(SparsityError, match="more epochs"):
        make_schedule(SparsitySpec("0.7", schedule="cubic"), 1, 1)
