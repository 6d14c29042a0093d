"""Our pruning beside ``torch.nn.utils.prune`` (global L1 unstructured) at the same budgets.

For every budget both methods prune the SAME layers (the ones our spec selects: by default every
conv but the first; the classifier stays dense) to the same sparsity, on the same schedule, and
get the same fine-tuning (``codesign.train.train``, distillation from the dense model). Only
the choice of which weights to remove differs:

- ours: the spec (2:4, layer-wise or global magnitude), via ``codesign.sparsity``;
- torch: ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured)`` over those layers;
  under the cubic schedule it is applied iteratively (its PruningContainer prunes an integer
  number of the still unpruned weights at each update).

The fine-tuning defaults are `codesign prune`'s (``DEFAULT_FINETUNE``). A run of ours that
`codesign prune` already made with the same settings can be reused instead of repeated
(``--ours-from 0.5=DIR``: its ``DIR/result.json``; the spec, fine-tuning and cubic timing must
match, else it is an error), which halves the cost.

Usage (about 9 CPU minutes per fine-tuning run at 8 epochs on 2 idle cores; 2 runs a budget):

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

from codesign.config import SparsitySpec, TrainSpec
from codesign.data import Dataset, evaluate, load_dataset
from codesign.models import create_model, extract_state_dict, load_state_into
from codesign.sparsity import prune_, sparsity_report, weight_masks
from codesign.sparsity.finetune import (
    DEFAULT_FINETUNE,
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
    "0.5": Budget("50 % layer one-shot", SparsitySpec("0.5", scope="layer")),
    "0.7": Budget("70 % layer cubic", SparsitySpec("0.7", scope="layer", schedule="cubic")),
    "0.9": Budget("90 % global cubic", SparsitySpec("0.9", scope="global", schedule="cubic")),
    # Like-for-like rows: our global scope is the same criterion as torch's global L1.
    "0.5g": Budget("50 % global one-shot", SparsitySpec("0.5", scope="global")),
    "0.7g": Budget("70 % global cubic", SparsitySpec("0.7", scope="global", schedule="cubic")),
}
DEFAULT_BUDGETS = ["2:4", "0.5", "0.7", "0.9"]  # the acceptance budgets


def load_dense(checkpoint: Path) -> nn.Module:
    model = create_model("resnet20")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    load_state_into(model, extract_state_dict(raw), str(checkpoint))
    return model.eval()


def run_ours(dense: nn.Module, budget: Budget, data: Dataset, train_spec: TrainSpec) -> dict:
    model = copy.deepcopy(dense)
    prune_(model, budget.spec)
    one_shot = evaluate(model, data.test)["top1"]
    result = finetune_pruned(
        model, budget.spec, data, train_spec, teacher=copy.deepcopy(dense), progress=False
    )
    report = sparsity_report(model)
    return {
        "layers": sorted(weight_masks(model)),
        "one_shot_top1": one_shot,
        "top1": evaluate(model, data.test)["top1"],
        "sparsity": report["pruned_sparsity"],
        "train_seconds": result["train_seconds"],
    }


def load_ours(directory: Path, budget: Budget, train_spec: TrainSpec) -> dict:
    """Our row from a `codesign prune` run's ``result.json``, checked to match this comparison."""
    saved = json.loads((directory / "result.json").read_text())
    wanted = {
        "spec": budget.spec.to_dict(),
        "train": train_spec.to_dict(),
        "cubic": dataclasses.asdict(CubicTiming()) if budget.spec.schedule == "cubic" else None,
    }
    for key, value in wanted.items():
        if saved.get(key) != value:
            raise SystemExit(
                f"{directory}/result.json has {key}={saved.get(key)}, this comparison needs "
                f"{value}: re-run `codesign prune` with the same settings or drop --ours-from"
            )
    return {
        "layers": [row["name"] for row in saved["layers"] if row["pattern"] != "dense"],
        "one_shot_top1": saved["oneshot_top1"],
        "top1": saved["pruned_top1"],
        "sparsity": saved["pruned_sparsity"],
        "train_seconds": saved["train_seconds"],
        "from": str(directory),
    }


def _torch_sparsity(modules: list[nn.Module]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / sum(m.weight.numel() for m in modules)


def run_torch(
    dense: nn.Module, budget: Budget, layers: list[str], data: Dataset, train_spec: TrainSpec
) -> dict:
    """Global L1 unstructured over ``layers`` to the budget's sparsity, same schedule/fine-tune."""
    model = copy.deepcopy(dense)
    modules = [model.get_submodule(name) for name in layers]
    targets = [(m, "weight") for m in modules]
    total = sum(m.weight.numel() for m in modules)
    steps_per_epoch = max(1, math.ceil(len(data.train) / train_spec.batch_size))
    # The same level and schedule as ours; an N:M budget becomes its unstructured equivalent.
    level_spec = budget.spec
    if ":" in budget.spec.sparsity:
        n, m = (int(v) for v in budget.spec.sparsity.split(":"))
        level_spec = dataclasses.replace(budget.spec, sparsity=str(1 - n / m), schedule="oneshot")
    schedule = make_schedule(level_spec, steps_per_epoch, train_spec.epochs, CubicTiming())

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
    started = time.perf_counter()
    for key in args.budgets:
        budget = BUDGETS[key]
        if key in reuse:
            ours = load_ours(Path(reuse[key]), budget, train_spec)
        else:
            ours = run_ours(dense, budget, data, train_spec)
        theirs = run_torch(dense, budget, ours.pop("layers"), data, train_spec)
        rows.append({"budget": budget.label, "ours": ours, "torch": theirs})
        print(
            f"[{time.perf_counter() - started:6.0f} s] {budget.label}: ours {ours['top1']:.2f} "
            f"torch {theirs['top1']:.2f}",
            flush=True,
        )

    print(
        f"\nResNet-20, fp32 {fp32:.2f} %; fine-tuning: {args.epochs} epochs, lr {args.lr}, "
        f"distillation T={args.temperature} weight {args.distill_weight}; top-1 on "
        f"{args.data} test split\n"
    )
    print(
        "| budget | sparsity ours / torch | one-shot ours / torch | fine-tuned ours | "
        "fine-tuned torch | ours >= torch | train s ours / torch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        o, t = row["ours"], row["torch"]
        print(
            f"| {row['budget']} | {o['sparsity']:.3f} / {t['sparsity']:.3f} | "
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
