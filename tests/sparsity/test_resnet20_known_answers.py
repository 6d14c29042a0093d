"""DESIGN.md's one-shot known answers on the shared ResNet-20 (slow: real data, ~30 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from codesign.config import SparsitySpec
from codesign.sparsity import prune_, sparsity_report

SHARED = Path("/work/shared")
CHECKPOINT = SHARED / "checkpoints/resnet20-cifar10-idelbayev.th"
DATA = SHARED / "data/cifar10-subset"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHECKPOINT.is_file() and DATA.is_dir()), reason="shared ResNet-20/CIFAR subset absent"
    ),
]


@pytest.fixture(scope="module")
def test_split():
    from codesign.data import load_dataset

    return load_dataset(f"imagefolder:{DATA}").test


def _resnet20() -> nn.Module:
    from codesign.models import create_model, extract_state_dict, load_state_into

    model = create_model("resnet20")
    raw = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    load_state_into(model, extract_state_dict(raw), str(CHECKPOINT))
    return model.eval()


def _correct(model: nn.Module, split) -> int:
    from codesign.data import evaluate

    return int(evaluate(model, split)["correct"])


def test_dense_baseline(test_split) -> None:
    assert _correct(_resnet20(), test_split) == 932  # 91.64 % of 1,017


def test_two_four_one_shot(test_split) -> None:
    model = prune_(_resnet20(), SparsitySpec("2:4"))  # conv1 (C=3) and linear excluded
    report = sparsity_report(model)
    nm_layers = [row for row in report["layers"] if row["pattern"] == "2:4"]
    assert len(nm_layers) == 18 and all(row["nm_compliant"] for row in nm_layers)
    assert report["pruned_sparsity"] == 0.5
    assert _correct(model, test_split) == 742  # 72.96 %


@pytest.mark.parametrize(("scope", "level", "correct"), [("layer", 0.5, 910), ("global", 0.7, 738)])
def test_magnitude_one_shot_matches_torch_prune(
    test_split, scope: str, level: float, correct: int
) -> None:
    # DESIGN.md: every conv and the classifier, as torch.nn.utils.prune computes it:
    # layer-wise 50 % -> 89.48 % (910/1017), global 70 % -> 72.57 % (738/1017).
    ours = prune_(_resnet20(), SparsitySpec(str(level), scope=scope, exclude=()))
    reference = _resnet20()
    targets = [(m, "weight") for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if scope == "global":
        torch_prune.global_unstructured(targets, torch_prune.L1Unstructured, amount=level)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=level)
    ours_layers = [m for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for mine, (theirs, _) in zip(ours_layers, targets, strict=True):
        assert torch.equal(mine.weight, theirs.weight)
    assert _correct(ours, test_split) == correct
