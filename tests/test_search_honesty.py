"""The search chooses on the validation split only: scrambling the test labels changes the
reported test top-1 of every build but none of the search's choices or predictions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from codesign.data import Split
from codesign.recipe import recipe_from_dict
from codesign.study import open_study, run_study
from codesign.study.search import SearchResult, run_search

from .conftest import digits_recipe_head

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPE = digits_recipe_head("honesty", ["scnn"]) + (
    '[[variants]]\nname = "ptq-w8a8"\nquant = { weight_bits = 8, act_bits = 8 }\n'
    '[search]\ndatapath = "scnn"\nweight_bits = [4, 8]\nact_bits = [8]\nsparsity = ["dense"]\n'
    "sensitivity_samples = 64\nverify = 2\n"
)


def _search(out: Path, scramble_test: bool, **goal: float) -> SearchResult:
    recipe = recipe_from_dict(tomllib.loads(RECIPE))
    study = open_study(recipe, out, progress=False)
    if scramble_test:
        test = study.dataset.test
        wrong = Split(test.images, (test.labels + 1) % study.dataset.num_classes)
        study = dataclasses.replace(study, dataset=dataclasses.replace(study.dataset, test=wrong))
    torch.manual_seed(0)
    return run_search(study, run_study(study), **goal)


def _choices(search: SearchResult) -> list:
    return [
        (v.result.variant, v.chosen, v.predicted_top1, v.result.val_top1, v.choices)
        for v in search.verified
    ]


@pytest.mark.parametrize("goal", [{"accuracy_floor": 97.0}, {"energy_budget_uj": 1e9}])
def test_scrambled_test_labels_change_no_choice(tmp_path: Path, goal: dict) -> None:
    honest = _search(tmp_path / "honest", False, **goal)
    scrambled = _search(tmp_path / "scrambled", True, **goal)
    assert honest.chosen is not None and honest.chosen == scrambled.chosen
    assert _choices(honest) == _choices(scrambled)
    assert honest.front == scrambled.front
    # The scrambled test split was read only to report: every build scores 0 there.
    assert all(v.result.top1 == 0.0 for v in scrambled.verified)
    assert all(v.result.top1 > 90.0 for v in honest.verified)
