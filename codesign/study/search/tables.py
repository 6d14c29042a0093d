"""The search's measurements: per-layer energy of every option (uniform models, captured and
simulated) and per-layer accuracy drop (single-layer swaps scored on validation images),
cached in ``OUT/search/tables-<key>.json``.

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
from codesign.recipe import SearchSpec, digest
from codesign.study.keys import steps_record
from codesign.study.search.options import Option, option_variant
from codesign.study.study import Study
from codesign.study.variants import CAPTURE_BATCH, build_variant

TABLES_VERSION = 1

# How configurations are verified (verify, finetune, qat) does not change the tables.
NOT_IN_TABLES_KEY = ("verify", "finetune", "qat")


@dataclasses.dataclass(frozen=True, eq=False)
class SearchTables:
    """``reference_top1``: the reference option's top-1 (%) on the sensitivity images.
    ``layer_energy_uj_per_inference``: [layers, options]; ``fixed_energy_uj_per_inference``:
    the layers outside the search, under the reference option. ``drops``: [layers, options],
    points, the larger of the top-1 and soft-accuracy drops (the reference column is 0);
    ``top1_drops``: the top-1 part alone."""

    key: str
    reference_top1: float
    sensitivity_subset: SubsetInfo
    layer_energy_uj_per_inference: np.ndarray
    fixed_energy_uj_per_inference: float
    drops: np.ndarray
    top1_drops: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "reference_top1": self.reference_top1,
            "sensitivity_subset": self.sensitivity_subset.to_dict(),
            "layer_energy_uj_per_inference": self.layer_energy_uj_per_inference.tolist(),
            "fixed_energy_uj_per_inference": self.fixed_energy_uj_per_inference,
            "drops": self.drops.tolist(),
            "top1_drops": self.top1_drops.tolist(),
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
            tables = cls(**{**data, **arrays, "sensitivity_subset": subset})
        except (CodesignError, TypeError, ValueError) as exc:
            raise ResultError(f"search tables: {exc}") from None
        if any(a.shape != shape for a in arrays.values()):
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


def _uniform_models(
    study: Study, spec: SearchSpec, options: Sequence[Option], layer_names: Sequence[str]
) -> tuple[list[nn.Module], np.ndarray, float]:
    """One model per option with every searchable layer at it, and from its capture the
    per-layer energy table [layers, options] (uJ per inference) and the fixed energy of the
    layers outside the search (under the reference option)."""
    datapath = study.datapath(spec.datapath, "search.datapath")
    captured, _ = study.dataset.capture_set(study.recipe.data.capture_samples)
    models, energy_rows, fixed_energy = [], [], 0.0
    bar = tqdm(options, desc="uniform models", disable=not study.progress)
    for index, option in enumerate(bar):
        model, _ = build_variant(study, option_variant(option, spec, option.label))
        records = capture(model, make_forward_loop(captured, CAPTURE_BATCH))
        per_layer = datapath.simulate(records).layer_energy_uj_per_inference
        energy_rows.append([per_layer[name] for name in layer_names])
        if index == 0:
            fixed_energy = sum(v for k, v in per_layer.items() if k not in layer_names)
        models.append(model)
    return models, np.array(energy_rows).T, fixed_energy


def measure_tables(
    study: Study,
    spec: SearchSpec,
    options: Sequence[Option],
    layer_names: Sequence[str],
    key: str = "",
) -> SearchTables:
    """Per-layer energy (uJ per inference) and accuracy drop (points) of every option."""
    # Checked before the slow part: the sensitivity images come from the validation split.
    study.datapath(spec.datapath, "search.datapath")
    split, sensitivity = study.dataset.sensitivity_set(spec.sensitivity_samples)
    models, energies, fixed_energy = _uniform_models(study, spec, options, layer_names)
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
    return SearchTables(key, reference[0], sensitivity, energies, fixed_energy, drops, top1_drops)


def tables_key(
    study: Study, spec: SearchSpec, options: Sequence[Option], layer_names: Sequence[str]
) -> str:
    """sha256 (hex) of what shapes the tables (see the module docstring)."""
    measured = {k: v for k, v in dataclasses.asdict(spec).items() if k not in NOT_IN_TABLES_KEY}
    return digest(
        {
            "tables_version": TABLES_VERSION,
            "search": measured,
            "options": [steps_record(option_variant(o, spec, o.label)) for o in options],
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
    tables = measure_tables(study, spec, options, layer_names, key)
    # Read back what was written, so fresh and cached tables are the same values.
    return SearchTables.from_json(write_json_verified(path, tables.to_json()), shape)
