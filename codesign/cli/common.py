"""What the commands share: where they compute (``--device``, ``--threads``, ``--amp``), the
data set of ``--data`` and ``result.json``.

Every command writes ``OUT/result.json`` atomically, after all work is done, so a failed run
leaves nothing half-written; under torchrun only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def start_runtime(args: argparse.Namespace, recipe: Any = None) -> Any:
    """The command's :class:`~codesign.runtime.Runtime` from its flags (an unset ``--device``
    or ``--amp`` takes ``recipe``'s, else auto / off), applied to this process (threads,
    TF32, cuDNN, the process group under torchrun). Raises ConfigError before any work when
    the device does not exist."""
    from codesign.runtime import make_runtime, start

    device = args.device or (recipe.device if recipe is not None else "auto")
    amp = args.amp or (recipe.amp if recipe is not None else "off")
    seed = getattr(args, "seed", None)
    if seed is None:
        seed = recipe.seed if recipe is not None else 0
    return start(make_runtime(device, amp, args.threads, seed))


def load_data(args: argparse.Namespace, model: Any = None) -> Any:
    """The data set of ``--data``, with its seeded, class-stratified validation split;
    ``--image-size`` defaults to what ``model`` expects on an image folder (224 for a
    torchvision ImageNet ResNet), else images as stored."""
    from codesign.data import load_dataset
    from codesign.models import imagenet_input_size

    image_size = args.image_size
    if image_size is None and model is not None and args.data.startswith("imagefolder:"):
        image_size = imagenet_input_size(model)
    return load_dataset(
        args.data,
        args.download,
        image_size=image_size,
        validation_fraction=args.validation_fraction,
        subset_seed=args.subset_seed,
        stream=args.stream,
        loader=loader_settings(args.workers),
    )


def loader_settings(workers: int | None) -> Any:
    """How streamed splits are read: ``workers`` decoding processes (None: the default
    number), batches pinned in page-locked memory when a CUDA device is present."""
    import torch

    from codesign.data import LoaderSettings, default_workers

    return LoaderSettings(
        workers=default_workers() if workers is None else workers,
        pin_memory=torch.cuda.is_available(),
    )


def with_data_options(recipe: Any, args: argparse.Namespace) -> Any:
    """``recipe`` with ``--stream`` / ``--workers`` written into its ``[data]`` table."""
    import dataclasses

    changes: dict[str, Any] = {}
    if args.stream:
        changes["stream"] = True
    if args.workers is not None:
        changes["workers"] = args.workers
    if not changes:
        return recipe
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, **changes))


def load_data_for(args: argparse.Namespace, model: Any, steps: tuple[Any, ...] = ()) -> Any:
    """The data of ``--data``, once the steps are known to fit ``model`` (checked first: a
    layer pattern's typo costs no image decoding) and the model to fit the data."""
    from codesign.pipeline.checks import (
        check_model_fits_data,
        check_schedules_fit,
        check_steps_fit,
    )

    check_steps_fit(model, steps)
    dataset = load_data(args, model)
    check_model_fits_data(model, dataset, f"checkpoint {args.checkpoint}")
    check_schedules_fit(steps, dataset)
    return dataset


def subsets(dataset: Any, info: Any = None) -> dict[str, Any]:
    """``result.json["subsets"]``: the validation split and the subsets a build drew."""
    return {"validation": dataset.validation_info.to_dict(), **(info.subsets if info else {})}


def finish(
    out: Path,
    result: dict[str, Any],
    test_samples: int | None = None,
    seed: int | None = None,
    runtime: Any = None,
) -> dict[str, Any]:
    """Write ``OUT/result.json`` and print it (rank 0 only; the other ranks wait for it).
    With ``test_samples``, every ``*top1`` figure (a test top-1 in %) gets its 95 % Wilson
    interval beside it as ``*top1_ci95``; ``runtime`` records where it was measured
    (:func:`codesign.provenance.runtime_record`)."""
    from codesign import distributed
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
    result = {**result, "runtime": runtime_record(seed, runtime)}

    if runtime is None or runtime.is_writer:
        write_json_atomic(out / "result.json", result)
        print(json.dumps(result, indent=2))
    distributed.barrier()
    return result
