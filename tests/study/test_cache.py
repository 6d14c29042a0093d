"""Semantic cache keys: a variant is rebuilt exactly when something its numbers depend on
changes (a step's spec or version, the data, the seed), never for an edit that changes no
number (a comment), and a cached file that does not verify is rebuilt, never trusted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import codesign
import codesign.study.variants as variants
from codesign.cli import main
from codesign.data import Split
from codesign.errors import ResultError
from codesign.pipeline import PTQStep
from codesign.pipeline.results import VariantResult
from codesign.recipe import load_recipe
from codesign.resources import bundled_checkpoint, resolve_named_file
from codesign.study import open_study, variant_key

from ..conftest import digits_recipe_head

VARIANTS = """[[variants]]
name = "fp32"
[[variants]]
name = "ptq-w8a8"
quant = { weight_bits = 8, act_bits = 8, method = "minmax" }
"""


def _recipe(directory: Path, variants_toml: str = VARIANTS) -> Path:
    # Paths rather than bundled names: the run with a copied package must read the same files.
    head = digits_recipe_head("cache-test", [str(resolve_named_file("scnn", "hardware"))])
    head = head.replace("bundled:resnet8-digits", bundled_checkpoint("resnet8-digits").as_posix())
    path = directory / "cache.toml"
    path.write_text(head + variants_toml)
    return path


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every cached variant file: its bytes and modification time (ns)."""
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(out.glob("variants/*/*"))
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, OUT) of a finished run, copied by each test that changes it."""
    directory = tmp_path_factory.mktemp("cache")
    recipe = _recipe(directory)
    assert main(["run", str(recipe), "--out", str(directory / "out"), "--quiet"]) == 0
    return recipe, directory / "out"


def _copy(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    recipe, out = finished
    shutil.copytree(out, tmp_path / "out")
    return recipe, tmp_path / "out"


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    real = variants.build_variant

    def counting(study, variant):
        built.append(variant.name)
        return real(study, variant)

    monkeypatch.setattr(variants, "build_variant", counting)
    return built


def test_a_comment_edit_keeps_every_cached_variant(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    recipe, out = _copy(finished, tmp_path)
    before = _files(out)
    package = Path(codesign.__file__).parent
    copy = tmp_path / "site" / "codesign"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "quant" / "ptq.py").open("a") as f:
        f.write("\n# A comment changes no number.\n")
    script = (
        "import sys, codesign; print(codesign.__file__); "
        "from codesign.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    run = subprocess.run(
        [sys.executable, "-c", script, "run", str(recipe), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: `python -c` puts the working directory first
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == str(copy / "__init__.py")  # the edited copy ran
    assert "warning" not in run.stderr
    assert _files(out) == before  # nothing rebuilt: same bytes, same modification times


def test_a_step_version_or_spec_change_rebuilds_that_variant_only(
    finished: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, out = _copy(finished, tmp_path)
    built = _counting(monkeypatch)
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert built == []
    monkeypatch.setattr(PTQStep, "version", PTQStep.version + 1)
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert built == ["ptq-w8a8"]
    monkeypatch.undo()
    built = _counting(monkeypatch)
    changed = _recipe(tmp_path, VARIANTS.replace('"minmax"', '"percentile"'))
    assert main(["run", str(changed), "--out", str(out), "--quiet"]) == 0
    assert built == ["ptq-w8a8"]
    # Three ptq-w8a8 directories (three keys), one fp32.
    names = sorted(p.name.rsplit("-", 1)[0] for p in out.glob("variants/*"))
    assert names == ["fp32", "ptq-w8a8", "ptq-w8a8", "ptq-w8a8"]


@pytest.mark.parametrize("damage", ["edit", "truncate", "other-key", "unknown-field", "no-vector"])
def test_a_cached_file_that_does_not_verify_is_rebuilt_with_a_warning(
    finished: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    recipe, out = _copy(finished, tmp_path)
    (path,) = out.glob("variants/ptq-w8a8-*/variant.json")
    original = path.read_text()
    data = json.loads(original)
    if damage == "edit":
        path.write_text(original.replace(str(data["top1"]), "100.0", 1))
    elif damage == "truncate":
        path.write_text(original[: len(original) // 2])
    else:
        if damage == "other-key":
            data["key"] = "0" * 64
        elif damage == "no-vector":  # as written before variants kept per-image correctness
            del data["test_correct"]
        else:
            data["extra"] = 1
        # Digest rewritten to match: only the key check or the parse can refuse it.
        text = json.dumps(data, indent=2) + "\n"
        path.write_text(text)
        sidecar = path.with_name("variant.json.sha256")
        sidecar.write_text(f"{hashlib.sha256(text.encode()).hexdigest()}  variant.json\n")
    built = _counting(monkeypatch)
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert built == ["ptq-w8a8"]
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and str(path) in err[0] and "rebuilding" in err[0]
    rebuilt = json.loads(path.read_text())
    assert {k: v for k, v in rebuilt.items() if k != "timing"} == {
        k: v for k, v in json.loads(original).items() if k != "timing"
    }


def test_variant_json_round_trips_through_variant_result(finished: tuple[Path, Path]) -> None:
    _, out = finished
    for path in out.glob("variants/*/variant.json"):
        text = path.read_text()
        result = VariantResult.from_json(json.loads(text))
        assert json.dumps(result.to_json(), indent=2) + "\n" == text
        assert result.on("scnn").energy_uj_per_inference > 0
        assert result.layers[0].name == "conv1"


def test_the_key_follows_the_data_and_the_seed(finished: tuple[Path, Path]) -> None:
    recipe_path, out = finished
    recipe = load_recipe(recipe_path)
    study = open_study(recipe, out, progress=False)
    variant = recipe.variants[1]
    key = variant_key(study, variant)
    assert key == variant_key(open_study(recipe, out, progress=False), variant)  # stable
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.out = out  # type: ignore[misc]
    test = study.dataset.test
    scrambled = Split(test.images, (test.labels + 1) % study.dataset.num_classes)
    other_data = dataclasses.replace(
        study, dataset=dataclasses.replace(study.dataset, test=scrambled)
    )
    assert variant_key(other_data, variant) != key
    other_seed = dataclasses.replace(study, recipe=dataclasses.replace(recipe, seed=1))
    assert variant_key(other_seed, variant) != key
    # The name is not semantic: the same steps under another name share the key.
    renamed = dataclasses.replace(variant, name="renamed")
    assert variant_key(study, renamed) == key


def test_the_same_steps_spelled_otherwise_reuse_the_build_with_the_new_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse = '[[variants]]\nname = "s"\nsparsity = { sparsity = "2:4" }\n'
    out = tmp_path / "out"
    assert main(["run", str(_recipe(tmp_path, sparse)), "--out", str(out), "--quiet"]) == 0
    built = _counting(monkeypatch)
    # A zero-epoch fine-tune adds no step: same key, same numbers, the config as now written.
    respelled = _recipe(tmp_path, sparse + "finetune = { epochs = 0 }\n")
    assert main(["run", str(respelled), "--out", str(out), "--quiet"]) == 0
    assert built == []
    (path,) = out.glob("variants/s-*/variant.json")
    stored = VariantResult.from_json(json.loads(path.read_text()))
    assert stored.config["finetune"]["epochs"] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["variants"][0]["config"] == stored.config


def test_what_auto_ran_is_in_variant_json_and_results_json(tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        '[[variants]]\nname = "auto-w4a8"\nquant = { weight_bits = 4, act_bits = 8 }\n'
        '[[variants]]\nname = "minmax-w8a8"\n'
        'quant = { weight_bits = 8, act_bits = 8, method = "minmax" }\n',
    )
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    stored = {
        json.loads(p.read_text())["variant"]: json.loads(p.read_text())
        for p in out.glob("variants/*/variant.json")
    }
    choice = stored["auto-w4a8"]["method_choice"]
    # auto's rule: weights alone below 8 bits take GPTQ (codesign.quant.ptq.auto_method).
    assert choice == {"chosen": "gptq", "rule": "bit widths"}
    assert "method_choice" not in stored["minmax-w8a8"]  # a named method: nothing was chosen
    assert VariantResult.from_json(stored["auto-w4a8"]).to_json() == stored["auto-w4a8"]
    summary = json.loads((out / "results.json").read_text())["variants"]
    assert [v.get("method_choice") for v in summary] == [choice, None]
    bad = {**stored["auto-w4a8"], "method_choice": {"rule": "bit widths"}}
    with pytest.raises(ResultError, match="method_choice"):
        VariantResult.from_json(bad)
