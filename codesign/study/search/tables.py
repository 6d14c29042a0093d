"""The search's measurements: per-layer energy of every option (uniform models, captured and
simulated) and per-layer accuracy drop (single-layer swaps scored on validation images),
cached in ``OUT/search/tables-<key>.json``.

Each option's uniform model is the front's corner with every searchable layer at that option,
built exactly as a verified configuration is (pruned, fine-tuned where ``[search.finetune]``
says, PTQ'd, quantization-aware trained where ``[search.qat]`` says) and cached like any
recipe variant (``search-reference-w8a8``, ``search-uniform-<option>``). The drops are those
of the trained reference with one layer swapped for its trained twin, so they measure what
training leaves, not what one-shot pruning and PTQ do before it.

The key is semantic like a variant's: the ``[search]`` fields that shape the tables, the
option variants' resolved steps with their versions, the searchable layers, the study's key
material, and ``TABLES_VERSION``. Raise ``TABLES_VERSION`` when the measurement itself
changes (how drops are scored, which images, how energies are read).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from codesign.data import make_forward_loop
from codesign.data.datasets import Split
from codesign.data.subsets import SubsetInfo
from codesign.errors import CodesignError, ResultError
from codesign.hw import capture
from codesign.io import check_json_keys, read_json_verified, write_json_verified
from codesign.pipeline.models import load_model
from codesign.recipe import SearchSpec, VariantSpec, digest
from codesign.study.fanout import build_variants
from codesign.study.keys import steps_record
from codesign.study.search.front import calibrated_drops, charged_drops
from codesign.study.search.options import REFERENCE, Option, configuration_variant
from codesign.study.study import Study
from codesign.study.variants import CAPTURE_BATCH, variant_dir

# 2: the uniform models are trained like the verified configurations ([search.finetune],
# [search.qat]) and the reference's validation top-1 is that of the trained reference.
TABLES_VERSION = 2

# How many configurations are verified does not change the tables; how they are trained does
# (the uniform models are trained the same way), through the options' steps in the key.
NOT_IN_TABLES_KEY = ("verify",)

REFERENCE_NAME = "search-reference-w8a8"


@dataclasses.dataclass(frozen=True, eq=False)
class SearchTables:
    """``reference_top1``: the reference option's top-1 (%) on the sensitivity images.
    ``layer_energy_uj_per_inference``: [layers, options]; ``fixed_energy_uj_per_inference``:
    the layers outside the search, under the reference option. ``drops``: [layers, options],
    points, the larger of the top-1 and soft-accuracy drops (the reference column is 0);
    ``top1_drops``: the top-1 part alone. ``uniform_val_top1``: [options], each uniform
    model's top-1 (%) on the whole validation split; the first, the reference's, is what
    predictions start from."""

    key: str
    reference_top1: float
    sensitivity_subset: SubsetInfo
    layer_energy_uj_per_inference: np.ndarray
    fixed_energy_uj_per_inference: float
    drops: np.ndarray
    top1_drops: np.ndarray
    uniform_val_top1: tuple[float, ...]

    def predicted_drops(self) -> np.ndarray:
        """[layers, options], points: what the search's predictions subtract per layer. Each
        layer's share of an option's cost comes from the swaps, charged at least one image of
        the sensitivity images the drops were measured on (:func:`charged_drops`; the
        validation split may hold fewer than ``sensitivity_samples`` asked), and each option's
        total from its uniform model (:func:`calibrated_drops`)."""
        charged = charged_drops(self.drops, self.sensitivity_subset.size)
        return calibrated_drops(charged, self.uniform_val_top1)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "reference_top1": self.reference_top1,
            "sensitivity_subset": self.sensitivity_subset.to_dict(),
            "layer_energy_uj_per_inference": self.layer_energy_uj_per_inference.tolist(),
            "fixed_energy_uj_per_inference": self.fixed_energy_uj_per_inference,
            "drops": self.drops.tolist(),
            "top1_drops": self.top1_drops.tolist(),
            "uniform_val_top1": list(self.uniform_val_top1),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], shape: tuple[int, int]) -> SearchTables:
        """Parse and check every table is [layers, options] = ``shape``."""
        fields = tuple(f.name for f in dataclasses.fields(cls))
        check_json_keys(data, fields, "search tables")
        try:
            arrays = {
                name: np.array(data[name], dtype=float)
                for name in ("layer_energy_uj_per_inference", "drops", "top1_drops")
            }
            subset = SubsetInfo.from_dict(data["sensitivity_subset"])
            uniform = tuple(float(t) for t in data["uniform_val_top1"])
            tables = cls(
                **{**data, **arrays, "sensitivity_subset": subset, "uniform_val_top1": uniform}
            )
        except (CodesignError, TypeError, ValueError) as exc:
            raise ResultError(f"search tables: {exc}") from None
        if any(a.shape != shape for a in arrays.values()) or len(uniform) != shape[1]:
            raise ResultError(f"search tables: not [layers, options] = {list(shape)}")
        return tables


def accuracies(model: nn.Module, split: Split, batch_size: int = 512) -> tuple[float, float]:
    """(top-1 %, soft accuracy %): the soft one is the mean probability given to the true
    class, a smooth measure in the same units that moves before predictions flip."""
    from codesign.data.loops import batches, model_device

    device = model_device(model)
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    soft = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for images, labels in batches(split, batch_size):
            logits = model(images.to(device, non_blocking=True))
            labels = labels.to(device, non_blocking=True)
            correct += (logits.argmax(1) == labels).sum()
            soft += logits.softmax(1).gather(1, labels[:, None]).sum().double()
    return 100.0 * int(correct) / len(split), 100.0 * float(soft) / len(split)


def _swap_layer(reference: nn.Module, donor: nn.Module, name: str) -> nn.Module:
    model = copy.deepcopy(reference)
    model.set_submodule(name, copy.deepcopy(donor.get_submodule(name)))
    return model


def uniform_variant(option: Option, spec: SearchSpec, layer_names: Sequence[str]) -> VariantSpec:
    """The recipe variant of ``option``'s uniform model: every searchable layer at it, built
    and trained exactly as a verified configuration (:func:`configuration_variant`)."""
    name = REFERENCE_NAME if option == REFERENCE else f"search-uniform-{option.label}"
    return configuration_variant(name, layer_names, [option] * len(layer_names), spec)


def _uniform_models(
    study: Study,
    spec: SearchSpec,
    options: Sequence[Option],
    layer_names: Sequence[str],
    force: bool,
    jobs: int,
) -> tuple[list[nn.Module], np.ndarray, float, tuple[float, ...]]:
    """One trained model per option with every searchable layer at it (built in ``jobs``
    processes and cached as recipe variants), from its capture the per-layer energy table
    [layers, options] (uJ per inference) and the fixed energy of the layers outside the search
    (under the reference option), and each model's validation top-1 (%)."""
    datapath = study.datapath(spec.datapath, "search.datapath")
    variants = [uniform_variant(o, spec, layer_names) for o in options]
    results = build_variants(study, variants, force=force, jobs=jobs)
    captured, _ = study.dataset.capture_set(study.recipe.data.capture_samples)
    device = study.runtime.torch_device
    models, energy_rows, fixed_energy = [], [], 0.0
    for index, variant in enumerate(variants):
        # Read back from the variant's cache: built here or in a worker, the same model.
        model, _, _ = load_model(variant_dir(study, variant)[0] / "model.pt")
        model.to(device)
        records = capture(model, make_forward_loop(captured, CAPTURE_BATCH, device=device))
        per_layer = datapath.simulate(records).layer_energy_uj_per_inference
        energy_rows.append([per_layer[name] for name in layer_names])
        if index == 0:
            fixed_energy = sum(v for k, v in per_layer.items() if k not in layer_names)
        models.append(model)
    uniform_top1 = tuple(r.val_top1 for r in results)
    return models, np.array(energy_rows).T, fixed_energy, uniform_top1


def measure_tables(
    study: Study,
    spec: SearchSpec,
    options: Sequence[Option],
    layer_names: Sequence[str],
    key: str = "",
    *,
    force: bool = False,
    jobs: int = 1,
) -> SearchTables:
    """Per-layer energy (uJ per inference) and accuracy drop (points) of every option, from
    the trained uniform models (built in ``jobs`` processes; ``force`` rebuilds them)."""
    # Checked before the slow part: the sensitivity images come from the validation split.
    study.datapath(spec.datapath, "search.datapath")
    split, sensitivity = study.dataset.sensitivity_set(spec.sensitivity_samples)
    if sensitivity.size < spec.sensitivity_samples:
        print(
            f"codesign: warning: search.sensitivity_samples is {spec.sensitivity_samples} but "
            f"the validation split holds {sensitivity.size} images: measuring on all of them "
            "(raise [data] validation_fraction for more)",
            file=sys.stderr,
        )
    models, energies, fixed_energy, uniform_top1 = _uniform_models(
        study, spec, options, layer_names, force, jobs
    )
    reference = accuracies(models[0], split)
    drops = np.zeros((len(layer_names), len(options)))
    top1_drops = np.zeros_like(drops)
    pairs = [(li, oi) for li in range(len(layer_names)) for oi in range(1, len(options))]
    for layer_index, option_index in tqdm(pairs, desc="sensitivity", disable=not study.progress):
        name = layer_names[layer_index]
        top1, soft = accuracies(_swap_layer(models[0], models[option_index], name), split)
        top1_drops[layer_index, option_index] = reference[0] - top1
        # The larger of the two drops: top-1 alone is blind to damage that flips no
        # prediction yet, and such damage adds up across layers.
        drops[layer_index, option_index] = max(reference[0] - top1, reference[1] - soft)
    return SearchTables(
        key, reference[0], sensitivity, energies, fixed_energy, drops, top1_drops, uniform_top1
    )


def tables_key(
    study: Study, spec: SearchSpec, options: Sequence[Option], layer_names: Sequence[str]
) -> str:
    """sha256 (hex) of what shapes the tables (see the module docstring)."""
    measured = {k: v for k, v in dataclasses.asdict(spec).items() if k not in NOT_IN_TABLES_KEY}
    return digest(
        {
            "tables_version": TABLES_VERSION,
            "search": measured,
            "options": [steps_record(uniform_variant(o, spec, layer_names)) for o in options],
            "layers": list(layer_names),
            **study.key_material(),
        }
    )


def cached_tables(
    study: Study,
    spec: SearchSpec,
    options: Sequence[Option],
    layer_names: Sequence[str],
    force: bool,
    jobs: int = 1,
) -> SearchTables:
    """:func:`measure_tables`, stored in OUT/search/tables-<key>.json (atomically, with its
    sha256), so a re-run with other constraints reuses the measurements. A stored file that
    does not verify is measured again, with a one-line warning."""
    key = tables_key(study, spec, options, layer_names)
    path = study.out / "search" / f"tables-{key[:12]}.json"
    shape = (len(layer_names), len(options))
    if path.exists() and not force:
        try:
            data = read_json_verified(path)
            if not isinstance(data, dict) or data.get("key") != key:
                raise ResultError("it was stored under another key")
            return SearchTables.from_json(data, shape)
        except ResultError as reason:
            print(f"codesign: warning: {path}: {reason}; measuring again", file=sys.stderr)
    tables = measure_tables(study, spec, options, layer_names, key, force=force, jobs=jobs)
    # Read back what was written, so fresh and cached tables are the same values.
    return SearchTables.from_json(write_json_verified(path, tables.to_json()), shape)
