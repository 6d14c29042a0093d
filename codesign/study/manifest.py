"""``OUT/study.json``: which recipe a study directory belongs to and where its variants are.

Every ``codesign run`` (and ``search``) writes it before building: the recipe's name and the
digest of its resolved form, the resolved recipe itself, and per build (a variant at a seed:
see :mod:`codesign.study.seeds`) its name, seed, cache key and directory. Two uses:

- one directory, one recipe: a run of a recipe with another name into the same ``--out`` is
  refused before any work (the same recipe, edited, is the cache's business: its changed
  variants get new keys);
- ``codesign report DIR`` assembles the report from the cached variants it lists, without
  loading a model or data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesign.errors import ConfigError, ResultError
from codesign.io import read_json_verified, write_json_verified
from codesign.locks import wait_lock
from codesign.recipe import Recipe, digest

if TYPE_CHECKING:
    from codesign.study.study import Study

MANIFEST_FILE = "study.json"
MANIFEST_SCHEMA = 2  # 2: one entry per (variant, seed) build, with its seed


@dataclasses.dataclass(frozen=True)
class ManifestVariant:
    """A recipe variant's build as stored: its name, cache key, directory under
    ``OUT/variants`` and the seed it is built with."""

    name: str
    key: str
    directory: str
    seed: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The contents of ``study.json``: the recipe's name, the sha256 of its resolved form,
    the resolved recipe (JSON) and its variants in recipe order."""

    recipe: str
    recipe_sha256: str
    resolved: dict[str, Any]
    variants: tuple[ManifestVariant, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": MANIFEST_SCHEMA,
            "recipe": self.recipe,
            "recipe_sha256": self.recipe_sha256,
            "variants": [dataclasses.asdict(v) for v in self.variants],
            "resolved": self.resolved,
        }


def recorded_recipe(out: Path) -> str | None:
    """The name of the recipe whose study ``out`` holds: from ``study.json``, else from the
    ``recipe.json`` of a report; None for a new or foreign directory."""
    for file, field in ((MANIFEST_FILE, "recipe"), ("recipe.json", "name")):
        try:
            data = json.loads((out / file).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get(field), str):
            return data[field]
    return None


def check_recipe_fits(out: Path, recipe: Recipe) -> None:
    """Raise a ConfigError when ``out`` already holds the study of a recipe with another name
    (checked before any work)."""
    existing = recorded_recipe(out)
    if existing is not None and existing != recipe.name:
        raise ConfigError(
            f"--out {out} holds the study of recipe {existing!r}, not {recipe.name!r}: give "
            "each recipe its own --out"
        )


def manifest_of(study: Study) -> Manifest:
    """The manifest of ``study``'s recipe (computes every build's cache key)."""
    from codesign.study.seeds import seed_tasks
    from codesign.study.study import at_seed
    from codesign.study.variants import variant_dir

    resolved = json.loads(json.dumps(study.recipe.to_dict()))  # tuples as JSON lists
    entries = []
    for seed, variant in seed_tasks(study.recipe, study.recipe.variants):
        directory, key = variant_dir(at_seed(study, seed), variant)
        entries.append(ManifestVariant(variant.name, key, directory.name, seed))
    return Manifest(study.recipe.name, digest(resolved), resolved, tuple(entries))


def write_manifest(study: Study) -> Manifest:
    """Write ``OUT/study.json`` (with its sha256) for ``study``; unchanged files are left as
    they are. Held under a lock: processes starting together all write it."""
    manifest = manifest_of(study)
    path = study.out / MANIFEST_FILE
    message = f"codesign: {path} is being written by " + "{holder}; waiting for it"
    with wait_lock(path.with_name(MANIFEST_FILE + ".lock"), "study manifest", message):
        try:
            unchanged = read_json_verified(path) == manifest.to_json()
        except ResultError:
            unchanged = False
        if not unchanged:
            write_json_verified(path, manifest.to_json())
    return manifest


def read_manifest(out: Path) -> Manifest:
    """The manifest of the study in ``out``; a ConfigError saying what to run when there is
    none or it does not verify."""
    path = out / MANIFEST_FILE
    try:
        data = read_json_verified(path)
        if data.get("schema_version") != MANIFEST_SCHEMA:
            raise ResultError(f"schema_version {data.get('schema_version')!r}")
        variants = tuple(ManifestVariant(**v) for v in data["variants"])
        return Manifest(data["recipe"], data["recipe_sha256"], data["resolved"], variants)
    except (ResultError, AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is missing or unreadable ({exc}): run `codesign run RECIPE --out {out}` "
            "(with --variants for some variants) first"
        ) from None
