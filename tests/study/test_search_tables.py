"""The search tables' key is semantic (the [search] fields that shape them, the option
steps with their versions and training, TABLES_VERSION, the study's inputs) and a stored table
that does not verify is measured again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import codesign.study.search.tables as tables
from codesign.config import TrainSpec
from codesign.pipeline import PTQStep
from codesign.recipe import SearchSpec, recipe_from_dict
from codesign.study import open_study
from codesign.study.search import options_of, searchable_layers

from ..conftest import digits_recipe_head

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPE = digits_recipe_head("tables", ["scnn"]) + '[[variants]]\nname = "fp32"\n'
SPEC = SearchSpec(
    weight_bits=(8,), act_bits=(8,), sparsity=("dense", "2:4"), sensitivity_samples=64
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    recipe = dataclasses.replace(recipe_from_dict(tomllib.loads(RECIPE)), search=SPEC)
    return open_study(recipe, tmp_path_factory.mktemp("tables"), progress=False)


def _key(study, spec: SearchSpec = SPEC) -> str:
    layers = searchable_layers(study.float_model, spec)
    return tables.tables_key(study, spec, options_of(spec), layers)


def test_the_key_changes_with_what_shapes_the_tables_only(
    study, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key(study)
    assert _key(study, dataclasses.replace(SPEC, verify=9)) == key  # how many are verified
    # How configurations are trained shapes the tables: the uniform models train the same way.
    assert _key(study, dataclasses.replace(SPEC, qat=TrainSpec(epochs=1))) != key
    assert _key(study, dataclasses.replace(SPEC, finetune=TrainSpec(epochs=1))) != key
    assert _key(study, dataclasses.replace(SPEC, sensitivity_samples=32)) != key
    monkeypatch.setattr(tables, "TABLES_VERSION", tables.TABLES_VERSION + 1)
    assert _key(study) != key
    monkeypatch.undo()
    monkeypatch.setattr(PTQStep, "version", PTQStep.version + 1)
    assert _key(study) != key


def test_stored_tables_are_reused_and_a_damaged_file_is_measured_again(
    study, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    measured: list[int] = []
    real = tables.measure_tables

    def counting(*args, **kwargs):
        measured.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tables, "measure_tables", counting)
    options = options_of(SPEC)
    layers = searchable_layers(study.float_model, SPEC)
    first = tables.cached_tables(study, SPEC, options, layers, force=False)
    again = tables.cached_tables(study, SPEC, options, layers, force=False)
    assert len(measured) == 1
    assert first.to_json() == again.to_json()
    assert first.layer_energy_uj_per_inference.shape == (len(layers), len(options))
    (path,) = Path(study.out, "search").glob("tables-*.json")
    path.write_text(path.read_text().replace("]", "", 1))
    capsys.readouterr()
    remeasured = tables.cached_tables(study, SPEC, options, layers, force=False)
    assert len(measured) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "measuring again" in err
    assert remeasured.to_json() == first.to_json()


def test_predictions_charge_one_image_of_the_images_the_drops_were_measured_on() -> None:
    """Asked for 1,024 sensitivity images on a 500-image validation split, a drop measured
    as none is charged one of those 500 images (0.2 points), not 100 / 1,024."""
    import numpy as np

    from codesign.data.subsets import SubsetInfo

    drops = np.array([[0.0, 0.0, 1.0], [0.0, 0.6, 0.0]])  # [layers, options]
    measured = tables.SearchTables(
        key="k",
        reference_top1=99.0,
        sensitivity_subset=SubsetInfo(500, (250, 250), "d"),
        layer_energy_uj_per_inference=np.ones_like(drops),
        fixed_energy_uj_per_inference=0.0,
        drops=drops,
        top1_drops=drops,
        # Uniform models' drops: 1.6 points for option 1, 0.6 for option 2.
        uniform_val_top1=(99.0, 97.4, 98.4),
    )
    charged = np.array([[0.0, 0.2, 1.0], [0.0, 0.6, 0.2]])
    expected = charged * np.array([1.0, 1.6 / 0.8, 0.6 / 1.2])
    np.testing.assert_allclose(measured.predicted_drops(), expected)
    np.testing.assert_allclose(measured.predicted_drops().sum(axis=0), [0.0, 1.6, 0.6])
