"""``codesign run``: every variant of a recipe, built, scored, captured and simulated.

Each variant is independent: a copy of the float model is pruned (and fine-tuned), quantized
(PTQ, then QAT if asked), evaluated, and its real tensors are captured once and simulated on
every datapath of the recipe. A finished variant is written atomically to
``OUT/variants/<name>-<key>/variant.json``, where ``key`` hashes everything its result depends
on (variant config, checkpoint bytes, data, samples, seed, hardware files). Re-running the same
recipe into the same ``OUT`` reuses those files, so a killed run loses at most the variant in
flight; ``force`` recomputes. Timings live in the per-variant files, never in
``results.json``, so a resumed run's ``results.json`` equals an uninterrupted one's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from codesign.data import Dataset, evaluate, load_dataset, make_forward_loop
from codesign.data.datasets import Split, stratified
from codesign.errors import CodesignError, ConfigError
from codesign.hw import NetworkCost, capture, load_arch, load_energy_table, simulate
from codesign.hw.arch import ArchSpec
from codesign.hw.energy import EnergyTable
from codesign.hw.records import LayerRecord
from codesign.io import sha256_of, write_json_atomic
from codesign.pipeline import (
    BuildContext,
    BuildInfo,
    build,
    layer_bits_rows,
    load_model,
    model_kwargs_for,
    save_model,
    variant_steps,
)
from codesign.recipe import (
    Recipe,
    VariantSpec,
    digest,
    resolve_checkpoint,
    resolve_named_file,
    slug,
)

VARIANT_FILE = "variant.json"
CAPTURE_BATCH = 64


@dataclasses.dataclass(frozen=True)
class Datapath:
    """A named architecture with the energy table that prices it."""

    name: str
    arch: ArchSpec
    energy: EnergyTable
    source_sha256: str

    def simulate(self, records: Sequence[LayerRecord]) -> NetworkCost:
        """Every captured layer simulated on ``arch`` and priced with ``energy``."""
        return NetworkCost.of(simulate(records, self.arch, self.energy))


@dataclasses.dataclass
class Study:
    """What every variant of a recipe shares: the float model, the data and the hardware."""

    recipe: Recipe
    float_model: nn.Module
    model_name: str
    checkpoint_sha256: str
    dataset: Dataset
    datapaths: list[Datapath]
    out: Path
    progress: bool = True

    def key_material(self) -> dict[str, Any]:
        """Everything besides the variant config that a variant's result depends on."""
        return {
            "code": code_digest(),
            "model": self.model_name,
            "checkpoint_sha256": self.checkpoint_sha256,
            "data": dataclasses.asdict(self.recipe.data),
            "seed": self.recipe.seed,
            "datapaths": {d.name: d.source_sha256 for d in self.datapaths},
            "energy": self.recipe.hardware.energy,
        }


# Sources that never touch a variant's numbers: the search (its tables carry their own key,
# see search.cached_tables) and the report writers (results.json is rebuilt from the variant
# files on every run). Leaving them out lets the search be re-run after a change to its choice
# logic without rebuilding every variant.
NOT_IN_CODE_DIGEST = ("search.py", "report/")


@functools.cache
def code_digest() -> str:
    """sha256 over the package's Python sources (but ``NOT_IN_CODE_DIGEST``): results cached
    by another version of the code are recomputed, never mixed into a report."""
    package = Path(__file__).resolve().parent
    hasher = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix().startswith(NOT_IN_CODE_DIGEST):
            continue
        hasher.update(path.relative_to(package).as_posix().encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def load_datapaths(names: Sequence[str], energy_name: str) -> list[Datapath]:
    """Architectures by recipe name or path, all priced by one energy table."""
    if energy_name == "horowitz45" and not Path(energy_name).is_file():
        energy = load_energy_table(None)
        energy_sha = "builtin:horowitz45"
    else:
        energy_path = resolve_named_file(energy_name, "energy")
        energy = load_energy_table(energy_path)
        energy_sha = sha256_of(energy_path)
    datapaths = []
    for name in names:
        path = resolve_named_file(name, "hardware")
        datapaths.append(Datapath(path.stem, load_arch(path), energy, sha256_of(path) + energy_sha))
    return datapaths


def _train_baseline(recipe: Recipe, dataset: Dataset, out: Path, progress: bool) -> Path:
    """Train the recipe's float model from scratch once (cached as OUT/baseline/model.pt)."""
    from codesign.models import create_model
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


def open_study(recipe: Recipe, out: str | Path, progress: bool = True) -> Study:
    """Load the data, the float model (training it first if the recipe says so) and the
    datapaths; every input error surfaces here, before any variant runs."""
    out = Path(out)
    datapaths = load_datapaths(recipe.hardware.archs, recipe.hardware.energy)
    dataset = load_dataset(
        recipe.data.source,
        recipe.data.download,
        image_size=recipe.data.image_size or None,
        max_train=recipe.data.max_train_samples or None,
        max_test=recipe.data.max_test_samples or None,
        validation_fraction=recipe.data.validation_fraction,
        subset_seed=recipe.data.subset_seed,
    )
    if recipe.data.eval_samples:
        test, _ = stratified(
            dataset.test,
            recipe.data.eval_samples,
            recipe.data.subset_seed,
            "evaluation",
            dataset.num_classes,
        )
        dataset = dataclasses.replace(dataset, test=test)
    if recipe.model.checkpoint is not None:
        checkpoint = resolve_checkpoint(recipe.model.checkpoint)
    else:
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


def build_variant(study: Study, variant: VariantSpec) -> tuple[nn.Module, BuildInfo]:
    """Apply a variant's steps (prune, fine-tune, PTQ, QAT) to a copy of the float model,
    through the same handlers the ``prune`` / ``ptq`` / ``qat`` commands run, so a variant
    reproduces the standalone command with the same settings."""
    ctx = BuildContext(
        study.float_model,
        study.dataset,
        seed=study.recipe.seed,
        calib_samples=study.recipe.data.calib_samples,
        progress=study.progress,
    )
    steps = variant_steps(variant.sparsity, variant.finetune, variant.quant, variant.qat)
    return build(ctx, steps)


def datapath_summary(records: Sequence[LayerRecord], datapath: Datapath) -> dict[str, Any]:
    """Per-inference totals and per-layer rows of one datapath on captured records (see
    :class:`codesign.hw.NetworkCost`)."""
    network = datapath.simulate(records)
    return {"datapath": datapath.name, **network.totals(), "layers": network.layer_rows()}


def measured_densities(records: Sequence[LayerRecord]) -> dict[str, float]:
    """Whole-network weight and input-activation densities (nonzeros / elements), and the
    fraction of dense MACs that are effectual."""
    weights = sum(r.weight_count for r in records)
    inputs = sum(r.input_count for r in records)
    macs = sum(r.dense_macs for r in records)
    return {
        "weight_density": sum(r.weight_nonzeros for r in records) / max(weights, 1),
        "act_density": sum(r.input_nonzeros for r in records) / max(inputs, 1),
        "effectual_mac_fraction": sum(r.effectual_macs for r in records) / max(macs, 1),
    }


def score_model(study: Study, model: nn.Module, test: Split | None = None) -> dict[str, Any]:
    """Top-1 on the test split (reported) and the validation split (what the search reads),
    then one capture of validation images and a simulation on every datapath."""
    from codesign.sparsity import sparsity_report

    split = test if test is not None else study.dataset.test
    accuracy = evaluate(model, split)
    validation = study.dataset.validation
    assert validation is not None and study.dataset.validation_info is not None
    images, captured = study.dataset.capture_set(study.recipe.data.capture_samples)
    records = capture(model, make_forward_loop(images, CAPTURE_BATCH))
    report = sparsity_report(model)
    return {
        "top1": float(accuracy["top1"]),
        "correct": int(accuracy["correct"]),
        "samples": int(accuracy["samples"]),
        "val_top1": float(evaluate(model, validation)["top1"]),
        "subsets": {
            "validation": study.dataset.validation_info.to_dict(),
            "capture": captured.to_dict(),
        },
        "weight_sparsity": report["sparsity"],
        "captured_samples": records[0].n,
        **measured_densities(records),
        "layers": [
            {**bits, "sparsity": row["sparsity"], "pattern": row["pattern"]}
            for bits, row in zip(_bits_rows(model), report["layers"], strict=True)
        ],
        "datapaths": {d.name: datapath_summary(records, d) for d in study.datapaths},
    }


def _bits_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per-layer widths; float layers are 32 bit."""
    quantized = {row["name"]: row for row in layer_bits_rows(model)}
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            rows.append(quantized.get(name, {"name": name, "weight_bits": 32, "act_bits": 32}))
    return rows


def variant_dir(study: Study, variant: VariantSpec) -> tuple[Path, str]:
    key = digest({"variant": variant.to_dict(), **study.key_material()})
    return study.out / "variants" / f"{slug(variant.name)}-{key[:12]}", key


def run_variant(study: Study, variant: VariantSpec, force: bool = False) -> dict[str, Any]:
    """Build, score and simulate one variant, or reuse its finished result from OUT."""
    directory, key = variant_dir(study, variant)
    result_path = directory / VARIANT_FILE
    if result_path.is_file() and not force:
        cached = json.loads(result_path.read_text())
        if cached.get("key") == key:
            return cached
    started = time.perf_counter()
    model, info = build_variant(study, variant)
    scored = score_model(study, model)
    scored["subsets"].update(info.subsets)
    directory.mkdir(parents=True, exist_ok=True)
    recipe = {}
    if variant.sparsity is not None:
        recipe["sparsity"] = variant.sparsity.to_dict()
    if variant.quant is not None:
        recipe["quant"] = variant.quant.to_dict()
    save_model(directory / "model.pt", model, study.model_name, recipe, model_kwargs_for(model))
    result = {
        "key": key,
        "variant": variant.name,
        "config": variant.to_dict(),
        **scored,
        **info.pruning,
        "timing": {
            "train_seconds": info.train_seconds,
            "calib_seconds": info.calib_seconds,
            "total_seconds": time.perf_counter() - started,
        },
    }
    write_json_atomic(result_path, result)
    # Read back what was written, so fresh and resumed runs hand identical data onward.
    return json.loads(result_path.read_text())


def run_study(study: Study, force: bool = False) -> list[dict[str, Any]]:
    """Every variant of the recipe, in recipe order; returns their results."""
    results = []
    bar = tqdm(study.recipe.variants, desc="variants", unit="variant", disable=not study.progress)
    for variant in bar:
        bar.set_postfix_str(variant.name)
        try:
            results.append(run_variant(study, variant, force=force))
        except CodesignError as exc:
            raise type(exc)(f"variant {variant.name!r}: {exc}") from None
    return results


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory: give a directory path")


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    search: dict[str, Any] | None = None,
    study: Study | None = None,
) -> dict[str, Any]:
    """Run (or resume) every variant of ``recipe`` into ``out`` and write the report files.

    Returns the ``results.json`` dict. ``search`` (from :func:`codesign.search.run_search`)
    adds the co-design search's verified configurations to the same report.
    """
    from codesign.report import build_results, summary_table, write_report

    out = Path(out)
    check_out_dir(out)
    study = study or open_study(recipe, out, progress)
    scored = run_study(study, force=force)
    resolved = recipe.to_dict()
    results = build_results(resolved, scored, search)
    timings = {v["variant"]: v["timing"] for v in scored}
    figures_from = scored + (list(search["verified"]) if search else [])
    write_report(out, results, resolved, figures_from, timings)
    print(summary_table(results))
    print(f"report: {out / 'report.html'}")
    return results
