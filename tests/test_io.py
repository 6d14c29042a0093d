import json
import pickle
from pathlib import Path

import pytest
import torch

from codesign.config import QuantSpec, SparsitySpec, TrainSpec
from codesign.errors import CheckpointError, ConfigError
from codesign.io import (
    StaleStateWarning,
    atomic_path,
    read_checkpoint,
    read_keyed_state,
    settings_key,
    sweep_temporaries,
    write_json_atomic,
    write_keyed_state,
)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "result.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_sweep_removes_only_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "model.pt"
    with atomic_path(target) as tmp:  # a writer killed here would leave exactly this file
        tmp.write_bytes(b"half")
        left_behind = tmp_path / "left" / tmp.name
        left_behind.parent.mkdir()
        left_behind.write_bytes(tmp.read_bytes())
    (tmp_path / "result.json").write_text("{}")
    (tmp_path / "notes.tmp").write_text("no leading dot: not ours")
    (tmp_path / ".cache.tmp").mkdir()  # a directory is never removed
    assert sweep_temporaries(left_behind.parent) == [left_behind]
    assert sweep_temporaries(tmp_path) == []  # not recursive; nothing of ours left here
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".cache.tmp",
        "left",
        "model.pt",
        "notes.tmp",
        "result.json",
    ]
    assert list((tmp_path / "left").iterdir()) == []


@pytest.mark.parametrize("cls", [QuantSpec, SparsitySpec, TrainSpec])
def test_specs_round_trip_through_json(cls):
    spec = cls()
    assert cls.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_unknown_key_names_path_and_valid_keys():
    with pytest.raises(ConfigError, match=r"quant\.weight_bit: valid keys are .*weight_bits"):
        QuantSpec.from_dict({"weight_bit": 4})


# --- checkpoints: verified before unpickling, one-line errors -------------------------------


def _saved_resnet8(path):
    from codesign.models import create_model
    from codesign.pipeline import save_model

    model = create_model("resnet8", num_classes=10, in_channels=1)
    kwargs = {"num_classes": 10, "in_channels": 1}
    return save_model(path, model, "resnet8", {}, kwargs)


@pytest.fixture
def no_model_built(monkeypatch):
    """Fail the test if load_model gets as far as building a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built from a refused checkpoint")

    monkeypatch.setattr("codesign.pipeline.models.create_model", refuse)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "weights_only" not in message, message
    return message


def test_bit_flip_is_refused_before_unpickling(tmp_path, no_model_built):
    from codesign.pipeline import load_model

    path = _saved_resnet8(tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data: torch alone would load it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as exc_info:
        load_model(path)
    assert _one_line(exc_info) == (
        f"checkpoint {path} is corrupt: its sha256 does not match {path}.sha256; "
        "restore it or rebuild it"
    )


def test_truncation_is_refused(tmp_path, no_model_built):
    from codesign.pipeline import load_model

    path = _saved_resnet8(tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"is corrupt: its sha256 does not match"):
        load_model(path)
    # without its sidecar (as a copied foreign file would be) it is still refused, in one line
    Path(f"{path}.sha256").unlink()
    with pytest.raises(CheckpointError) as exc_info:
        load_model(path)
    assert _one_line(exc_info) == (
        f"cannot read checkpoint {path}: it is truncated or corrupt (a damaged zip archive); "
        "restore it or rebuild it"
    )


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"not a checkpoint\n", "it is not a PyTorch checkpoint (neither a zip archive nor a "),
        (b"", "the file is empty"),
        (b"\x80\x02}q\x00(X", "it is truncated or corrupt, or a pickle that is not a PyTorch"),
    ],
)
def test_non_checkpoint_files_give_one_line(tmp_path, content, reason):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc_info:
        read_checkpoint(path)
    assert _one_line(exc_info).startswith(f"cannot read checkpoint {path}: {reason}")


def test_malformed_sidecar_is_refused(tmp_path):
    path = _saved_resnet8(tmp_path / "m.pt")
    Path(f"{path}.sha256").write_text("garbage\n")
    with pytest.raises(CheckpointError, match=r"m\.pt\.sha256 does not start with a sha256"):
        read_checkpoint(path)


def test_foreign_checkpoint_without_sidecar_loads(tmp_path):
    path = tmp_path / "foreign.th"
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["module.w"], torch.ones(2))


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): code run by merely loading a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zipped", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, zipped, no_model_built):
    from codesign.pipeline import load_model

    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_WritesMarker(tmp_path / "proof")))  # the payload is live
    assert (tmp_path / "proof").exists()
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": torch.ones(2)}, "extra": _WritesMarker(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as exc_info:
        load_model(path)
    assert _one_line(exc_info) == (
        f"checkpoint {path} holds code or Python objects (io.open) that a safe load "
        "refuses, so it was not loaded; convert it with code you trust: load it there and "
        "re-save its state_dict (torch.save(model.state_dict(), path))"
    )
    assert not marker.exists()


# --- keyed resumable state ------------------------------------------------------------------

KEY_A = settings_key({"lr": 0.1})
KEY_B = settings_key({"lr": 0.05})


def test_keyed_state_round_trip_and_stale_key(tmp_path):
    path = tmp_path / "state.pt"
    assert read_keyed_state(path, KEY_A) is None  # nothing there yet
    write_keyed_state(path, {"w": torch.arange(3), "epoch": 2}, KEY_A)
    state = read_keyed_state(path, KEY_A)
    assert torch.equal(state["w"], torch.arange(3)) and state["epoch"] == 2
    with pytest.warns(StaleStateWarning, match=r"written with other settings") as record:
        assert read_keyed_state(path, KEY_B) is None
    assert "\n" not in str(record[0].message)


def test_settings_key_is_canonical():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 1.5})


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[:-7], r"is corrupt \(truncated or modified: its sha256 does not match"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), r"is corrupt \(truncated or modified"),
        (lambda b: b[:10], r"is truncated \(incomplete header\)"),
        (lambda b: b"", r"is truncated \(incomplete header\)"),
        (lambda b: b[:60], r"is corrupt \(damaged header\)"),
        (lambda b: b"PK\x03\x04" + b[4:], r"is not a codesign state file"),
    ],
)
def test_damaged_keyed_state_is_refused(tmp_path, damage, message):
    path = tmp_path / "state.pt"
    write_keyed_state(path, {"w": torch.arange(1000)}, KEY_A)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as exc_info:
        read_keyed_state(path, KEY_A, "training state")
    text = str(exc_info.value)
    assert text.startswith(f"training state {path} ") and text.endswith("delete it to start over")
