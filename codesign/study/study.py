"""A study: what every variant of a recipe shares (the float model, the data, the datapaths)
and where its files go. Opening one surfaces every input error before any variant runs."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codesign.data import Dataset, load_dataset
from codesign.data.datasets import stratified
from codesign.errors import CodesignError, ConfigError
from codesign.hw import NetworkCost, load_arch, load_energy_table, simulate
from codesign.hw.arch import ArchSpec
from codesign.hw.energy import EnergyTable
from codesign.hw.records import LayerRecord
from codesign.io import sha256_of, write_json_atomic
from codesign.models import create_model
from codesign.pipeline import load_model, model_kwargs_for, save_model
from codesign.recipe import Recipe, digest, resolve_checkpoint, resolve_named_file
from codesign.study.keys import data_digest, study_key_material


@dataclasses.dataclass(frozen=True)
class Datapath:
    """A named architecture with the energy table that prices it, and the digests of both
    (sha256 of their files; of the table's values for the built-in one)."""

    name: str
    arch: ArchSpec
    energy: EnergyTable
    arch_sha256: str
    energy_sha256: str

    def simulate(self, records: Sequence[LayerRecord]) -> NetworkCost:
        """Every captured layer simulated on ``arch`` and priced with ``energy``."""
        return NetworkCost.of(simulate(records, self.arch, self.energy))


@dataclasses.dataclass(frozen=True, eq=False)
class Study:
    """What every variant of a recipe shares: the float model, the data and the hardware.

    Frozen: a study with other data (or another seed) is a new value made with
    ``dataclasses.replace``, and its cache keys follow (they are computed from the fields).
    """

    recipe: Recipe
    float_model: nn.Module
    model_name: str
    checkpoint_sha256: str
    dataset: Dataset
    datapaths: tuple[Datapath, ...]
    out: Path
    progress: bool = True

    @functools.cached_property
    def data_sha256(self) -> str:
        """Digest of the loaded data (see :func:`codesign.study.keys.data_digest`); hashing the
        tensors takes a moment, so once per study."""
        return digest(data_digest(self.dataset, self.recipe.data))

    def key_material(self) -> dict[str, Any]:
        """Everything besides a variant's own steps that its result depends on."""
        return study_key_material(self)

    def datapath(self, name: str, where: str) -> Datapath:
        """The datapath called ``name``; a ConfigError naming ``where`` it was asked for."""
        for datapath in self.datapaths:
            if datapath.name == name:
                return datapath
        raise ConfigError(
            f"{where} {name!r} is not in hardware.archs: use one of "
            f"{', '.join(d.name for d in self.datapaths)}, or add it there"
        )


def load_datapaths(names: Sequence[str], energy_name: str) -> tuple[Datapath, ...]:
    """Architectures by recipe name or path, all priced by one energy table."""
    if energy_name == "horowitz45" and not Path(energy_name).is_file():
        energy = load_energy_table(None)
        # The built-in table lives in code: its values are what results depend on.
        energy_sha = "builtin:" + digest(dataclasses.asdict(energy))
    else:
        energy_path = resolve_named_file(energy_name, "energy")
        energy = load_energy_table(energy_path)
        energy_sha = sha256_of(energy_path)
    datapaths = []
    for name in names:
        path = resolve_named_file(name, "hardware")
        datapaths.append(Datapath(path.stem, load_arch(path), energy, sha256_of(path), energy_sha))
    return tuple(datapaths)


def _train_baseline(recipe: Recipe, dataset: Dataset, out: Path, progress: bool) -> Path:
    """Train the recipe's float model from scratch once (cached as OUT/baseline/model.pt)."""
    from codesign.train import train

    assert recipe.train is not None and recipe.model.name is not None
    path = out / "baseline" / "model.pt"
    if path.is_file():
        return path
    torch.manual_seed(recipe.seed)
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    model = create_model(recipe.model.name, **kwargs)
    spec = dataclasses.replace(recipe.train, seed=recipe.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    history = train(
        model, dataset, spec, state_path=path.parent / "train_state.pt", progress=progress
    )
    save_model(path, model, recipe.model.name, {"train": spec.to_dict()}, model_kwargs_for(model))
    write_json_atomic(path.parent / "train.json", {"train_seconds": history["train_seconds"]})
    (path.parent / "train_state.pt").unlink(missing_ok=True)
    return path


def _load_data(recipe: Recipe) -> Dataset:
    data = recipe.data
    dataset = load_dataset(
        data.source,
        data.download,
        image_size=data.image_size or None,
        max_train=data.max_train_samples or None,
        max_test=data.max_test_samples or None,
        validation_fraction=data.validation_fraction,
        subset_seed=data.subset_seed,
    )
    if data.eval_samples:
        test, _ = stratified(
            dataset.test, data.eval_samples, data.subset_seed, "evaluation", dataset.num_classes
        )
        dataset = dataclasses.replace(dataset, test=test)
    return dataset


def check_recipe_fits(
    recipe: Recipe,
    model: nn.Module,
    dataset: Dataset,
    datapaths: Sequence[Datapath],
    what: str,
) -> None:
    """Every variant's steps and the ``[search]`` table (if any) fit ``model``, and ``model``
    fits the data (see :mod:`codesign.pipeline.checks`): the errors the variants would raise
    one by one, raised before the first of them runs."""
    from codesign.pipeline import variant_steps
    from codesign.pipeline.checks import (
        check_model_fits_data,
        check_schedules_fit,
        check_steps_fit,
    )

    check_model_fits_data(model, dataset, what)
    for variant in recipe.variants:
        steps = variant_steps(variant.sparsity, variant.finetune, variant.quant, variant.qat)
        try:
            check_steps_fit(model, steps)
            check_schedules_fit(steps, dataset)
        except CodesignError as exc:
            raise type(exc)(f"variant {variant.name!r}: {exc}") from None
    if recipe.search is not None:
        from codesign.study.search.run import check_search

        check_search(recipe, model, [d.name for d in datapaths])


def open_study(recipe: Recipe, out: str | Path, progress: bool = True) -> Study:
    """Load the data, the float model (training it first if the recipe says so) and the
    datapaths; every input error surfaces here, before any variant runs."""
    out = Path(out)
    datapaths = load_datapaths(recipe.hardware.archs, recipe.hardware.energy)
    dataset = _load_data(recipe)
    if recipe.model.checkpoint is not None:
        checkpoint = resolve_checkpoint(recipe.model.checkpoint)
    else:
        assert recipe.model.name is not None
        # Checked on the untrained model: a bad variant never costs the baseline's training.
        untrained = create_model(
            recipe.model.name, num_classes=dataset.num_classes, in_channels=dataset.in_channels
        )
        check_recipe_fits(recipe, untrained, dataset, datapaths, "the recipe's model")
        checkpoint = _train_baseline(recipe, dataset, out, progress)
    model_kwargs = {
        k: v
        for k, v in (
            ("num_classes", recipe.model.num_classes),
            ("cifar_stem", recipe.model.cifar_stem),
        )
        if v is not None
    }
    float_model, name, _ = load_model(checkpoint, recipe.model.name, **model_kwargs)
    check_recipe_fits(recipe, float_model, dataset, datapaths, f"checkpoint {checkpoint}")
    return Study(
        recipe=recipe,
        float_model=float_model,
        model_name=name,
        checkpoint_sha256=sha256_of(checkpoint),
        dataset=dataset,
        datapaths=datapaths,
        out=out,
        progress=progress,
    )


def check_out_dir(out: Path) -> None:
    """``out`` must be a directory this process can write, or a path that can become one:
    checked before any work (nothing is created here), so a bad ``--out`` never costs a run.
    Raises ConfigError."""
    import tempfile

    if "\0" in str(out):  # no file system takes it; pathlib raises a bare ValueError
        raise ConfigError(f"--out {str(out)!r} contains a NUL character: give a directory path")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory: give a directory path")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is not a directory: give a directory path")
    try:  # permissions alone do not tell (root, read-only mounts, full disks)
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".codesign-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--out {out} is not writable ({exc.strerror or exc}): give a directory you can "
            "write to"
        ) from None
