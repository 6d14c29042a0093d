"""What the fuzz tests share: bad input files, stand-ins for the heavy work, and the check
every bad case must pass (exit status 2, one stderr line that says what to do, no result).

Each case runs in-process through ``codesign.cli.main``. The functions that do a command's
work (building a variant, training, evaluating, capturing) are replaced by stand-ins that
raise :class:`HeavyWorkStarted`: a bad input must be refused before any of them starts, so
every case costs milliseconds and an input that slips through validation fails the test
instead of running a build.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codesign.cli import demo_checkpoint, main

# Layers of the bundled digits ResNet-8 (conv1 takes 1 channel; the rest 16, 32 or 64).
LAYERS = (
    "conv1",
    "layer1.0.conv1",
    "layer1.0.conv2",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer3.0.conv1",
    "layer3.0.conv2",
    "linear",
)
# An error line names what to do: one of these words (or argparse's "see --help").
ADVICE = re.compile(
    r"\b(give|use|pass|write|check|delete|restore|rebuild|lower|raise|remove|replace|see|"
    r"reinstall|clean|put|resize|exclude|add|convert|save|fix|free|start|relax|list|"
    r"load|need|needs|must|expected|valid|should|choose|point|supports?|keep|mean)\b",
    re.IGNORECASE,
)


class HeavyWorkStarted(AssertionError):
    """A bad case reached a command's work (``main`` catches no AssertionError)."""


def stop_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace every function that starts a command's real work by a stand-in that raises."""
    import codesign.data
    import codesign.hw
    import codesign.pipeline
    import codesign.study.fanout
    import codesign.train

    def stand_in(name: str):
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise HeavyWorkStarted(f"{name} started: the input was not refused before work")

        return refuse

    for module, name in (
        (codesign.pipeline, "build"),
        (codesign.study.fanout, "attempt_variant"),
        (codesign.train, "train"),
        (codesign.data, "evaluate"),
        (codesign.hw, "capture"),
    ):
        monkeypatch.setattr(module, name, stand_in(f"{module.__name__}.{name}"))


_counter = itertools.count()
# Warning categories Python's default filters do not print for library code.
_SILENT_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def check_bad_case(argv: list[str], out: Path | None, capsys: pytest.CaptureFixture) -> str:
    """Run ``argv``; assert exit 2, exactly one stderr line ``codesign: error: ...`` with
    advice, no traceback, and nothing written under ``out``. Returns the line."""
    capsys.readouterr()
    # Python prints warnings to stderr: under the real command line each would be a line.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("default")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses a flag by exiting
            code = exc.code
    captured = capsys.readouterr()
    shown_warnings = [
        str(w.message) for w in warned if not issubclass(w.category, _SILENT_BY_DEFAULT)
    ]
    lines = captured.err.splitlines() + shown_warnings
    shown = f"argv={argv!r}\nstderr={captured.err!r}\nwarnings={shown_warnings!r}"
    assert code == 2, shown
    assert len(lines) == 1, shown
    assert lines[0].startswith("codesign: error: ") and "Traceback" not in captured.err, shown
    assert ADVICE.search(lines[0]), f"no advice in the error line: {shown}"
    if out is not None and out.is_dir():
        written = [p for p in out.rglob("*") if p.is_file()]
        assert not written, f"{shown}\nleft behind: {written}"
    return lines[0]


def fresh_out(root: Path) -> Path:
    """A new, not yet existing output path under ``root``."""
    return root / f"out{next(_counter)}"


def _images(root: Path, mode: str, sizes: list[tuple[int, int]], per_class: int = 4) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for c, cls in enumerate(("a", "b")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                size = sizes[(i + c) % len(sizes)]
                Image.new(mode, size, color=40 * i).save(folder / f"{i}.png")


def _npz(path: Path, **changes: Any) -> str:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((20, 1, 8, 8), dtype=np.float32),
        "y_train": np.arange(20) % 10,
        "x_test": rng.random((10, 1, 8, 8), dtype=np.float32),
        "y_test": np.arange(10),
    }
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return f"npz:{path}"


def make_bad_inputs(root: Path) -> dict[str, list[str]]:
    """Bad checkpoints, data specs, hardware files and output paths, by kind."""
    from codesign.config import QuantSpec, SparsitySpec
    from codesign.io import read_checkpoint, save_checkpoint
    from codesign.models import create_model
    from codesign.pipeline import load_model, model_kwargs_for, save_model
    from codesign.quant import quantize_
    from codesign.sparsity import prune_

    good = demo_checkpoint()
    data = good.read_bytes()
    files: dict[str, list[str]] = {"checkpoint": [], "data": [], "arch": [], "out": []}

    flipped = root / "flipped.pt"
    flipped.write_bytes(
        data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :]
    )
    shutil.copy(f"{good}.sha256", f"{flipped}.sha256")
    (root / "truncated.pt").write_bytes(data[: len(data) // 3])
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "bad-sidecar.pt").write_bytes(data)
    (root / "bad-sidecar.pt.sha256").write_text("zz\n")
    (root / "folder.pt").mkdir()
    # A pickle that would run code when unpickled: a safe load must refuse it.
    (root / "code.pt").write_bytes(
        b"\x80\x04cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    )
    # Checkpoints that load, but not for digits or not for the step asked.
    save_checkpoint(root / "rgb.pt", create_model("resnet20").state_dict(), model_name="resnet20")
    save_checkpoint(
        root / "many-classes.pt",
        create_model("resnet8", in_channels=1, num_classes=4).state_dict(),
        model_name="resnet8",
        extra={"model_kwargs": {"in_channels": 1, "num_classes": 4}},
    )
    # Codesign checkpoints whose header or tensors were damaged or made by hand.
    raw = read_checkpoint(good)
    state = dict(raw["state_dict"])
    state["conv1.weight"] = state["conv1.weight"].clone()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    crafted = {
        "recipe-not-json": {**raw, "recipe_json": "{not json"},
        "recipe-a-list": {**raw, "recipe_json": "[1, 2]"},
        "no-state-dict": {k: v for k, v in raw.items() if k != "state_dict"},
        "model-a-number": {**raw, "model": 5},
        "negative-classes": {**raw, "extra_json": '{"model_kwargs": {"num_classes": -1}}'},
        "recipe-bits-99": {**raw, "recipe_json": '{"quant": {"weight_bits": 99}}'},
        "nan-weight": {**raw, "state_dict": state},
        "a-tensor": torch.zeros(3),
        "no-tensors": {"a": "b"},
    }
    for stem, obj in crafted.items():
        torch.save(obj, root / f"{stem}.pt")
        files["checkpoint"].append(str(root / f"{stem}.pt"))
    model, name, _ = load_model(good)
    quantize_(model, QuantSpec(weight_bits=8, act_bits=8))
    save_model(
        root / "quantized.pt",
        model,
        name,
        {"quant": QuantSpec().to_dict()},
        model_kwargs_for(model),
    )
    model, name, _ = load_model(good)
    spec = SparsitySpec(sparsity="2:4")
    prune_(model, spec)
    save_model(
        root / "pruned.pt", model, name, {"sparsity": spec.to_dict()}, model_kwargs_for(model)
    )
    for stem in (
        "flipped",
        "truncated",
        "empty",
        "text",
        "bad-sidecar",
        "folder",
        "code",
        "rgb",
        "many-classes",
    ):
        files["checkpoint"].append(str(root / f"{stem}.pt"))
    files["checkpoint"].append(str(root / "missing.pt"))
    files["quantized"] = [str(root / "quantized.pt")]
    files["pruned"] = [str(root / "pruned.pt")]

    # Image folders: missing, empty, no test split, corrupt images, mixed sizes, grey images
    # (decoded as RGB: 3 channels for a 1-channel model), classes that differ between splits.
    (root / "empty-folder" / "train").mkdir(parents=True)
    (root / "empty-folder" / "test").mkdir()
    _images(root / "no-test", "L", [(8, 8)])
    shutil.rmtree(root / "no-test" / "test")
    _images(root / "corrupt", "L", [(8, 8)])
    (root / "corrupt" / "train" / "a" / "1.png").write_bytes(b"\x89PNG garbage")
    _images(root / "mixed-sizes", "RGB", [(8, 8), (9, 7)])
    _images(root / "grey", "L", [(8, 8)])
    _images(root / "tiny-grey", "L", [(1, 1)])
    _images(root / "other-classes", "L", [(8, 8)])
    (root / "other-classes" / "test" / "b").rename(root / "other-classes" / "test" / "c")
    for name in (
        "missing-folder",
        "empty-folder",
        "no-test",
        "corrupt",
        "mixed-sizes",
        "other-classes",
    ):
        files["data"].append(f"imagefolder:{root / name}")
    # Good data, but not for the 1-channel, 10-class digits model.
    files["data-not-digits"] = [f"imagefolder:{root / n}" for n in ("grey", "tiny-grey")]
    x = np.zeros((20, 1, 8, 8), np.float32)
    nan_x, inf_x = x.copy(), x.copy()
    nan_x[3, 0, 2, 2] = np.nan
    inf_x[5, 0, 1, 1] = -np.inf
    files["data"] += [
        _npz(root / "nan.npz", x_train=nan_x),
        _npz(root / "inf.npz", x_test=inf_x[:10]),
        _npz(root / "negative-labels.npz", y_train=-(np.arange(20) % 3)),
        _npz(root / "float-labels.npz", y_test=np.arange(10) + 0.5),
        _npz(root / "short-labels.npz", y_train=np.arange(5)),
        _npz(root / "flat.npz", x_train=x.reshape(20, -1)),
        _npz(root / "objects.npz", x_test=np.array([None] * 10, dtype=object)),
        _npz(root / "strings.npz", x_train=np.array(["a"] * 20)),
        _npz(root / "no-y-test.npz", y_test=None),
        _npz(root / "empty-train.npz", x_train=x[:0], y_train=np.arange(0)),
        _npz(root / "empty-test.npz", x_test=x[:0], y_test=np.arange(0)),
    ]
    files["data-not-digits"] += [
        _npz(
            root / "two-channels.npz",
            x_train=np.zeros((20, 2, 8, 8)),
            x_test=np.zeros((10, 2, 8, 8)),
        ),
        _npz(
            root / "rgb.npz",
            x_train=np.zeros((20, 8, 8, 3), np.uint8),
            x_test=np.zeros((10, 8, 8, 3), np.uint8),
        ),
        _npz(root / "eleven-classes.npz", y_train=np.arange(20) % 11),
    ]
    (root / "not-a-zip.npz").write_bytes(b"this is not an npz archive")
    zipped = (root / "nan.npz").read_bytes()
    (root / "truncated.npz").write_bytes(zipped[: len(zipped) // 2])
    files["data"] += [
        f"npz:{root / 'not-a-zip.npz'}",
        f"npz:{root / 'truncated.npz'}",
        f"npz:{root / 'missing.npz'}",
        f"npz:{root}",
        f"cifar10:{root / 'no-cifar-here'}",
    ]

    hardware = root / "hardware.toml"
    text = (Path(__file__).resolve().parents[1] / "recipes" / "hardware" / "scnn.toml").read_text()
    hardware.write_text(text + "\nbogus_key = 1\n")
    (root / "hardware-syntax.toml").write_text(text.replace("pe_rows = 8", "pe_rows = = 8"))
    (root / "hardware-range.toml").write_text(text.replace("pe_rows = 8", "pe_rows = -8"))
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    files["arch"] = [
        str(hardware),
        str(root / "hardware-syntax.toml"),
        str(root / "hardware-range.toml"),
        str(root / "binary.toml"),
        str(root / "missing.toml"),
        str(root),
    ]

    taken = root / "a-file"
    taken.write_text("a file, not a directory\n")
    files["out"] = [str(taken), str(taken / "below"), str(root / "nul\0out"), "/proc/codesign-out"]
    if os.geteuid() != 0:  # root writes through any mode bits: only a real user is refused
        locked = root / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        files["out"] += [str(locked), str(locked / "below")]
    return files


def recipe_toml(recipe: dict[str, Any]) -> str:
    """TOML text of a recipe dict: top-level values, then tables, then ``[[variants]]``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(i) for i in v) + "]"
        return "{ " + ", ".join(f"{json.dumps(k)} = {value(i)}" for k, i in v.items()) + " }"

    def pairs(table: dict[str, Any]) -> list[str]:
        return [f"{json.dumps(k)} = {value(v)}" for k, v in table.items()]

    head: list[str] = []
    tables: list[str] = []
    for key, item in recipe.items():
        if isinstance(item, dict):
            tables += [f"[{json.dumps(key)}]", *pairs(item)]
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            for entry in item:
                tables += [f"[[{json.dumps(key)}]]", *pairs(entry)]
        else:
            head.append(f"{json.dumps(key)} = {value(item)}")
    return "\n".join(head + tables) + "\n"


__all__ = [
    "ADVICE",
    "LAYERS",
    "HeavyWorkStarted",
    "check_bad_case",
    "fresh_out",
    "make_bad_inputs",
    "recipe_toml",
    "stop_heavy_work",
]
