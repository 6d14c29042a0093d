"""Files shipped with the package: run recipes, datapaths, energy tables, small checkpoints.

In the repository they sit at the top level (``recipes/``, ``checkpoints/``), where users read
and copy them; pyproject's package-dir installs them as the packages ``codesign.recipes`` and
``codesign.checkpoints``. They are found with ``importlib.resources`` rather than a path
relative to this file because the two installs lay them out differently: a wheel puts them
inside ``codesign/``, an editable install leaves them beside it and maps the names.

A user's own file is always given by path; a bundled one by name (``digits``, ``scnn``,
``horowitz45``, ``bundled:resnet8-digits``). A name is one plain file stem, so it can never
reach outside the bundled directory.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from codesign.errors import ConfigError

RECIPES_PACKAGE = "codesign.recipes"
CHECKPOINTS_PACKAGE = "codesign.checkpoints"
BUNDLED_PREFIX = "bundled:"
# Kinds of bundled TOML and their folder inside ``codesign.recipes`` ("" = run recipes).
KIND_DIRS = {"recipe": "", "hardware": "hardware", "energy": "energy"}
# No separator, no leading dot: a name cannot climb out (``../x``) or be absolute (``/x``).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def bundled_dir(package: str, sub: str = "") -> Path:
    """The directory of a data package (``sub``: a folder inside it) on the file system."""
    try:
        root = files(package)
    except ModuleNotFoundError:
        # An editable install made before recipes/ and checkpoints/ became packages has no
        # mapping for them: only reinstalling regenerates setuptools' finder.
        raise ConfigError(
            f"{package} is not installed: reinstall codesign (pip install -e . or pip install .)"
        ) from None
    # Callers hand these paths to tomllib and torch.load; a zipped install would need
    # extraction, and pip never installs codesign zipped.
    if not isinstance(root, Path):
        raise ConfigError(f"{package} is not on the file system ({root}): reinstall codesign")
    return root / sub if sub else root


def bundled_names(kind: str) -> list[str]:
    """Names of the bundled files of ``kind`` (recipe | hardware | energy | checkpoint)."""
    if kind == "checkpoint":
        return sorted(p.stem for p in bundled_dir(CHECKPOINTS_PACKAGE).glob("*.pt"))
    return sorted(p.stem for p in bundled_dir(RECIPES_PACKAGE, KIND_DIRS[kind]).glob("*.toml"))


def _available(kind: str) -> str:
    return ", ".join(bundled_names(kind)) or "(none bundled)"


def resolve_named_file(value: str, kind: str) -> Path:
    """``value`` as a path if that file exists, else the bundled ``<kind>`` named ``value``
    (``.toml`` optional); ``kind`` is recipe, hardware or energy."""
    if kind not in KIND_DIRS:
        raise ValueError(f"kind must be one of {', '.join(KIND_DIRS)}, got {kind!r}")
    direct = Path(value)
    if direct.is_file():
        return direct
    name = value.removesuffix(".toml")
    if not _NAME.fullmatch(name):
        # Looks like a path (or is empty): say so rather than search the bundled folder.
        raise ConfigError(
            f"no {kind} file {value!r}: give the path of an existing .toml file, or a bundled "
            f"{kind} by name without a path: {_available(kind)}"
        )
    named = bundled_dir(RECIPES_PACKAGE, KIND_DIRS[kind]) / f"{name}.toml"
    if named.is_file():
        return named
    raise ConfigError(
        f"no {kind} file or bundled {kind} named {value!r}: give a path or one of "
        f"{_available(kind)}"
    )


def resolve_recipe(value: str | Path) -> Path:
    """A run recipe: a path, or the name of a bundled one (``digits``)."""
    return resolve_named_file(str(value), "recipe")


def bundled_checkpoint(stem: str) -> Path:
    """The bundled checkpoint ``<stem>.pt`` (``resnet8-digits``)."""
    if not _NAME.fullmatch(stem):
        raise ConfigError(
            f"bundled checkpoint {stem!r} is not a plain name (no path, no leading dot): "
            f"use one of {_available('checkpoint')}, or give a checkpoint's path"
        )
    path = bundled_dir(CHECKPOINTS_PACKAGE) / f"{stem}.pt"
    if not path.is_file():
        raise ConfigError(
            f"no bundled checkpoint {stem!r}: use one of {_available('checkpoint')}, or give "
            "a checkpoint's path"
        )
    return path


def resolve_checkpoint(value: str) -> Path:
    """A checkpoint path (``~`` expanded), or ``bundled:<stem>`` for one shipped inside the
    package."""
    if value.startswith(BUNDLED_PREFIX):
        return bundled_checkpoint(value[len(BUNDLED_PREFIX) :])
    return Path(value).expanduser()  # TOML has no shell to expand ~/.cache/...
