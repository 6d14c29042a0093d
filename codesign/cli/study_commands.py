"""Commands over a whole recipe: ``run``, ``search`` and ``demo`` (the bundled digits one)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from codesign.resources import bundled_checkpoint, resolve_recipe

# The bundled digits ResNet-8 that the ``digits`` recipe starts from.
DEMO_CHECKPOINT_NAME = "resnet8-digits"


def demo_checkpoint() -> Path:
    """The bundled checkpoint of the demo, looked up when asked: a broken install then fails
    only the commands that need it, with one line, never ``--help`` or ``--version``."""
    return bundled_checkpoint(DEMO_CHECKPOINT_NAME)


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """The main job on the embedded default: the bundled recipe ``digits`` (the digits
    ResNet-8 in FP32, INT8/INT4 PTQ, INT4 QAT, 2:4 and unstructured, on a dense systolic
    array, SCNN and a 2:4 tensor core) with the full report."""
    import torch

    from codesign.recipe import load_recipe
    from codesign.study import run_recipe

    checkpoint = demo_checkpoint()  # before any work or setting: a broken install stops here
    # One thread: on 8x8 digits a second thread costs more in synchronisation than it saves,
    # and on a shared machine oversubscribed threads made fine-tuning 30x slower (measured).
    torch.set_num_threads(1)
    recipe = load_recipe(resolve_recipe("digits"))
    results = run_recipe(recipe, args.out, progress=not args.quiet)
    summary = {
        "data": results["data"],
        "checkpoint": checkpoint.name,
        "report": str(args.out / "report.html"),
        "variants": [{"variant": v["variant"], "top1": v["top1"]} for v in results["variants"]],
    }
    from codesign.io import write_json_atomic

    write_json_atomic(args.out / "result.json", summary)
    return summary


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.recipe import load_recipe
    from codesign.study import run_recipe

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    return run_recipe(recipe, args.out, force=args.force, progress=not args.quiet)


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.recipe import load_recipe
    from codesign.study import open_study, run_recipe, run_study
    from codesign.study.search import check_search, run_search

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    study = open_study(recipe, args.out, progress=not args.quiet)
    # open_study checked a [search] table; this checks the defaults a recipe without one gets.
    check_search(recipe, study.float_model, [d.name for d in study.datapaths])
    scored = run_study(study, force=args.force)
    search = run_search(
        study,
        scored,
        energy_budget_uj=args.energy_budget_uj,
        accuracy_floor=args.accuracy_floor,
        force=args.force,
    )
    return run_recipe(
        recipe, args.out, progress=not args.quiet, search=search, study=study, scored=scored
    )
