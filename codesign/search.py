"""Hardware-aware co-design search: per-layer widths and sparsity from measured sensitivity
and simulated per-layer energy, verified by building and evaluating the chosen models.

1. Options. Every searchable layer (all Conv2d/Linear but the ``keep_8bit`` ones, which stay
   W8A8 and dense) may take any (weight bits, act bits, sparsity) of the recipe's ``[search]``.
   The reference option is W8A8 dense.
2. Uniform models. For each option one model has every searchable layer at that option
   (pruned one-shot, then PTQ-calibrated exactly as a recipe variant). Capturing its real
   tensors and simulating them on the search datapath gives each layer's energy under that
   option: the per-layer energy table.
3. Sensitivity. For each layer and option, the reference model with only that layer swapped
   for its twin from the option's uniform model is scored on validation images (held out of
   calibration and training; the test split never steers the choice): accuracy drop in
   points.
4. Choice. Predicted accuracy = reference accuracy - sum of per-layer drops (each change
   charged at least one sensitivity image, see :func:`charged_drops`),
   predicted energy = sum of per-layer energies. A multiple-choice knapsack solved by dynamic
   programming over the discretised drop gives, for every drop level, the cheapest assignment:
   the searched front. The constraint (``energy_budget_uj`` or ``accuracy_floor``, a
   validation top-1) picks one.
5. Verification. The picked configuration and others spread along the front become ordinary
   recipe variants (per-layer overrides), built, fine-tuned where ``[search.finetune]`` says,
   quantization-aware trained where ``[search.qat]`` says (masks kept), evaluated on the
   validation split (which decides whether a build meets the constraint) and on the test
   split (only reported), and simulated like any variant; the report shows them beside the
   recipe's uniform variants, with the ones each dominates on the same datapath.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import inspect
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from codesign.config import LayerOverride, QuantSpec, SparsitySpec
from codesign.data.datasets import Split
from codesign.data.subsets import SubsetInfo
from codesign.errors import ConfigError
from codesign.experiment import Study, build_variant, run_variant
from codesign.hw import capture
from codesign.io import write_json_atomic
from codesign.recipe import SearchSpec, VariantSpec, digest
from codesign.report.pareto import dominates

DROP_STEP = 0.01  # points of accuracy per DP bin
MAX_DROP = 30.0  # points; assignments predicted to lose more are not considered


@dataclasses.dataclass(frozen=True)
class Option:
    """One per-layer choice."""

    weight_bits: int
    act_bits: int
    sparsity: str  # "dense", "2:4", or an unstructured level such as "0.5"

    @property
    def label(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}" + (
            "" if self.sparsity == "dense" else f"+{self.sparsity}"
        )


def options_of(spec: SearchSpec) -> list[Option]:
    """Every (weight bits, act bits, sparsity) combination; the reference W8A8 dense first."""
    combos = [
        Option(w, a, s)
        for w, a, s in itertools.product(
            sorted(set(spec.weight_bits), reverse=True),
            sorted(set(spec.act_bits), reverse=True),
            spec.sparsity,
        )
    ]
    reference = Option(8, 8, "dense")
    return [reference] + [o for o in combos if o != reference]


def option_variant(option: Option, spec: SearchSpec, name: str) -> VariantSpec:
    """The uniform variant with every searchable layer at ``option``."""
    sparsity = None
    if option.sparsity != "dense":
        sparsity = SparsitySpec(sparsity=option.sparsity, method=spec.prune_method)
    return VariantSpec(
        name=name,
        sparsity=sparsity,
        quant=QuantSpec(
            weight_bits=option.weight_bits, act_bits=option.act_bits, keep_8bit=spec.keep_8bit
        ),
    )


def configuration_variant(
    name: str,
    layer_names: Sequence[str],
    choices: Sequence[Option],
    spec: SearchSpec,
) -> VariantSpec:
    """A mixed configuration as one recipe variant: per-layer overrides (exact names)."""
    quant_overrides = tuple(
        LayerOverride(layer, weight_bits=o.weight_bits, act_bits=o.act_bits)
        for layer, o in zip(layer_names, choices, strict=True)
    )
    sparse = [(layer, o.sparsity) for layer, o in zip(layer_names, choices, strict=True)]
    patterns = sorted({s for _, s in sparse if s != "dense"})
    sparsity = None
    if patterns:
        sparsity = SparsitySpec(
            sparsity=patterns[0],
            overrides=tuple(LayerOverride(layer, sparsity=s) for layer, s in sparse),
            method=spec.prune_method,
        )
    return VariantSpec(
        name=name,
        sparsity=sparsity,
        finetune=spec.finetune if sparsity is not None else None,
        quant=QuantSpec(
            weight_bits=8, act_bits=8, keep_8bit=spec.keep_8bit, overrides=quant_overrides
        ),
        qat=spec.qat,
    )


def searchable_layers(model: nn.Module, spec: SearchSpec) -> list[str]:
    """Conv2d/Linear names the search may change (all but the keep_8bit ones)."""
    from codesign.quant.ptq import keep_8bit_patterns

    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept = {
        name
        for pattern in keep_8bit_patterns(spec.keep_8bit, names)
        for name in names
        if fnmatch.fnmatchcase(name, pattern.pattern)
    }
    return [n for n in names if n not in kept]


def sensitivity_split(study: Study, samples: int) -> tuple[Split, SubsetInfo]:
    """``samples`` validation images, class-stratified (never training or test images)."""
    return study.dataset.sensitivity_set(samples)


def solve_front(
    drops: np.ndarray, energies: np.ndarray, step: float = DROP_STEP, max_drop: float = MAX_DROP
) -> list[tuple[float, float, list[int]]]:
    """Multiple-choice knapsack: for every total drop, the cheapest per-layer assignment.

    ``drops`` and ``energies`` are [layers, options] (points, uJ). Returns the Pareto front as
    (predicted drop, predicted energy, option index per layer), by rising drop.

    >>> front = solve_front(np.array([[0.0, 1.0], [0.0, 0.5]]), np.array([[2.0, 1.0], [2.0, 1.5]]))
    >>> [(round(d, 2), e, c) for d, e, c in front]
    [(0.0, 4.0, [0, 0]), (0.5, 3.5, [0, 1]), (1.0, 3.0, [1, 0]), (1.5, 2.5, [1, 1])]
    """
    layers, options = drops.shape
    bins = round(max_drop / step) + 1
    cost = np.rint(np.clip(drops, 0.0, None) / step).astype(np.int64)
    best = np.full(bins, np.inf)
    best[0] = 0.0
    choice = np.zeros((layers, bins), dtype=np.int64)
    for layer in range(layers):  # layers x options array shifts; no loop over data
        candidates = np.full((options, bins), np.inf)
        for option in range(options):
            shift = cost[layer, option]
            if shift < bins:
                candidates[option, shift:] = best[: bins - shift] + energies[layer, option]
        choice[layer] = candidates.argmin(axis=0)
        best = candidates.min(axis=0)
    front = []
    cheapest = np.inf
    for level in range(bins):
        if best[level] < cheapest - 1e-12:
            cheapest = best[level]
            picks, remaining = [], level
            for layer in range(layers - 1, -1, -1):
                option = int(choice[layer, remaining])
                picks.append(option)
                remaining -= int(cost[layer, option])
            front.append((level * step, float(best[level]), picks[::-1]))
    return front


def charged_drops(drops: np.ndarray, samples: int) -> np.ndarray:
    """The per-layer drops (points, [layers, options], reference option first) that the choice
    charges: every option but the reference costs at least one sensitivity image, 100 /
    ``samples`` points.

    A drop measured as 0 (or below) on ``samples`` images only says the real drop is under
    about one image. Charging nothing for it made such changes free, so the knapsack took all
    of them at once, while small real drops add up. It matters where nearly every sensitivity
    image is classified right, as on images the checkpoint was trained on.

    >>> charged_drops(np.array([[0.0, -0.1, 0.3]]), samples=1000).tolist()
    [[0.0, 0.1, 0.3]]
    """
    charged = np.maximum(drops, 100.0 / samples)
    charged[:, 0] = 0.0
    return charged


def _swap_layer(reference: nn.Module, donor: nn.Module, name: str) -> nn.Module:
    model = copy.deepcopy(reference)
    model.set_submodule(name, copy.deepcopy(donor.get_submodule(name)))
    return model


def measure_tables(
    study: Study, spec: SearchSpec, options: Sequence[Option], layer_names: Sequence[str]
) -> dict[str, Any]:
    """Per-layer energy (uJ per inference) and accuracy drop (points) of every option."""
    datapath = next((d for d in study.datapaths if d.name == spec.datapath), None)
    if datapath is None:
        raise ConfigError(
            f"search.datapath {spec.datapath!r} is not in hardware.archs "
            f"({', '.join(d.name for d in study.datapaths)})"
        )
    split, sensitivity = sensitivity_split(study, spec.sensitivity_samples)
    captured, _ = study.dataset.capture_set(study.recipe.data.capture_samples)
    from codesign.data import make_forward_loop

    models, energy_rows, fixed_energy = [], [], 0.0
    for index, option in enumerate(
        tqdm(options, desc="uniform models", disable=not study.progress)
    ):
        model, _ = build_variant(study, option_variant(option, spec, option.label))
        records = capture(model, make_forward_loop(captured, 64))
        per_layer = datapath.simulate(records).layer_energy_uj_per_inference
        energy_rows.append([per_layer[name] for name in layer_names])
        if index == 0:
            fixed_energy = sum(v for k, v in per_layer.items() if k not in layer_names)
        models.append(model)
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
    return {
        "reference_top1": reference[0],
        "sensitivity_subset": sensitivity.to_dict(),
        "layer_energy_uj_per_inference": np.array(energy_rows).T,  # [layers, options]
        "fixed_energy_uj_per_inference": fixed_energy,
        "drops": drops,
        "top1_drops": top1_drops,
    }


def accuracies(model: nn.Module, split: Split, batch_size: int = 512) -> tuple[float, float]:
    """(top-1 %, soft accuracy %): the soft one is the mean probability given to the true
    class, a smooth measure in the same units that moves before predictions flip."""
    from codesign.data.loops import batches

    model.eval()
    correct, soft = 0, 0.0
    with torch.no_grad():
        for images, labels in batches(split, batch_size):
            logits = model(images)
            correct += int((logits.argmax(1) == labels).sum())
            soft += float(logits.softmax(1).gather(1, labels[:, None]).sum())
    return 100.0 * correct / len(split), 100.0 * soft / len(split)


def cached_tables(
    study: Study,
    spec: SearchSpec,
    options: Sequence[Option],
    layer_names: Sequence[str],
    force: bool,
) -> dict[str, Any]:
    """:func:`measure_tables`, stored in OUT/search/tables-<key>.json (atomically), so a
    re-run with other constraints reuses the measurements."""
    measuring_code = "".join(
        inspect.getsource(f)
        for f in (
            options_of,
            option_variant,
            searchable_layers,
            sensitivity_split,
            measure_tables,
            _swap_layer,
            accuracies,
        )
    )
    # How configurations are verified (verify, finetune, qat) does not change the tables.
    measured = {
        k: v for k, v in dataclasses.asdict(spec).items() if k not in ("verify", "finetune", "qat")
    }
    key = digest({"search": measured, "measuring_code": measuring_code} | study.key_material())[:12]
    path = study.out / "search" / f"tables-{key}.json"
    if path.is_file() and not force:
        data = json.loads(path.read_text())
    else:
        tables = measure_tables(study, spec, options, layer_names)
        data = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in tables.items()}
        write_json_atomic(path, data)
        data = json.loads(path.read_text())
    for key in ("layer_energy_uj_per_inference", "drops"):
        data[key] = np.array(data[key], dtype=float)
    return data


def first_guess(
    front: Sequence[tuple[float, float, list[int]]],
    reference_top1: float,
    fixed_energy: float,
    energy_budget_uj: float | None,
    accuracy_floor: float | None,
) -> int:
    """Index into ``front`` of the predicted answer: the smallest drop within the energy
    budget, or the cheapest assignment predicted to keep the accuracy floor."""
    if (energy_budget_uj is None) == (accuracy_floor is None):
        raise ConfigError("give exactly one of --energy-budget-uj and --accuracy-floor")
    if energy_budget_uj is not None:
        feasible = [i for i, (_, e, _) in enumerate(front) if e + fixed_energy <= energy_budget_uj]
        if not feasible:
            cheapest = front[-1][1] + fixed_energy
            raise ConfigError(
                f"no configuration fits {energy_budget_uj} uJ per inference; the cheapest "
                f"predicted is {cheapest:.4g} uJ: raise --energy-budget-uj"
            )
        return feasible[0]
    feasible = [i for i, (d, _, _) in enumerate(front) if reference_top1 - d >= accuracy_floor]
    if not feasible:
        raise ConfigError(
            f"no configuration is predicted to keep {accuracy_floor} % (reference "
            f"{reference_top1:.2f} % on the validation split): lower --accuracy-floor"
        )
    return feasible[-1]


def feasible_span(
    front: Sequence[tuple[float, float, list[int]]], chosen: int, accuracy_floor: float | None
) -> range:
    """Front indices on the constraint's side of the verified ``chosen`` one: under an energy
    budget the cheaper assignments (up to the front's end), under an accuracy floor the
    predicted-safer ones (down to the reference, index 0)."""
    if accuracy_floor is None:
        return range(chosen, len(front))
    return range(chosen, -1, -1)


def spread_along_front(front: Sequence[tuple[float, float, list[int]]], span: range) -> list[int]:
    """Indices of ``span`` in the order to verify them: the far end first, then repeatedly the
    one whose predicted energy (uJ) is farthest from every index already picked, so any number
    of builds covers the span's energy range evenly. ``span[0]`` counts as picked.

    >>> front = [(0.0, e, []) for e in (10.0, 9.0, 8.0, 7.0, 6.0, 5.0)]
    >>> spread_along_front(front, range(1, 6))
    [5, 3, 2, 4]
    """
    if len(span) < 2:
        return []
    energies = np.array([front[i][1] for i in span])
    order: list[int] = []
    distance = np.abs(energies - energies[0])  # to the nearest picked index
    while len(order) < len(span) - 1:
        far = int(distance.argmax())
        if distance[far] <= 0.0:
            break  # the rest repeat a picked energy
        order.append(span[far])
        distance = np.minimum(distance, np.abs(energies - energies[far]))
    return order


def run_search(
    study: Study,
    uniform: Sequence[dict[str, Any]],
    *,
    energy_budget_uj: float | None = None,
    accuracy_floor: float | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Measure, solve, verify. ``uniform`` are the recipe's scored variants, against which
    every verified configuration is compared on the search datapath.

    Returns the ``results.json["search"]`` dict: objective, datapath, the predicted front,
    and the verified configurations (scored like recipe variants, plus their per-layer
    choices, predictions and the variants they dominate).
    """
    spec = study.recipe.search or SearchSpec()
    torch.manual_seed(study.recipe.seed)
    options = options_of(spec)
    layer_names = searchable_layers(study.float_model, spec)
    tables = cached_tables(study, spec, options, layer_names, force)
    drops = charged_drops(tables["drops"], spec.sensitivity_samples)
    front = solve_front(drops, tables["layer_energy_uj_per_inference"])
    # Drops are measured on the sensitivity images; predictions start from the reference
    # assignment's top-1 on the whole validation split, the figure a build is judged by.
    reference = run_variant(
        study, option_variant(options[0], spec, "search-reference-w8a8"), force=force
    )
    base_top1 = float(reference["val_top1"])
    fixed_energy = tables["fixed_energy_uj_per_inference"]
    guess = first_guess(front, base_top1, fixed_energy, energy_budget_uj, accuracy_floor)
    verified: dict[int, dict[str, Any]] = {}

    def verify(index: int) -> dict[str, Any]:
        if index not in verified:
            drop, energy, picks = front[index]
            choices = [options[i] for i in picks]
            variant = configuration_variant(f"search-{index}", layer_names, choices, spec)
            scored = run_variant(study, variant, force=force)
            verified[index] = {
                **scored,
                "predicted_top1": base_top1 - drop,
                "predicted_energy_uj_per_inference": energy + fixed_energy,
                "choices": [
                    {
                        "name": n,
                        "weight_bits": o.weight_bits,
                        "act_bits": o.act_bits,
                        "sparsity": o.sparsity,
                    }
                    for n, o in zip(layer_names, choices, strict=True)
                ],
            }
        return verified[index]

    def meets(index: int) -> bool:
        result = verify(index)
        if accuracy_floor is not None:
            return result["val_top1"] >= accuracy_floor
        return result["datapaths"][spec.datapath]["energy_uj_per_inference"] <= energy_budget_uj

    # Layer drops do not add up exactly (one-shot pruning of many layers hurts more than the
    # sum), so the prediction is checked by building the model, and corrected by bisection
    # along the front towards the safe end (index 0, the reference) within `verify` builds.
    chosen = None
    if accuracy_floor is not None:
        low, high = 0, guess  # low: the safe end, never worse than the reference assignment
        if meets(guess):
            chosen = guess
        while chosen is None and len(verified) < spec.verify and high - low > 1:
            middle = (low + high) // 2
            if meets(middle):
                low = middle
            else:
                high = middle
        if chosen is None:
            passing = [i for i in verified if meets(i)]
            chosen = max(passing) if passing else None
    else:
        index = guess
        while len(verified) < spec.verify and index < len(front):
            if meets(index):  # the prediction can miss: step to cheaper assignments
                chosen = index
                break
            index += 1
    if chosen is not None:
        # The builds left over verify the rest of the front the constraint allows, so the
        # report shows a measured front rather than one point.
        for index in spread_along_front(front, feasible_span(front, chosen, accuracy_floor)):
            if len(verified) >= spec.verify:
                break
            verify(index)
    for index, result in verified.items():
        on_datapath = result["datapaths"][spec.datapath]
        result["dominates"] = [
            u["variant"]
            for u in uniform
            if dominates(
                (on_datapath["energy_uj_per_inference"], result["top1"]),
                (u["datapaths"][spec.datapath]["energy_uj_per_inference"], u["top1"]),
            )
        ]
        result["chosen"] = index == chosen
        result["meets_constraint"] = meets(index)
    objective = (
        f"minimise predicted accuracy drop within {energy_budget_uj} uJ per inference"
        if energy_budget_uj is not None
        else f"minimise energy keeping predicted top-1 >= {accuracy_floor} %"
    )
    return {
        "objective": objective,
        "datapath": spec.datapath,
        "sensitivity_samples": spec.sensitivity_samples,
        "subsets": {
            "validation": study.dataset.validation_info.to_dict(),
            "sensitivity": tables["sensitivity_subset"],
        },
        "reference_top1_sensitivity": tables["reference_top1"],
        "reference_val_top1": base_top1,
        "options": [o.label for o in options],
        "layers": list(layer_names),
        "sensitivity_drop_points": tables["drops"].round(4).tolist(),
        "layer_energy_uj_per_inference": tables["layer_energy_uj_per_inference"].tolist(),
        "front": [
            {
                "predicted_top1": base_top1 - d,
                "predicted_energy_uj_per_inference": e + fixed_energy,
                "choices": [options[i].label for i in p],
            }
            for d, e, p in front
        ],
        "chosen": f"search-{chosen}" if chosen is not None else None,
        "verified": [verified[i] for i in sorted(verified)],
    }
