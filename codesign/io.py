"""Atomic file writes and checkpoints that carry their recipe.

Every file is written to a temporary sibling and renamed into place, so a killed process
never leaves a half-written result behind. Checkpoints are read with ``weights_only=True``:
a checkpoint is untrusted input and unpickling code from it is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

    Raises CheckpointError for a missing file, a file that is not a torch checkpoint, or one
    that needs code execution to unpickle.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(
            f"checkpoint not found: {source} (give the path of an existing .th/.pt file)"
        )
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {source}: {first_line} "
            "(only tensor/dict checkpoints are accepted; re-save it with torch.save(state_dict))"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(obj).__name__}, not a dict of tensors "
            "(save the model's state_dict, not the module)"
        )
    return obj


def checkpoint_meta(obj: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Return (model name, recipe, extra) of a codesign checkpoint; (None, {}, {}) otherwise."""
    if obj.get("format") != "codesign-checkpoint-v1":
        return None, {}, {}
    return obj["model"], json.loads(obj["recipe_json"]), json.loads(obj["extra_json"])
