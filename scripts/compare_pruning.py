"""Our pruning beside ``torch.nn.utils.prune`` (global L1 unstructured) at the same budgets.

For every budget both methods prune the SAME layers (the ones our spec selects: by default every
conv but the first; the classifier stays dense) to the same sparsity, on the same schedule, and
get the same fine-tuning (``codesign.train.train``, distillation from the dense model). Only
the choice of which weights to remove differs:

- ours: the spec (2:4, layer-wise, global or LAMP magnitude, or SparseGPT), via
  ``codesign.sparsity``;
- torch: ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured)`` over those layers;
  under the cubic schedule it is applied iteratively (its PruningContainer prunes an integer
  number of the still unpruned weights at each update).

The fine-tuning defaults are `codesign prune`'s (``DEFAULT_FINETUNE``). A `codesign prune`
run can stand in for our side of a budget (``--ours-from 0.5=DIR``: its ``DIR/result.json``,
whose spec must be that budget's, else it is an error); the torch side then gets the
fine-tuning and cubic timing that run recorded, which halves the cost.

Cost: one fine-tuning run per side and budget (the torch run of 2:4 and of 50 % one-shot is
shared when their fine-tuning is the same): about ten 3-epoch ResNet-20 fine-tunings for the
default budgets.

Usage:

    python scripts/compare_pruning.py --out compare.json
    python scripts/compare_pruning.py --budgets 2:4 0.5 --epochs 1     # a quick look
    python scripts/compare_pruning.py --budgets 0.5 --ours-from 0.5=runs/l50
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from codesign.config import DEFAULT_CALIB_SAMPLES, DEFAULT_FINETUNE, SparsitySpec, TrainSpec
from codesign.data import Dataset, evaluate, load_dataset, make_forward_loop
from codesign.models import create_model, extract_state_dict, load_state_into
from codesign.sparsity import sparsity_report, weight_masks
from codesign.sparsity.apply import prune_model_
from codesign.sparsity.finetune import (
    CubicTiming,
    finetune_pruned,
    make_schedule,
)
from codesign.train import train

SHARED = Path("/work/shared")


@dataclasses.dataclass(frozen=True)
class Budget:
    label: str
    spec: SparsitySpec


BUDGETS = {
    "2:4": Budget("2:4 one-shot", SparsitySpec("2:4")),
    # Pool & Yu 2021 channel permutations before 2:4 (torch's side is the same 50 %).
    "2:4p": Budget("2:4 one-shot, permuted", SparsitySpec("2:4", permute=True)),
    # SparseGPT (Frantar & Alistarh 2023): masks by output error, kept weights repaired.
    "2:4sgpt": Budget("2:4 SparseGPT one-shot", SparsitySpec("2:4", method="sparsegpt")),
    "0.5sgpt": Budget("50 % SparseGPT one-shot", SparsitySpec("0.5", method="sparsegpt")),
    "0.5": Budget("50 % layer one-shot", SparsitySpec("0.5", scope="layer")),
    "0.7": Budget("70 % layer cubic", SparsitySpec("0.7", scope="layer", schedule="cubic")),
    "0.9": Budget("90 % global cubic", SparsitySpec("0.9", scope="global", schedule="cubic")),
    # Like-for-like rows: our global scope is the same criterion as torch's global L1.
    "0.5g": Budget("50 % global one-shot", SparsitySpec("0.5", scope="global")),
    "0.7g": Budget("70 % global cubic", SparsitySpec("0.7", scope="global", schedule="cubic")),
    # LAMP (Lee et al. 2021): one threshold on per-layer normalised magnitudes.
    "0.7lamp": Budget("70 % LAMP cubic", SparsitySpec("0.7", scope="lamp", schedule="cubic")),
    "0.9lamp": Budget("90 % LAMP cubic", SparsitySpec("0.9", scope="lamp", schedule="cubic")),
}
# The acceptance budgets (2:4 one-shot, 50 % layer one-shot, 70 % cubic, 90 % global cubic),
# each with our best method for it: SparseGPT for 2:4, LAMP for 70 % (README "Pruning figures").
DEFAULT_BUDGETS = ["2:4sgpt", "0.5", "0.7lamp", "0.9"]


def load_dense(checkpoint: Path) -> nn.Module:
    model = create_model("resnet20")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    load_state_into(model, extract_state_dict(raw), str(checkpoint))
    return model.eval()


def run_ours(
    dense: nn.Module, budget: Budget, data: Dataset, train_spec: TrainSpec, timing: CubicTiming
) -> dict:
    model = copy.deepcopy(dense)
    prune_model_(model, budget.spec, make_forward_loop(data.train, 256, DEFAULT_CALIB_SAMPLES))
    one_shot = evaluate(model, data.test)["top1"]
    result = finetune_pruned(
        model,
        budget.spec,
        data,
        train_spec,
        teacher=copy.deepcopy(dense),
        timing=timing,
        progress=False,
    )
    report = sparsity_report(model)
    return {
        "layers": sorted(weight_masks(model)),
        "one_shot_top1": one_shot,
        "top1": evaluate(model, data.test)["top1"],
        "sparsity": report["pruned_sparsity"],
        "train_seconds": result["train_seconds"],
    }


def _saved_spec_matches(saved: dict, budget: Budget) -> bool:
    """Whether a saved `codesign prune` result was made with ``budget.spec``.

    Results written before ``spec`` was recorded are accepted for N:M budgets only, when every
    pruned layer carries ``budget``'s pattern (an N:M spec has no scope, and no schedule to ramp).
    """
    if "spec" in saved:
        # The cubic timing is the run's to choose (the torch side then gets the same).
        timing = ("prune_start", "prune_end", "prune_updates")
        wanted = {k: v for k, v in budget.spec.to_dict().items() if k not in timing}
        return {k: v for k, v in saved["spec"].items() if k not in timing} == wanted
    patterns = {row["pattern"] for row in saved["layers"] if row["pattern"] != "dense"}
    return ":" in budget.spec.sparsity and patterns == {budget.spec.sparsity}


def load_ours(directory: Path, budget: Budget) -> tuple[dict, TrainSpec, CubicTiming]:
    """Our row from a `codesign prune --out DIR` run, with the fine-tuning and cubic timing it
    used (the torch side then gets exactly those)."""
    saved = json.loads((directory / "result.json").read_text())
    if not _saved_spec_matches(saved, budget):
        raise SystemExit(
            f"{directory}/result.json was not made with {budget.spec.to_dict()} "
            f"(it has {saved.get('spec')}): re-run `codesign prune` or drop --ours-from"
        )
    if "train" not in saved:
        raise SystemExit(
            f"{directory}/result.json has no fine-tuning (--epochs 0): nothing to compare"
        )
    row = {
        "layers": [row["name"] for row in saved["layers"] if row["pattern"] != "dense"],
        "one_shot_top1": saved["oneshot_top1"],
        "top1": saved["pruned_top1"],
        "sparsity": saved["pruned_sparsity"],
        "train_seconds": saved["train_seconds"],
        "from": str(directory),
    }
    # Results written before ``spec`` was recorded are N:M runs: no schedule to time.
    spec = SparsitySpec.from_dict(saved["spec"]) if "spec" in saved else budget.spec
    timing = CubicTiming(
        start_fraction=spec.prune_start,
        end_fraction=spec.prune_end,
        updates_per_epoch=spec.prune_updates,
    )
    return row, TrainSpec.from_dict(saved["train"]), timing


def _torch_sparsity(modules: list[nn.Module]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / sum(m.weight.numel() for m in modules)


def _torch_level_spec(budget: Budget) -> SparsitySpec:
    """The level and schedule torch prunes to: ours, with N:M as its unstructured equivalent
    (torch's global L1 has no channel permutation and no SparseGPT: those are ours only)."""
    spec = dataclasses.replace(budget.spec, method="magnitude", permute=False)
    if ":" not in spec.sparsity:
        return dataclasses.replace(spec, scope="global")
    n, m = (int(v) for v in spec.sparsity.split(":"))
    return dataclasses.replace(spec, sparsity=str(1 - n / m), scope="global", schedule="oneshot")


def run_torch(
    dense: nn.Module,
    budget: Budget,
    layers: list[str],
    data: Dataset,
    train_spec: TrainSpec,
    timing: CubicTiming,
) -> dict:
    """Global L1 unstructured over ``layers`` to ``budget``'s sparsity, same schedule/fine-tune."""
    model = copy.deepcopy(dense)
    modules = [model.get_submodule(name) for name in layers]
    targets = [(m, "weight") for m in modules]
    total = sum(m.weight.numel() for m in modules)
    steps_per_epoch = max(1, math.ceil(len(data.train) / train_spec.batch_size))
    level_spec = _torch_level_spec(budget)
    schedule = make_schedule(level_spec, steps_per_epoch, train_spec.epochs, timing)

    def prune_to(level: float) -> None:
        already = round(_torch_sparsity(modules) * total)
        extra = round(level * total) - already
        if extra > 0:
            torch_prune.global_unstructured(targets, torch_prune.L1Unstructured, amount=extra)

    prune_to(schedule.final_sparsity)
    one_shot = evaluate(model, data.test)["top1"]
    if schedule.sparsity_at(0) < schedule.final_sparsity:
        # Gradual: start again from the dense weights and follow the schedule.
        model = copy.deepcopy(dense)
        modules = [model.get_submodule(name) for name in layers]
        targets = [(m, "weight") for m in modules]
        prune_to(schedule.sparsity_at(0))

    def on_step(step: int) -> None:
        if schedule.update_due_at(step):
            prune_to(schedule.sparsity_at(step))

    result = train(
        model, data, train_spec, teacher=copy.deepcopy(dense), on_step=on_step, progress=False
    )
    prune_to(schedule.final_sparsity)
    return {
        "one_shot_top1": one_shot,
        "top1": evaluate(model, data.test)["top1"],
        "sparsity": _torch_sparsity(modules),
        "train_seconds": result["train_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budgets", nargs="+", default=DEFAULT_BUDGETS, choices=list(BUDGETS))
    parser.add_argument(
        "--checkpoint", type=Path, default=SHARED / "checkpoints/resnet20-cifar10-idelbayev.th"
    )
    parser.add_argument("--data", default=f"imagefolder:{SHARED / 'data/cifar10-subset'}")
    ft = DEFAULT_FINETUNE
    parser.add_argument("--epochs", type=int, default=ft.epochs)
    parser.add_argument("--lr", type=float, default=ft.lr)
    parser.add_argument(
        "--temperature", type=float, default=ft.distill_temperature, help="distillation T (0: off)"
    )
    parser.add_argument("--distill-weight", type=float, default=ft.distill_weight)
    parser.add_argument(
        "--ours-from",
        nargs="*",
        default=[],
        metavar="BUDGET=DIR",
        help="reuse `codesign prune --out DIR` runs for our side of these budgets",
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.ours_from)
    unknown = set(reuse) - set(args.budgets)
    if unknown:
        parser.error(f"--ours-from names budgets not compared: {sorted(unknown)}")

    data = load_dataset(args.data)
    dense = load_dense(args.checkpoint)
    fp32 = evaluate(dense, data.test)["top1"]
    train_spec = dataclasses.replace(
        ft,
        epochs=args.epochs,
        lr=args.lr,
        distill_temperature=args.temperature,
        distill_weight=args.distill_weight,
    )
    rows = []
    torch_runs: dict[str, dict] = {}  # identical torch runs (e.g. 2:4 and 50 % one-shot) run once
    started = time.perf_counter()
    for key in args.budgets:
        budget = BUDGETS[key]
        tuning, timing = train_spec, CubicTiming()
        if key in reuse:
            ours, tuning, timing = load_ours(Path(reuse[key]), budget)
        else:
            ours = run_ours(dense, budget, data, tuning, timing)
        layers = ours.pop("layers")
        torch_key = json.dumps(
            [
                layers,
                _torch_level_spec(budget).to_dict(),
                tuning.to_dict(),
                dataclasses.asdict(timing),
            ]
        )
        if torch_key not in torch_runs:
            torch_runs[torch_key] = run_torch(dense, budget, layers, data, tuning, timing)
        theirs = torch_runs[torch_key]
        rows.append(
            {"budget": budget.label, "epochs": tuning.epochs, "ours": ours, "torch": theirs}
        )
        print(
            f"[{time.perf_counter() - started:6.0f} s] {budget.label}: ours {ours['top1']:.2f} "
            f"torch {theirs['top1']:.2f}",
            flush=True,
        )

    print(
        f"\nResNet-20, fp32 {fp32:.2f} %; fine-tuning (both sides): lr {args.lr}, distillation "
        f"T={args.temperature} weight {args.distill_weight} unless reused runs say otherwise; "
        f"top-1 on {args.data} test split\n"
    )
    print(
        "| budget | epochs | sparsity ours / torch | one-shot ours / torch | fine-tuned ours | "
        "fine-tuned torch | ours >= torch | train s ours / torch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        o, t = row["ours"], row["torch"]
        print(
            f"| {row['budget']} | {row['epochs']} | {o['sparsity']:.3f} / {t['sparsity']:.3f} | "
            f"{o['one_shot_top1']:.2f} / {t['one_shot_top1']:.2f} | {o['top1']:.2f} | "
            f"{t['top1']:.2f} | {'yes' if o['top1'] >= t['top1'] else 'NO'} | "
            f"{o['train_seconds']:.0f} / {t['train_seconds']:.0f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "fp32_top1": fp32,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
