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
from codesign.locks import wait_lock
from codesign.models import create_model
from codesign.pipeline import load_model, model_kwargs_for, save_model
from codesign.recipe import Recipe, digest, resolve_checkpoint, resolve_named_file
from codesign.runtime import Runtime
from codesign.study.keys import data_digest, split_sha256, study_key_material
from codesign.study.manifest import check_recipe_fits


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
    runtime: Runtime = dataclasses.field(default_factory=Runtime)

    @functools.cached_property
    def data_sha256(self) -> str:
        """Digest of the loaded data (see :func:`codesign.study.keys.data_digest`); hashing the
        tensors takes a moment, so once per study."""
        return digest(data_digest(self.dataset, self.recipe.data))

    @functools.cached_property
    def test_sha256(self) -> str:
        """Digest of the test split's images and labels: per-image correctness vectors carry
        it, and only vectors with the same digest are paired."""
        return split_sha256(self.dataset.test)

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


def at_seed(study: Study, seed: int) -> Study:
    """``study`` with the single seed ``seed``: its variants get that seed's cache keys and
    train with it. The data and models are shared, not reloaded (nor re-hashed)."""
    if study.recipe.seed == seed and study.recipe.seeds is None:
        return study
    moved = dataclasses.replace(
        study, recipe=dataclasses.replace(study.recipe, seed=seed, seeds=None)
    )
    for name in ("data_sha256", "test_sha256"):  # digests of the data, not of the seed
        moved.__dict__[name] = getattr(study, name)  # hashed once, on ``study``
    return moved


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


def _train_baseline(
    recipe: Recipe, dataset: Dataset, out: Path, progress: bool, runtime: Runtime
) -> Path:
    """Train the recipe's float model from scratch once (cached as OUT/baseline/model.pt;
    rank 0 writes it, the other ranks wait for it)."""
    from codesign import distributed

    path = out / "baseline" / "model.pt"
    if distributed.all_true(path.is_file()):
        return path
    if runtime.distributed:
        # The ranks of one torchrun train together and meet at barriers; a file lock would
        # make rank 1 wait for rank 0 while rank 0 waits for rank 1 in a collective.
        _train_baseline_locked(recipe, dataset, path, progress, runtime)
        return path
    # Processes starting together on one OUT: one trains, the others wait and load its model.
    message = f"codesign: the baseline {path} is being trained by " + "{holder}; waiting for it"
    with wait_lock(out / "baseline.lock", "baseline training", message):
        if not path.is_file():
            _train_baseline_locked(recipe, dataset, path, progress, runtime)
    return path


def _train_baseline_locked(
    recipe: Recipe, dataset: Dataset, path: Path, progress: bool, runtime: Runtime
) -> None:
    """Train and save the baseline at ``path``, its lock held (or its ranks together)."""
    from codesign import distributed
    from codesign.models import create_model
    from codesign.train import train

    assert recipe.train is not None and recipe.model.name is not None
    torch.manual_seed(recipe.seed)
    kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    model = create_model(recipe.model.name, **kwargs)
    spec = dataclasses.replace(recipe.train, seed=recipe.seed)
    if runtime.is_writer:
        path.parent.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    history = train(
        model,
        dataset,
        spec,
        state_path=path.parent / "train_state.pt",
        progress=progress,
        runtime=runtime,
    )
    if runtime.is_writer:
        recipe_table = {"train": spec.to_dict()}
        save_model(path, model, recipe.model.name, recipe_table, model_kwargs_for(model))
        write_json_atomic(path.parent / "train.json", {"train_seconds": history["train_seconds"]})
        (path.parent / "train_state.pt").unlink(missing_ok=True)
    distributed.barrier()


def _load_data(recipe: Recipe) -> Dataset:
    from codesign.data import LoaderSettings, default_workers

    data = recipe.data
    loader = LoaderSettings(
        workers=default_workers() if data.workers is None else data.workers,
        pin_memory=torch.cuda.is_available(),  # page-locked batches copy faster to a GPU
    )
    dataset = load_dataset(
        data.source,
        data.download,
        image_size=data.image_size or None,
        max_train=data.max_train_samples or None,
        max_test=data.max_test_samples or None,
        validation_fraction=data.validation_fraction,
        subset_seed=data.subset_seed,
        stream=data.stream,
        loader=loader,
    )
    if data.eval_samples:
        test, _ = stratified(
            dataset.test, data.eval_samples, data.subset_seed, "evaluation", dataset.num_classes
        )
        dataset = dataclasses.replace(dataset, test=test)
    return dataset


def check_variants_fit(
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


def open_study(
    recipe: Recipe, out: str | Path, progress: bool = True, runtime: Runtime | None = None
) -> Study:
    """Load the data, the float model (training it first if the recipe says so) and the
    datapaths; every input error surfaces here, before any variant runs, and so does an
    ``out`` that holds the study of another recipe. ``runtime`` (default: one CPU process)
    is where the variants are built and scored."""
    out = Path(out)
    check_recipe_fits(out, recipe)
    runtime = runtime if runtime is not None else Runtime()
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
        check_variants_fit(recipe, untrained, dataset, datapaths, "the recipe's model")
        checkpoint = _train_baseline(recipe, dataset, out, progress, runtime)
    model_kwargs = {
        k: v
        for k, v in (
            ("num_classes", recipe.model.num_classes),
            ("cifar_stem", recipe.model.cifar_stem),
        )
        if v is not None
    }
    float_model, name, _ = load_model(checkpoint, recipe.model.name, **model_kwargs)
    check_variants_fit(recipe, float_model, dataset, datapaths, f"checkpoint {checkpoint}")
    float_model.to(runtime.torch_device)
    return Study(
        recipe=recipe,
        float_model=float_model,
        model_name=name,
        checkpoint_sha256=sha256_of(checkpoint),
        dataset=dataset,
        datapaths=datapaths,
        out=out,
        progress=progress,
        runtime=runtime,
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
