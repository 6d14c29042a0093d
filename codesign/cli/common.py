"""What the single-step commands share: the data set of ``--data`` and ``result.json``.

Every command writes ``OUT/result.json`` atomically, after all work is done, so a failed run
leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load_data(args: argparse.Namespace) -> Any:
    """The data set of ``--data``, with its seeded, class-stratified validation split."""
    from codesign.data import load_dataset

    return load_dataset(
        args.data,
        args.download,
        validation_fraction=args.validation_fraction,
        subset_seed=args.subset_seed,
    )


def load_data_for(args: argparse.Namespace, model: Any, steps: tuple[Any, ...] = ()) -> Any:
    """The data of ``--data``, once the steps are known to fit ``model`` (checked first: a
    layer pattern's typo costs no image decoding) and the model to fit the data."""
    from codesign.pipeline.checks import (
        check_model_fits_data,
        check_schedules_fit,
        check_steps_fit,
    )

    check_steps_fit(model, steps)
    dataset = load_data(args)
    check_model_fits_data(model, dataset, f"checkpoint {args.checkpoint}")
    check_schedules_fit(steps, dataset)
    return dataset


def subsets(dataset: Any, info: Any = None) -> dict[str, Any]:
    """``result.json["subsets"]``: the validation split and the subsets a build drew."""
    return {"validation": dataset.validation_info.to_dict(), **(info.subsets if info else {})}


def finish(
    out: Path, result: dict[str, Any], test_samples: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Write ``OUT/result.json`` and print it. With ``test_samples``, every ``*top1`` figure
    (a test top-1 in %) gets its 95 % Wilson interval beside it as ``*top1_ci95``; ``runtime``
    records where it was measured (:func:`codesign.provenance.runtime_record`)."""
    from codesign.io import write_json_atomic
    from codesign.provenance import runtime_record
    from codesign.stats import top1_ci95

    if test_samples is not None:
        with_intervals: dict[str, Any] = {}
        for key, value in result.items():
            with_intervals[key] = value
            if key.endswith("top1") and isinstance(value, float):
                with_intervals[f"{key}_ci95"] = top1_ci95(value, test_samples)
        result = with_intervals
    result = {**result, "runtime": runtime_record(seed)}

    write_json_atomic(out / "result.json", result)
    print(json.dumps(result, indent=2))
    return result
