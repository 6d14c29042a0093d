"""Atomic file writes, checkpoints that carry their recipe, and keyed resumable state.

Every file is written to a temporary sibling and renamed into place, so a killed process
never leaves a half-written result behind. Checkpoints are read with ``weights_only=True``:
a checkpoint is untrusted input and unpickling code from it is refused. A checkpoint with a
``<file>.sha256`` beside it is verified against it before anything is unpickled.

Resumable state (:func:`write_keyed_state`, :func:`read_keyed_state`) carries, in a short
text header, the key of the settings that made it and the sha256 of its body: a state made
with other settings is ignored, a damaged one refused, and neither is ever half-loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from codesign.errors import CheckpointError, ResultError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results should read like any file
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


TEMPORARY_GLOB = ".*.tmp"  # what atomic_path names its temporaries (a dot, the name, .tmp)


def sweep_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that writers killed mid-write (SIGKILL, a lost node) left in
    ``directory`` (not below it); returns what was removed.

    Call it only while holding the lock that every writer into ``directory`` holds: then no
    live writer owns a temporary there, and each one is litter. Nothing else is touched.
    """
    removed = []
    for path in Path(directory).glob(TEMPORARY_GLOB):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def digest_path(path: str | os.PathLike[str]) -> Path:
    """Where the sha256 of ``path`` is kept: ``<path>.sha256``, as for checkpoints."""
    return Path(f"{path}.sha256")


def write_json_verified(path: str | os.PathLike[str], obj: Any) -> Any:
    """Write ``obj`` as JSON atomically with its sha256 beside it (see
    :func:`read_json_verified`); returns the object as read back from the text written, so
    a fresh result and a cached one are the same values."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    target = write_text_atomic(path, text)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    write_text_atomic(digest_path(target), f"{sha}  {target.name}\n")
    return json.loads(text)


def read_json_verified(path: str | os.PathLike[str]) -> Any:
    """The JSON at ``path`` if it matches the sha256 written beside it; a :class:`ResultError`
    saying why not otherwise (missing, edited by hand, truncated, not JSON)."""
    source, sidecar = Path(path), digest_path(path)
    if not source.is_file() or not sidecar.is_file():
        raise ResultError(f"{source.name} or {sidecar.name} is missing")
    data = source.read_bytes()
    stored = sidecar.read_text().split()
    if not stored or stored[0] != hashlib.sha256(data).hexdigest():
        raise ResultError(f"its contents do not match {sidecar.name} (edited or truncated)")
    try:
        return json.loads(data)
    except ValueError:
        raise ResultError("it is not valid JSON") from None


def check_json_keys(
    data: Any, required: tuple[str, ...], what: str, optional: tuple[str, ...] = ()
) -> None:
    """``data`` must be a JSON object with every ``required`` key and no key outside
    ``required`` + ``optional``: anything else was written by other code (or edited by hand),
    and its numbers are not to be trusted. Raises :class:`ResultError`."""
    if not isinstance(data, dict):
        raise ResultError(f"{what}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    unknown = [k for k in data if k not in required and k not in optional]
    if missing or unknown:
        raise ResultError(f"{what}: missing keys {missing}, unknown keys {unknown}")


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection, OWASP).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """``value`` for a CSV cell: text that a spreadsheet would run as a formula gets a leading
    apostrophe (shown, never run); numbers pass unchanged.

    >>> csv_safe("=1+2"), csv_safe("-3"), csv_safe(-3.0), csv_safe("conv1")
    ("'=1+2", "'-3", -3.0, 'conv1')
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class FlatJson:
    """``to_json`` / ``from_json`` for a frozen dataclass of plain JSON fields: every field is
    one key, all of them required (``json_name`` names the record in errors)."""

    json_name: ClassVar[str] = "record"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: Any) -> Any:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        check_json_keys(data, names, cls.json_name)
        return cls(**data)


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    *,
    model_name: str,
    recipe: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``{"model", "recipe", "state_dict", "extra"}`` atomically, and ``<path>.sha256``.

    ``recipe`` is the JSON-able description of the transformations (pruning, quantization)
    that :func:`codesign.models.load_checkpoint_into` re-applies before loading the weights.
    """
    payload = {
        "format": "codesign-checkpoint-v1",
        "model": model_name,
        "recipe_json": json.dumps(recipe or {}),
        "extra_json": json.dumps(extra or {}),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    target = write_bytes_atomic(path, data)
    digest = hashlib.sha256(data).hexdigest()
    write_text_atomic(f"{target}.sha256", f"{digest}  {target.name}\n")
    return target


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read any checkpoint file safely; return the raw object (dict) it holds.

    A ``<path>.sha256`` beside the file (what :func:`save_checkpoint` writes) is checked
    before unpickling; a foreign checkpoint without one loads unverified. Raises
    CheckpointError for a missing file, a digest mismatch, a file that is not a torch
    checkpoint (truncated, text, another format), or one that needs code to unpickle.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(
            f"checkpoint not found: {source} (give the path of an existing .th/.pt file)"
        )
    # The bytes that are verified are the bytes that are unpickled: reading the file twice
    # would let it change in between.
    data = source.read_bytes()
    _verify_sidecar(source, data)
    obj = _safe_load(data, f"checkpoint {source}", "restore it or rebuild it")
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(obj).__name__}, not a dict of tensors "
            "(save the model's state_dict, not the module)"
        )
    try:
        checkpoint_meta(obj)  # a codesign header is checked whole before anything uses it
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {source} is {exc}") from None
    return obj


def _verify_sidecar(source: Path, data: bytes) -> None:
    sidecar = source.with_name(f"{source.name}.sha256")
    if not sidecar.is_file():
        return
    fields = sidecar.read_text(encoding="utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise CheckpointError(
            f"cannot verify checkpoint {source}: {sidecar} does not start with a sha256 "
            "digest; restore both files or rebuild them"
        )
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint {source} is corrupt: its sha256 does not match {sidecar}; "
            "restore it or rebuild it"
        )


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_PROTO = 0x80  # first byte of a protocol >= 2 pickle (torch's legacy format)


def _safe_load(data: bytes, what: str, remedy: str) -> Any:
    """``torch.load(weights_only=True)`` of ``data`` with one-line errors that say what the
    file is and what to do; ``what`` names it ("checkpoint x.pt"), ``remedy`` ends damage
    messages."""
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol draws a multi-line warning before the refusal: the
            # error below is the one line a user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's own message advises weights_only=False, i.e. running the file's code:
        # never repeat that. Name what was refused and how to convert it safely instead.
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused is not None:
            raise CheckpointError(
                f"{what} holds code or Python objects ({refused.group(1)}) that a safe load "
                "refuses, so it was not loaded; convert it with code you trust: load it "
                "there and re-save its state_dict (torch.save(model.state_dict(), path))"
            ) from None
        reason = _damage(data)
    except Exception:  # torch raises RuntimeError, EOFError, OSError, KeyError, ... on damage
        reason = _damage(data)
    raise CheckpointError(f"cannot read {what}: {reason}; {remedy}") from None


def _damage(data: bytes) -> str:
    """Why bytes that failed to load are not a checkpoint, judged from their first bytes."""
    if not data:
        return "the file is empty"
    if data.startswith(_ZIP_MAGIC):
        return "it is truncated or corrupt (a damaged zip archive)"
    if data[0] == _PICKLE_PROTO:
        return "it is truncated or corrupt, or a pickle that is not a PyTorch checkpoint"
    return "it is not a PyTorch checkpoint (neither a zip archive nor a pickle)"


def checkpoint_meta(obj: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Return (model name, recipe, extra) of a codesign checkpoint; (None, {}, {}) otherwise.

    Raises CheckpointError when a file that says it is a codesign checkpoint lacks an entry or
    holds one of the wrong kind (a damaged or hand-made file): its recipe would be re-applied.
    """
    if obj.get("format") != "codesign-checkpoint-v1":
        return None, {}, {}
    damaged = "a damaged codesign checkpoint: rebuild it or restore it"
    try:
        name, recipe = obj["model"], json.loads(obj["recipe_json"])
        extra = json.loads(obj["extra_json"])
        state = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{damaged} ({type(exc).__name__}: {exc})") from None
    kwargs = extra.get("model_kwargs", {}) if isinstance(extra, dict) else None
    if not (
        isinstance(name, str)
        and isinstance(recipe, dict)
        and isinstance(kwargs, dict)
        and isinstance(state, dict)
    ):
        raise CheckpointError(
            f"{damaged} (model, recipe_json, extra_json or state_dict of the wrong kind)"
        )
    return name, recipe, extra


class StaleStateWarning(UserWarning):
    """A resumable state file was made with other settings: it is ignored and overwritten."""


# A keyed state file: this line, "key <hex>", "sha256 <hex of the body>", then the body
# (torch.save bytes). Text first, so the key is compared and the body verified before
# anything is unpickled.
_STATE_MAGIC = b"codesign-keyed-state-v1\n"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def settings_key(settings: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings``: the key of what they produce."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (a state_dict)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_keyed_state(path: str | os.PathLike[str], obj: Any, key: str) -> Path:
    """Write ``obj`` (tensors, dicts, numbers) atomically under ``key`` with its sha256."""
    if not _HEX64.fullmatch(key):
        raise ValueError(f"a state key is a sha256 hex digest (see settings_key), got {key!r}")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    body = buffer.getvalue()
    header = f"key {key}\nsha256 {hashlib.sha256(body).hexdigest()}\n".encode("ascii")
    return write_bytes_atomic(path, _STATE_MAGIC + header + body)


def read_keyed_state(
    path: str | os.PathLike[str], key: str, what: str = "resumable state"
) -> Any | None:
    """The object a :func:`write_keyed_state` file at ``path`` holds, if written under ``key``.

    Returns None when there is no file, or (with a :class:`StaleStateWarning`) when it was
    written under another key: the caller starts over and overwrites it. Raises
    CheckpointError when the file is damaged or not a keyed state: resuming from part of a
    state would give wrong numbers, and deleting it is the user's call.
    """
    source = Path(path)
    if not source.is_file():
        return None
    data = source.read_bytes()
    delete = "delete it to start over"
    if not data.startswith(_STATE_MAGIC):
        if _STATE_MAGIC.startswith(data):
            raise CheckpointError(f"{what} {source} is truncated (incomplete header); {delete}")
        raise CheckpointError(
            f"{what} {source} is not a codesign state file (another program's file, or one "
            f"written by an older version); {delete}"
        )
    fields = data[len(_STATE_MAGIC) :].split(b"\n", 2)
    header = [f.decode("ascii", errors="replace").split(" ") for f in fields[:2]]
    if (
        len(fields) < 3
        or [h[0] for h in header] != ["key", "sha256"]
        or not all(len(h) == 2 and _HEX64.fullmatch(h[1]) for h in header)
    ):
        raise CheckpointError(f"{what} {source} is corrupt (damaged header); {delete}")
    stored_key, stored_digest, body = header[0][1], header[1][1], fields[2]
    if stored_key != key:
        warnings.warn(
            f"{what} {source} was written with other settings (key {stored_key[:12]}, these "
            f"settings {key[:12]}): ignoring it and starting over",
            StaleStateWarning,
            stacklevel=2,
        )
        return None
    if hashlib.sha256(body).hexdigest() != stored_digest:
        raise CheckpointError(
            f"{what} {source} is corrupt (truncated or modified: its sha256 does not match the "
            f"one written in it); {delete}"
        )
    return _safe_load(body, f"{what} {source}", delete)
