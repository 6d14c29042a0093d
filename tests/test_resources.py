"""Bundled files by name, user files by path; names never reach outside the bundled folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codesign.cli import main
from codesign.errors import ConfigError
from codesign.recipe import load_recipe
from codesign.resources import (
    CHECKPOINTS_PACKAGE,
    RECIPES_PACKAGE,
    bundled_checkpoint,
    bundled_dir,
    bundled_names,
    resolve_checkpoint,
    resolve_named_file,
    resolve_recipe,
)

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_files_are_the_repository_folders_in_a_source_install() -> None:
    # The editable install maps codesign.recipes / codesign.checkpoints onto the top-level
    # folders: what tests and users edit there is what the package reads.
    assert bundled_dir(RECIPES_PACKAGE).resolve() == ROOT / "recipes"
    assert bundled_dir(CHECKPOINTS_PACKAGE).resolve() == ROOT / "checkpoints"


def test_a_missing_data_package_says_to_reinstall() -> None:
    with pytest.raises(ConfigError, match="reinstall codesign"):
        bundled_dir("codesign.no_such_data")


def test_every_kind_lists_its_names() -> None:
    assert {"digits", "resnet20_cifar10"} <= set(bundled_names("recipe"))
    assert {"scnn", "systolic-32x32-ws"} <= set(bundled_names("hardware"))
    assert {"horowitz45", "eyeriss-relative"} <= set(bundled_names("energy"))
    assert bundled_names("checkpoint") == ["resnet8-digits"]


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("digits", "recipe", "recipes/digits.toml"),
        ("digits.toml", "recipe", "recipes/digits.toml"),
        ("scnn", "hardware", "recipes/hardware/scnn.toml"),
        ("horowitz45", "energy", "recipes/energy/horowitz45.toml"),
    ],
)
def test_names_resolve_to_bundled_files(value: str, kind: str, expected: str) -> None:
    assert resolve_named_file(value, kind).resolve() == ROOT / expected


def test_an_existing_path_wins_over_a_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scnn.toml").write_text("# a user's own datapath\n")
    assert resolve_named_file("scnn.toml", "hardware") == Path("scnn.toml")
    assert resolve_recipe(tmp_path / "scnn.toml") == tmp_path / "scnn.toml"


@pytest.mark.parametrize(
    "value", ["../digits", "../../no/such", "/no/such/digits", "hardware/scnn", ".hidden", ""]
)
def test_paths_that_do_not_exist_are_not_looked_up_as_names(value: str) -> None:
    # (An existing file is a user's path, wherever it is: only names are confined.)
    with pytest.raises(ConfigError, match="digits") as info:
        resolve_recipe(value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "stem", ["../recipes/digits", "../checkpoints/resnet8-digits", "/etc/passwd", "a/b", "..", ""]
)
def test_bundled_checkpoints_cannot_escape_their_folder(stem: str) -> None:
    with pytest.raises(ConfigError, match="resnet8-digits") as info:
        resolve_checkpoint(f"bundled:{stem}")
    assert "\n" not in str(info.value)


def test_unknown_names_list_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match=r"systolic-32x32-ws.*tc"):
        resolve_named_file("systolic-99", "hardware")
    with pytest.raises(ConfigError, match="horowitz45"):
        resolve_named_file("horowitz7", "energy")
    with pytest.raises(ConfigError, match="resnet8-digits"):
        resolve_checkpoint("bundled:nope")
    assert bundled_checkpoint("resnet8-digits").with_suffix(".pt.sha256").is_file()


def test_run_takes_a_recipe_name(tmp_path: Path, monkeypatch) -> None:
    import codesign.study

    seen = {}

    def fake_run_recipe(recipe, out, **kwargs):
        seen["recipe"] = recipe
        return {}

    monkeypatch.setattr(codesign.study, "run_recipe", fake_run_recipe)
    assert main(["run", "digits", "--out", str(tmp_path / "o")]) == 0
    assert seen["recipe"] == load_recipe(ROOT / "recipes" / "digits.toml")


@pytest.mark.parametrize("command", ["run", "search"])
def test_unknown_recipe_is_one_line_listing_names(tmp_path: Path, command: str, capsys) -> None:
    goal = ["--accuracy-floor", "90"] if command == "search" else []
    assert main([command, "digitz", "--out", str(tmp_path / "o"), *goal]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "digits" in err and "train_resnet8_digits" in err


def test_demo_on_an_install_without_its_checkpoint_is_one_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    # The demo looks its checkpoint up when it runs, so this is a user error, not a traceback
    # at import; nothing is written.
    monkeypatch.setattr("codesign.resources.CHECKPOINTS_PACKAGE", "codesign.no_such_data")
    assert main(["demo", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reinstall codesign" in err
    assert not (tmp_path / "o").exists()


def test_simulate_takes_datapath_and_energy_names(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--checkpoint", str(bundled_checkpoint("resnet8-digits"))]
    args += ["--arch", "scnn", "--energy", "horowitz45", "--samples", "4", "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "result.json").read_text())["arch"] == "scnn"


def test_simulate_unknown_datapath_lists_names(tmp_path: Path, capsys) -> None:
    args = ["simulate", "--checkpoint", "unused.pt", "--arch", "scnn2", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "systolic-16x16-ws" in err
