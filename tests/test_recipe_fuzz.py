"""Fuzzed bad recipes through ``codesign run`` and ``codesign search``: every one ends with exit
status 2 and one stderr line that says what was wrong and what to do, before any variant is
built (or the float model trained), and leaves no result behind.

Each case is a working recipe on the bundled digits model with one thing made bad: an unknown
key, a value of the wrong type or out of range, a layer pattern that matches nothing, an N:M
pattern that does not divide a layer under ``strict``, a model or data that do not fit the
checkpoint, a table that needs another, a ``[search]`` table the search cannot use.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from codesign.config import QuantSpec, SparsitySpec, TrainSpec
from codesign.recipe import DataSpec, HardwareSpec, ModelSpec, Recipe, SearchSpec, VariantSpec

from .fuzzing import check_bad_case, fresh_out, recipe_toml, stop_heavy_work
from .test_cli_fuzz import levels, undividing, unmatched_patterns, words

BASE: dict[str, Any] = {
    "schema_version": 1,
    "name": "fuzz",
    "seed": 0,
    "model": {"checkpoint": "bundled:resnet8-digits"},
    "data": {"source": "digits", "calib_samples": 64, "capture_samples": 8},
    "hardware": {"archs": ["scnn"]},
    "search": {"datapath": "scnn", "sensitivity_samples": 64, "verify": 1},
    "variants": [
        {"name": "fp32"},
        {"name": "w8a8", "quant": {"weight_bits": 8, "act_bits": 8}},
        {"name": "2:4", "sparsity": {"sparsity": "2:4"}, "finetune": {"epochs": 1}},
    ],
}
# Training the float model first: the checks must come before that training too.
TRAINED = {**BASE, "model": {"name": "resnet8"}, "train": {"epochs": 1}}
TABLES = {
    "": Recipe,
    "model": ModelSpec,
    "data": DataSpec,
    "hardware": HardwareSpec,
    "search": SearchSpec,
    "variants.1": VariantSpec,
    "variants.1.quant": QuantSpec,
    "variants.2.sparsity": SparsitySpec,
    "variants.2.finetune": TrainSpec,
}
not_a_count = st.one_of(
    st.integers(max_value=-1),
    st.floats(allow_nan=False).filter(lambda v: v != int(v) if v == v and abs(v) < 1e18 else True),
    words,
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
not_positive = st.one_of(st.just(0), not_a_count)
not_unit = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0.0 < v < 1.0),
    words,
    st.booleans(),
)
not_rate = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not (0 < v < float("inf"))),
    words,
)


def table(recipe: dict[str, Any], path: str) -> dict[str, Any]:
    """The table at a dotted ``path`` ("" is the top; digits index ``variants``)."""
    node: Any = recipe
    for part in filter(None, path.split(".")):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


@st.composite
def bad_recipe(draw, files: dict[str, list[str]]) -> tuple[str, dict[str, Any] | str | bytes]:
    """(command, recipe dict, TOML text or file bytes): a working recipe, one thing made bad."""
    command = draw(st.sampled_from(["run", "search"]))
    recipe = copy.deepcopy(draw(st.sampled_from([BASE, BASE, TRAINED])))
    quant, sparse = recipe["variants"][1]["quant"], recipe["variants"][2]["sparsity"]
    kinds = [
        "unknown-key", "count", "fraction", "source", "seed", "archs", "energy", "checkpoint",
        "model", "bits", "keep-8bit", "overrides", "method", "level", "strict", "ramp", "lr",
        "epochs", "cubic", "needs", "names", "schema", "syntax", "file",
    ]  # fmt: skip
    if command == "search":
        kinds += ["search-datapath", "search-widths", "search-levels", "search-keep"]
    kind = draw(st.sampled_from(kinds))
    note(f"{command}: {kind}")
    if kind == "unknown-key":
        where = draw(st.sampled_from(sorted(TABLES)))
        valid = {f.name for f in dataclasses.fields(TABLES[where])}
        table(recipe, where)[draw(words.filter(lambda w: w not in valid))] = 1
    elif kind == "count":
        field = draw(st.sampled_from(["calib_samples", "capture_samples", "eval_samples"]))
        recipe["data"][field] = draw(not_a_count if field == "eval_samples" else not_positive)
    elif kind == "fraction":
        recipe["data"]["validation_fraction"] = draw(not_unit)
    elif kind == "source":
        bad = files["data"] + ([] if "train" in recipe else files["data-not-digits"])
        recipe["data"]["source"] = draw(st.one_of(st.sampled_from(bad), words))
    elif kind == "seed":
        bad_seed = st.one_of(not_a_count, st.integers(min_value=2**64))
        if draw(st.booleans()):
            recipe["seed"] = draw(bad_seed)
        else:
            recipe["data"]["subset_seed"] = draw(bad_seed)
    elif kind == "archs":
        recipe["hardware"]["archs"] = draw(
            st.one_of(
                st.just([]),
                st.just("scnn"),
                st.lists(st.sampled_from(files["arch"]), min_size=1, max_size=2),
                st.lists(words.filter(lambda w: w.strip() != "scnn"), min_size=1, max_size=2),
            )
        )
    elif kind == "energy":
        recipe["hardware"]["energy"] = draw(st.one_of(st.sampled_from(files["arch"]), words))
    elif kind == "checkpoint":
        recipe["model"]["checkpoint"] = draw(
            st.one_of(
                st.sampled_from(files["checkpoint"] + files["quantized"] + files["pruned"]),
                words.map(lambda w: f"bundled:{w}"),
                st.integers(),
            )
        )
    elif kind == "model":
        if "train" not in recipe:  # another model than the checkpoint holds
            recipe["model"]["name"] = draw(
                st.one_of(st.sampled_from(["resnet20", "resnet18", "resnet50"]), words)
            )
        elif draw(st.booleans()):  # training needs a model name
            del recipe["model"]["name"]
        else:
            recipe["model"]["name"] = draw(words.filter(lambda w: not w.startswith("resnet")))
    elif kind == "bits":
        quant[draw(st.sampled_from(["weight_bits", "act_bits"]))] = draw(
            st.one_of(
                st.integers().filter(lambda b: not 2 <= b <= 8), words, st.floats(), st.booleans()
            )
        )
    elif kind == "keep-8bit":
        quant["keep_8bit"] = [draw(unmatched_patterns)]
    elif kind == "overrides":
        target = draw(st.sampled_from([quant, sparse]))
        pattern, bits = draw(st.one_of(
            st.tuples(unmatched_patterns, st.just(4)),
            st.tuples(st.just("layer*"), st.integers().filter(lambda b: not 2 <= b <= 8)),
        ))  # fmt: skip
        entry = {"pattern": pattern}
        entry.update({"weight_bits": bits} if target is quant else {"sparsity": "dense"})
        if target is sparse and pattern == "layer*":
            entry = {"pattern": pattern, "sparsity": draw(levels)}
        target["overrides"] = [entry]
    elif kind == "method":
        quant["method"] = draw(st.text(alphabet="xyzqk", min_size=1, max_size=6))
    elif kind == "level":
        sparse["sparsity"] = draw(levels)
    elif kind == "strict":
        sparse.update({"sparsity": draw(undividing), "strict": True})
    elif kind == "ramp":
        start = draw(st.floats(0.0, 1.0))
        sparse.update({"sparsity": "0.5", "schedule": "cubic"})
        sparse.update({"prune_start": start, "prune_end": start * 0.5})
    elif kind == "lr":
        recipe["variants"][2]["finetune"]["lr"] = draw(not_rate)
    elif kind == "epochs":
        recipe["variants"][2]["finetune"]["epochs"] = draw(not_a_count)
    elif kind == "cubic":  # one step of fine-tuning leaves no room to ramp the level
        sparse.update({"sparsity": "0.5", "schedule": "cubic"})
        recipe["variants"][2]["finetune"].update({"epochs": 1, "batch_size": 100_000})
    elif kind == "needs":
        recipe["variants"].append(
            draw(
                st.sampled_from(
                    [{"name": "q", "qat": {"epochs": 1}}, {"name": "f", "finetune": {"epochs": 1}}]
                )
            )
        )
    elif kind == "names":
        recipe["variants"][2]["name"] = draw(st.sampled_from(["fp32", "w8a8", " ", ""]))
    elif kind == "schema":
        recipe["schema_version"] = draw(st.one_of(st.integers().filter(lambda v: v != 1), words))
    elif kind == "syntax":
        text = recipe_toml(recipe)
        cut = draw(st.integers(0, len(text)))
        return command, text[:cut] + draw(st.sampled_from(["= =\n", "[[variants\n", '"\n']))
    elif kind == "file":
        return command, draw(st.sampled_from([b"", b"\x00\xff\xfe", b"just some words\n"]))
    elif kind == "search-datapath":
        recipe["search"]["datapath"] = draw(words.filter(lambda w: w != "scnn"))
    elif kind == "search-widths":
        recipe["search"][draw(st.sampled_from(["weight_bits", "act_bits"]))] = draw(
            st.one_of(
                st.just([]),
                st.lists(st.integers().filter(lambda b: b not in (4, 8)), min_size=1, max_size=2),
            )
        )
    elif kind == "search-levels":
        recipe["search"]["sparsity"] = [draw(levels)]
    elif kind == "search-keep":
        recipe["search"]["keep_8bit"] = [draw(unmatched_patterns)]
    return command, recipe


def test_fuzzed_bad_recipes_exit_2_with_one_line_before_any_work(
    bad_inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, root = bad_inputs
    stop_heavy_work(monkeypatch)
    seen: list[str] = []

    @given(case=bad_recipe(files))
    def check(case: tuple[str, dict[str, Any] | str | bytes]) -> None:
        command, recipe = case
        out = fresh_out(root)
        path = out.with_suffix(".toml")
        if isinstance(recipe, dict):
            recipe = recipe_toml(recipe)
        path.write_bytes(recipe if isinstance(recipe, bytes) else recipe.encode())
        note(repr(recipe))
        goal = ["--accuracy-floor", "50"] if command == "search" else []
        argv = [command, str(path), *goal, "--out", str(out), "--quiet"]
        seen.append(check_bad_case(argv, out, capsys))

    check()
    with capsys.disabled():
        print(f"\nfuzzed recipes: {len(seen)} tried, {len(seen)} refused with one line")
    assert len(seen) >= 20
