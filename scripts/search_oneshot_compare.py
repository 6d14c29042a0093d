"""The search's predictions from one-shot drops against those it made, on its verified builds.

Reads a finished search (``OUT/results.json``), measures the tables the recipe's ``[search]``
would give without its training (``qat`` and ``finetune`` removed: uniform models pruned and
PTQ'd only, the drops of one-shot single-layer swaps, predictions from the untrained
reference), and prints for every verified configuration the one-shot prediction, the
search's prediction and the verified validation top-1, with the mean absolute error and rank
correlation of each. The one-shot tables are cached in OUT like the search's own.

    python scripts/search_oneshot_compare.py RECIPE --data SPEC --out OUT [--jobs 2 --threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from codesign.recipe import SearchSpec, load_recipe
from codesign.runtime import make_runtime, start
from codesign.study import open_study
from codesign.study.search.agreement import prediction_agreement
from codesign.study.search.front import charged_drops
from codesign.study.search.options import Option, options_of, searchable_layers
from codesign.study.search.tables import cached_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, data_override=args.data)
    runtime = start(make_runtime("cpu", "off", args.threads, recipe.seed))
    study = open_study(recipe, args.out, progress=False, runtime=runtime)
    spec = dataclasses.replace(recipe.search or SearchSpec(), qat=None, finetune=None)
    torch.manual_seed(recipe.seed)
    options = options_of(spec)
    layers = searchable_layers(study.float_model, spec)
    tables = cached_tables(study, spec, options, layers, force=False, jobs=args.jobs)
    drops = charged_drops(tables.drops, tables.sensitivity_subset.size)
    search = json.loads((args.out / "results.json").read_text())["search"]
    column = {o: i for i, o in enumerate(options)}
    rows, oneshot, trained, verified = [], [], [], []
    for config in search["verified"]:
        picks = [
            column[Option(c["weight_bits"], c["act_bits"], c["sparsity"])]
            for c in config["choices"]
        ]
        predicted = tables.uniform_val_top1[0] - float(drops[np.arange(len(layers)), picks].sum())
        oneshot.append(predicted)
        trained.append(config["predicted_top1"])
        verified.append(config["val_top1"])
        rows.append(
            f"| {config['variant']} | {predicted:.2f} | {config['predicted_top1']:.2f} | "
            f"{config['val_top1']:.2f} | {config['top1']:.2f} |"
        )
    print(
        f"one-shot reference validation top-1 {tables.uniform_val_top1[0]:.2f} %, "
        f"trained {search['reference_val_top1']:.2f} %"
    )
    print("| configuration | one-shot predicted | predicted | verified | test |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for name, predicted in (("one-shot", oneshot), ("search", trained)):
        figures = prediction_agreement(predicted, verified)
        print(
            f"{name}: mean absolute error {figures['mean_abs_error_points']:.2f} points, "
            f"rank correlation {figures['rank_correlation']}"
        )


if __name__ == "__main__":
    main()
