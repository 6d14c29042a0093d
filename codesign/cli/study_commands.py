"""Commands over a whole recipe: ``run``, ``report``, ``search`` and ``demo`` (the bundled
digits one)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from codesign.cli.common import start_runtime, with_data_options
from codesign.errors import ConfigError
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
    array, SCNN and a 2:4 tensor core) with the full report. It computes on one CPU thread
    unless ``--threads`` says otherwise (the parser's default)."""
    from codesign import distributed
    from codesign.recipe import load_recipe
    from codesign.study import run_recipe

    checkpoint = demo_checkpoint()  # before any work or setting: a broken install stops here
    recipe = load_recipe(resolve_recipe("digits"))
    runtime = start_runtime(args, recipe)
    results = run_recipe(recipe, args.out, progress=not args.quiet, runtime=runtime)
    summary = {
        "data": results["data"],
        "checkpoint": checkpoint.name,
        "report": str(args.out / "report.html"),
        "variants": [
            {"variant": v["variant"], "top1": v["top1"], "top1_ci95": v["top1_ci95"]}
            for v in results["variants"]
        ],
    }
    from codesign.io import write_json_atomic

    if runtime.is_writer:
        write_json_atomic(args.out / "result.json", summary)
    distributed.barrier()
    return summary


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.recipe import load_recipe
    from codesign.study import run_recipe

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    recipe = with_data_options(recipe, args)
    runtime = start_runtime(args, recipe)
    return run_recipe(
        recipe,
        args.out,
        force=args.force,
        progress=not args.quiet,
        variants=args.variants,
        jobs=args.jobs,
        runtime=runtime,
    )


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.study import report_study

    return report_study(args.dir)


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.recipe import load_recipe
    from codesign.study import open_study, run_recipe, run_study
    from codesign.study.search import check_search, run_search
    from codesign.study.seeds import search_at_other_seeds

    recipe = load_recipe(resolve_recipe(args.recipe), data_override=args.data)
    recipe = with_data_options(recipe, args)
    runtime = start_runtime(args, recipe)
    if runtime.distributed:
        raise ConfigError(
            "search runs in one process (its tables and verification are not sharded): run it "
            "without torchrun; `codesign run` builds a recipe's variants under torchrun"
        )
    study = open_study(recipe, args.out, progress=not args.quiet, runtime=runtime)
    # open_study checked a [search] table; this checks the defaults a recipe without one gets.
    check_search(recipe, study.float_model, [d.name for d in study.datapaths])
    scored = run_study(study, force=args.force, jobs=args.jobs)
    search = run_search(
        study,
        scored,
        energy_budget_uj=args.energy_budget_uj,
        accuracy_floor=args.accuracy_floor,
        force=args.force,
        jobs=args.jobs,
    )
    return run_recipe(
        recipe,
        args.out,
        progress=not args.quiet,
        search=search,
        search_seeds=search_at_other_seeds(study, search, force=args.force, jobs=args.jobs),
        study=study,
        scored=scored,
    )
