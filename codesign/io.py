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

from codesign.errors import CheckpointError


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
