"""npz data sets: four numeric arrays, read and checked without unpickling anything."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from codesign.data.splits import Split
from codesign.errors import DataError

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_REMEDY = "save numeric arrays with numpy.savez(FILE, x_train=..., y_train=..., ...)"


def _npz_arrays(source: Path) -> dict[str, np.ndarray]:
    """The four arrays of an npz file, read without unpickling anything."""
    try:
        with np.load(source, allow_pickle=False) as arrays:
            missing = set(NPZ_ARRAYS) - set(arrays.files)
            if missing:
                raise DataError(f"{source} lacks arrays {sorted(missing)}: {_NPZ_REMEDY}")
            return {k: arrays[k] for k in NPZ_ARRAYS}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own messages suggest allow_pickle=True, i.e. running the file's code: never
        # repeat that; say what the file is instead.
        if not zipfile.is_zipfile(source):
            reason = "not a zip archive of .npy arrays"
        elif "pickle" in str(exc) or "Object arrays" in str(exc):
            reason = "it holds object arrays, which only unpickling reads"
        else:
            reason = f"truncated or damaged: {type(exc).__name__}"
        raise DataError(f"cannot read npz file {source}: {reason}; {_NPZ_REMEDY}") from None


def _check_npz_split(x: np.ndarray, y: np.ndarray, name: str, source: Path) -> None:
    """Images [N, H, W], [N, C, H, W] or [N, H, W, C] of numbers, and N integer labels >= 0."""
    what = f"{source}: x_{name}"
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} holds {x.dtype} values, not numbers: {_NPZ_REMEDY}")
    if x.ndim not in (3, 4):
        raise DataError(
            f"{what} has shape {x.shape}: give images as [N, H, W], [N, C, H, W] or [N, H, W, C]"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{source}: y_{name} has shape {y.shape} but x_{name} holds {len(x)} images: "
            "give one integer label per image"
        )
    integral = y.dtype.kind in "biu" or (
        y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))
    )
    if not integral or (len(y) and y.min() < 0):
        raise DataError(
            f"{source}: y_{name} must hold class indices (integers >= 0), got {y.dtype} "
            f"values from {y.min() if len(y) else '-'} to {y.max() if len(y) else '-'}"
        )


def read_npz_splits(path: str | Path) -> tuple[Split, Split, int]:
    """The train and test splits of an npz file (images as float [N, C, H, W], uint8 scaled to
    [0, 1]) and the class count (1 + the largest label), every array checked first."""
    source = Path(path)
    if not source.is_file():
        raise DataError(f"npz file not found: {source} (npz:FILE needs an existing .npz file)")
    parts = _npz_arrays(source)
    for name in ("train", "test"):
        _check_npz_split(parts[f"x_{name}"], parts[f"y_{name}"], name, source)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        images = torch.from_numpy(np.ascontiguousarray(x))
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.permute(0, 3, 1, 2)
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return Split(images.float().contiguous(), torch.from_numpy(y).long())

    train, test = split(parts["x_train"], parts["y_train"]), split(parts["x_test"], parts["y_test"])
    classes = 1 + max((int(s.labels.max()) for s in (train, test) if len(s)), default=-1)
    return train, test, classes
