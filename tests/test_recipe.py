"""Recipes: every shipped file loads, round-trips through JSON, and bad keys name their path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codesign.errors import ConfigError
from codesign.recipe import (
    Recipe,
    load_recipe,
    recipe_from_dict,
    resolve_checkpoint,
    resolve_named_file,
    slug,
)
from codesign.resources import RECIPES_PACKAGE, bundled_dir

RECIPES_DIR = bundled_dir(RECIPES_PACKAGE)
RECIPES = sorted(RECIPES_DIR.glob("*.toml"))


def test_recipes_ship() -> None:
    names = {path.stem for path in RECIPES}
    assert {"digits", "resnet20_cifar10"} <= names
    assert any(name.startswith("train_") for name in names)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    again = recipe_from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    for arch in recipe.hardware.archs:
        assert resolve_named_file(arch, "hardware").is_file()


def test_data_override_replaces_the_source() -> None:
    recipe = load_recipe(RECIPES_DIR / "digits.toml", data_override="npz:x.npz")
    assert recipe.data.source == "npz:x.npz"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BASE = """schema_version = 1
[model]
checkpoint = "bundled:resnet8-digits"
"""


def test_unknown_key_names_the_toml_path_and_the_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "[[variants]]\nname='a'\nquant = { weight_bit = 4 }\n")
    with pytest.raises(ConfigError, match=r"r\.toml: variants\[0\]\.quant\.weight_bit:.*act_bits"):
        load_recipe(path)
    path = _write(tmp_path, BASE + "[data]\nsorce = 'digits'\n[[variants]]\nname='a'\n")
    with pytest.raises(ConfigError, match=r"r\.toml: data\.sorce:.*source"):
        load_recipe(path)
    path = _write(tmp_path, BASE + "colour = 1\n[[variants]]\nname='a'\n")
    with pytest.raises(ConfigError, match="colour.*valid keys"):
        load_recipe(path)


def test_schema_version_is_required(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("schema_version = 1", "") + "[[variants]]\nname='a'\n")
    with pytest.raises(ConfigError, match="schema_version"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[[variants]]\nname='a'\n[[variants]]\nname='a'\n", "unique"),
        ("[[variants]]\nname='a'\nqat = { epochs = 1 }\n", r"\[qat\] needs a \[quant\]"),
        (
            "[[variants]]\nname='a'\nquant = { weight_bits = 9 }\n",
            r"quant\.weight_bits: expected an integer from 2 to 8, got 9",
        ),
        (
            "[hardware]\narchs = []\n[[variants]]\nname='a'\n",
            r"hardware\.archs: expected .*\(at least one\), got \[\]",
        ),
        (
            "[search]\nweight_bits = [3]\n[[variants]]\nname='a'\n",
            r"search\.weight_bits\[0\]: expected one of 4, 8, got 3",
        ),
        ("[search]\nprune_method = 'obs'\n[[variants]]\nname='a'\n", "prune_method"),
        (
            "[[variants]]\nname='a'\nsparsity = { sparsity = '0.7', schedule = 'cubic', "
            "method = 'sparsegpt' }\n",
            "one-shot",
        ),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(_write(tmp_path, BASE + body))


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="systolic-32x32-ws"):
        resolve_named_file("systolic-99", "hardware")
    with pytest.raises(ConfigError, match="resnet8-digits"):
        resolve_checkpoint("bundled:nope")


def test_qat_and_finetune_tables_default_to_the_cli_settings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        BASE
        + "[[variants]]\nname='q'\nquant = { weight_bits = 4, act_bits = 4 }\nqat = { epochs = 1 }\n"
        + "[[variants]]\nname='p'\nsparsity = { sparsity = '2:4' }\nfinetune = { epochs = 1 }\n",
    )
    qat, prune = load_recipe(path).variants
    assert qat.qat is not None and qat.qat.epochs == 1 and qat.qat.distill_temperature == 4.0
    assert prune.finetune is not None and prune.finetune.distill_temperature == 4.0


def test_search_qat_table_defaults_to_the_cli_settings_and_round_trips(tmp_path: Path) -> None:
    variant = "[[variants]]\nname = 'fp32'\n"
    path = _write(tmp_path, BASE + variant + "[search]\nqat = { epochs = 2 }\n")
    recipe = load_recipe(path)
    assert recipe.search is not None and recipe.search.finetune is None
    assert recipe.search.qat is not None and recipe.search.qat.epochs == 2
    assert recipe.search.qat.lr == 0.0002 and recipe.search.qat.distill_weight == 0.9
    assert "finetune" not in recipe.to_dict()["search"]
    assert recipe_from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ConfigError, match="search.qat"):
        load_recipe(_write(tmp_path, BASE + variant + "[search]\nqat = { epoch = 2 }\n"))


def test_seeds_round_trip_through_toml_and_json(tmp_path: Path) -> None:
    variants = (
        "[[variants]]\nname = 'ptq'\nquant = { weight_bits = 8, act_bits = 8 }\n"
        "[[variants]]\nname = 'qat'\nquant = { weight_bits = 4, act_bits = 4 }\n"
        "qat = { epochs = 1 }\n"
    )
    recipe = load_recipe(_write(tmp_path, "seeds = [2, 0, 1]\n" + BASE + variants))
    assert recipe.seeds == (2, 0, 1) and recipe.seed == 2 and recipe.all_seeds == (2, 0, 1)
    data = json.loads(json.dumps(recipe.to_dict()))
    assert data["seeds"] == [2, 0, 1] and "seed" not in data  # as a file spells it
    assert recipe_from_dict(data) == recipe
    # The same recipe written by hand from its JSON form reads back equal too.
    toml = f"seeds = {data['seeds']}\n" + BASE + variants
    assert load_recipe(_write(tmp_path, toml)) == recipe
    single = load_recipe(_write(tmp_path, "seed = 3\n" + BASE + variants))
    assert single.seeds is None and single.all_seeds == (3,)
    assert "seeds" not in single.to_dict() and single.to_dict()["seed"] == 3
    assert recipe_from_dict(single.to_dict()) == single


def test_seeds_build_trained_variants_at_each_and_the_rest_once(tmp_path: Path) -> None:
    from codesign.study.seeds import seed_tasks, trains

    body = (
        "seeds = [5, 7]\n"
        + BASE
        + "[[variants]]\nname = 'ptq'\nquant = { weight_bits = 8, act_bits = 8 }\n"
        + "[[variants]]\nname = 'qat'\nquant = { weight_bits = 4, act_bits = 4 }\n"
        + "qat = { epochs = 1 }\n"
        + "[[variants]]\nname = 'qat0'\nquant = { weight_bits = 4, act_bits = 4 }\n"
        + "qat = { epochs = 0 }\n"
        + "[[variants]]\nname = 'ft'\nsparsity = { sparsity = '2:4' }\n"
        + "finetune = { epochs = 2 }\n"
    )
    recipe = load_recipe(_write(tmp_path, body))
    assert [trains(v) for v in recipe.variants] == [False, True, False, True]
    tasks = [(seed, v.name) for seed, v in seed_tasks(recipe, recipe.variants)]
    assert tasks == [(5, "ptq"), (5, "qat"), (5, "qat0"), (5, "ft"), (7, "qat"), (7, "ft")]


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("seed = 0\nseeds = [1, 2]\n", "not both"),
        ("seeds = [1, 1]\n", "distinct; repeated: 1"),
        (
            "seeds = []\n",
            r"seeds: expected an array of integers from 0 to 2\*\*64 - 1 \(at least one\)",
        ),
        ("seeds = [-1]\n", r"seeds\[0\]: expected an integer from 0 to 2\*\*64 - 1, got -1"),
        ("seeds = [true]\n", r"seeds\[0\]: expected an integer from 0 to 2\*\*64 - 1, got true"),
        ("seeds = [1.0]\n", r"seeds\[0\]: expected an integer from 0 to 2\*\*64 - 1, got 1.0"),
        ("seeds = 2\n", "seeds: expected an array"),
    ],
)
def test_bad_seeds_are_clear_errors(tmp_path: Path, top: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(_write(tmp_path, top + BASE + "[[variants]]\nname = 'a'\n"))


def test_slug_is_file_name_safe() -> None:
    assert slug("2:4 + int8") == "2-4-int8"
