"""Fuzzed bad command lines: every one ends with exit status 2 and one stderr line that says
what was wrong and what to do, before any work, and leaves no result behind.

Each case is a working command on the bundled digits model with exactly one thing made bad
(a flag's value, a missing or unknown flag, a bad checkpoint, data or hardware file, a bad
``--out``). Hypothesis draws the commands; the profile (tests/conftest.py) fixes how many.
"""

from __future__ import annotations

import fnmatch
import string
from pathlib import Path

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from codesign.cli import demo_checkpoint

from .fuzzing import LAYERS, check_bad_case, fresh_out, stop_heavy_work

# A working command per subcommand: flags as (name, value); value None for a switch.
BASE: dict[str, list[tuple[str, str | None]]] = {
    "eval": [],
    "ptq": [("--weight-bits", "8"), ("--act-bits", "8"), ("--calib-samples", "64")],
    "qat": [("--weight-bits", "4"), ("--act-bits", "4"), ("--epochs", "1")],
    "prune": [("--sparsity", "2:4"), ("--epochs", "1")],
    "simulate": [("--arch", "scnn"), ("--samples", "8")],
    "train": [("--model", "resnet8"), ("--epochs", "1")],
}
CHECKPOINTED = ("eval", "ptq", "qat", "prune", "simulate")
QUANTIZING = ("ptq", "qat")
TRAINING = ("qat", "prune", "train")
REQUIRED = {
    "ptq": ["--checkpoint", "--weight-bits", "--act-bits", "--out"],
    "qat": ["--checkpoint", "--weight-bits", "--act-bits", "--out"],
    "prune": ["--checkpoint", "--sparsity", "--out"],
    "simulate": ["--checkpoint", "--arch", "--out"],
    "eval": ["--checkpoint", "--out"],
    "train": ["--out"],
}


def _not_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _not_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


words = st.text(alphabet=string.ascii_letters + string.digits + "_-./ ", min_size=1, max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)


def bad_int(minimum: int) -> st.SearchStrategy[str]:
    """Text that is not an integer >= ``minimum``."""
    return st.one_of(
        st.integers(max_value=minimum - 1).map(str),
        floats.filter(_not_int),
        words.filter(_not_int),
    )


def bad_float(ok) -> st.SearchStrategy[str]:
    """Text that is not a finite number for which ``ok(value)`` holds."""
    return st.one_of(
        st.sampled_from(["nan", "inf", "-inf"]),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not ok(v)).map(repr),
        words.filter(_not_number),
    )


# Negative, not an integer, or past the 64 bits torch.manual_seed takes.
bad_seeds = st.one_of(bad_int(0), st.integers(min_value=2**64).map(str))
bit_widths = st.one_of(
    st.integers().filter(lambda b: not 2 <= b <= 8).map(str), words.filter(_not_int)
)
# No letters of "dense", no digits, no ":" or ".": never a level, a pattern or "dense".
sparsity_text = st.text(alphabet="xyzqw!#/ _-", min_size=1, max_size=8).filter(str.strip)
levels = st.one_of(
    sparsity_text,
    st.floats().filter(lambda v: not 0.0 <= v < 1.0).map(repr),
    st.tuples(st.integers(-3, 20), st.integers(-3, 20))
    .filter(lambda nm: not 0 < nm[0] < nm[1])
    .map(lambda nm: f"{nm[0]}:{nm[1]}"),
)
# N:M with M not dividing 16 (the input channels of layer1): refused under --strict.
undividing = (
    st.integers(3, 15)
    .filter(lambda m: 16 % m)
    .flatmap(lambda m: st.integers(1, m - 1).map(lambda n: f"{n}:{m}"))
)
unmatched_patterns = st.text(alphabet="abcxyz019._*?", min_size=1, max_size=10).filter(
    lambda p: p not in ("first", "last") and not any(fnmatch.fnmatchcase(n, p) for n in LAYERS)
)


@st.composite
def bad_command(draw, files: dict[str, list[str]], root: Path) -> tuple[list[str], Path | None]:
    """A working command with one thing made bad; returns (argv, the --out path or None)."""
    command = draw(st.sampled_from(sorted(BASE)))
    flags = dict(BASE[command])
    if command in CHECKPOINTED:
        flags["--checkpoint"] = str(demo_checkpoint())
    out = fresh_out(root)
    flags["--out"] = str(out)
    kinds = ["out", "unknown-flag", "missing-flag", "data", "validation", "seed"]
    kinds += ["checkpoint", "model"] if command in CHECKPOINTED else ["train-model"]
    if command in QUANTIZING or command == "prune":
        kinds += ["bits", "keep-8bit", "calib", "method", "budget"]
    if command in QUANTIZING:
        kinds += ["quantized"]
    if command in TRAINING:
        kinds += ["epochs", "lr", "batch"]
    if command == "prune":
        kinds += ["level", "strict", "prune-timing", "distill", "choice", "cubic", "sparsegpt"]
        kinds += ["one-width", "pruned"]
    if command == "simulate":
        kinds += ["arch", "energy", "samples"]
    kind = draw(st.sampled_from(kinds))
    note(f"{command}: {kind}")
    if kind == "out":
        target = draw(st.sampled_from([*files["out"], None]))
        if target is None:
            del flags["--out"]
        else:
            flags["--out"] = target
        out = None
    elif kind == "unknown-flag":
        flags[draw(st.sampled_from(["--bogus", "--weight_bits", "--outdir", "--Quiet"]))] = "1"
    elif kind == "missing-flag":
        del flags[draw(st.sampled_from(REQUIRED[command]))]
        out = None if "--out" not in flags else out
    elif kind == "data":
        bad = files["data"] + (files["data-not-digits"] if command in CHECKPOINTED else [])
        flags["--data"] = draw(st.one_of(st.sampled_from(bad), words))
    elif kind == "validation":
        flags["--validation-fraction"] = draw(
            st.one_of(
                bad_float(lambda v: 0.0 < v < 1.0),
                # fine in itself, but it leaves no digits image to train on
                st.floats(0.9997, 0.99999).map(repr),
            )
        )
    elif kind == "seed":
        flags[draw(st.sampled_from(["--seed", "--subset-seed"]))] = draw(bad_seeds)
    elif kind == "checkpoint":
        flags["--checkpoint"] = draw(st.sampled_from(files["checkpoint"]))
    elif kind == "quantized":
        flags["--checkpoint"] = files["quantized"][0]
    elif kind == "pruned":
        flags["--checkpoint"] = files["pruned"][0]
    elif kind == "model":
        flags["--model"] = draw(
            st.one_of(st.sampled_from(["resnet20", "resnet14", "resnet18", "resnet50"]), words)
        )
    elif kind == "train-model":
        flags["--model"] = draw(words.filter(lambda w: w.strip() not in ("resnet8", "resnet20")))
    elif kind == "bits":
        if command == "prune":
            flags["--act-bits"] = "8"
        flags[draw(st.sampled_from(["--weight-bits", "--act-bits"]))] = draw(bit_widths)
    elif kind == "one-width":
        flags[draw(st.sampled_from(["--weight-bits", "--act-bits"]))] = "4"
    elif kind == "keep-8bit":
        flags.update({"--weight-bits": "4", "--act-bits": "4"})
        flags["--keep-8bit"] = draw(unmatched_patterns)
    elif kind == "calib":
        flags["--calib-samples"] = draw(bad_int(1))
    elif kind == "method":
        flags.update({"--weight-bits": "4", "--act-bits": "4"})
        flags["--method"] = draw(st.text(alphabet="xyzqk", min_size=1, max_size=6))
    elif kind == "budget":
        flags["--calib-budget-s"] = draw(bad_float(lambda v: v > 0))
    elif kind == "epochs":
        flags["--epochs"] = draw(bad_int(0))
    elif kind == "lr":
        flags["--lr"] = draw(bad_float(lambda v: v > 0))
    elif kind == "batch":
        flags["--batch-size"] = draw(bad_int(1))
    elif kind == "level":
        flags["--sparsity"] = draw(levels)
    elif kind == "strict":
        flags.update({"--sparsity": draw(undividing), "--strict": None})
    elif kind == "prune-timing":
        flag = draw(st.sampled_from(["--prune-start", "--prune-end", "--prune-updates", "both"]))
        if flag == "--prune-updates":
            flags[flag] = draw(bad_int(1))
        elif flag == "both":  # each in range, but the ramp ends before it starts
            start = draw(st.floats(0.0, 1.0))
            flags.update({"--prune-start": repr(start), "--prune-end": repr(start * 0.5)})
        else:
            flags[flag] = draw(bad_float(lambda v: 0.0 <= v <= 1.0))
    elif kind == "distill":
        flag = draw(st.sampled_from(["--temperature", "--distill-weight"]))
        flags[flag] = draw(
            bad_float(lambda v: v >= 0 if flag == "--temperature" else 0.0 <= v <= 1.0)
        )
    elif kind == "choice":
        flag = draw(st.sampled_from(["--scope", "--schedule", "--prune-method"]))
        flags[flag] = draw(st.text(alphabet="xyzqk", min_size=1, max_size=6))
    elif kind == "cubic":  # a schedule that prunes during fine-tuning, with none
        flags.update({"--sparsity": "0.5", "--schedule": "cubic", "--epochs": "0"})
    elif kind == "sparsegpt":  # SparseGPT prunes one-shot, layer by layer
        flags["--prune-method"] = "sparsegpt"
        flags.update(draw(st.sampled_from([{"--scope": "global"}, {"--scope": "lamp"}])))
    elif kind == "arch":
        flags["--arch"] = draw(st.one_of(st.sampled_from(files["arch"]), words))
    elif kind == "energy":
        flags["--energy"] = draw(st.one_of(st.sampled_from(files["arch"]), words))
    elif kind == "samples":
        flags["--samples"] = draw(bad_int(1))
    argv = [command, "--quiet"]
    for flag, value in flags.items():
        argv += [flag] if value is None else [f"{flag}={value}"]
    return argv, out


def test_fuzzed_bad_commands_exit_2_with_one_line_before_any_work(
    bad_inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, root = bad_inputs
    stop_heavy_work(monkeypatch)
    seen: list[str] = []

    @given(case=bad_command(files, root))
    def check(case: tuple[list[str], Path | None]) -> None:
        argv, out = case
        seen.append(check_bad_case(argv, out, capsys))

    check()
    with capsys.disabled():
        print(f"\nfuzzed command lines: {len(seen)} tried, {len(seen)} refused with one line")
    assert len(seen) >= 20


def test_every_bad_file_is_refused_with_one_line(
    bad_inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad checkpoint, data set and hardware file once (no sampling): the figure of
    corrupt or unfit files detected before any work."""
    files, root = bad_inputs
    stop_heavy_work(monkeypatch)
    checkpoint = ["--checkpoint", str(demo_checkpoint())]
    cases = [["eval", "--checkpoint", c] for c in files["checkpoint"]]
    cases += [
        ["ptq", "--checkpoint", c, "--weight-bits", "8", "--act-bits", "8"]
        for c in files["quantized"]
    ]
    cases += [["prune", "--checkpoint", c, "--sparsity", "2:4"] for c in files["pruned"]]
    cases += [["eval", *checkpoint, "--data", d] for d in files["data"] + files["data-not-digits"]]
    cases += [["simulate", *checkpoint, "--arch", a] for a in files["arch"]]
    cases += [["simulate", *checkpoint, "--arch", "scnn", "--energy", a] for a in files["arch"]]
    for case in cases:
        out = fresh_out(root)
        check_bad_case([*case, "--quiet", "--out", str(out)], out, capsys)
    with capsys.disabled():
        print(f"\nbad files: {len(cases)} refused with one line before any work")
    assert len(cases) >= 50
