"""Checks run before any work: do the steps fit the model, does the model fit the data.

Every check here costs milliseconds (layer names and shapes, no forward pass), so the
commands and ``open_study`` run them after loading the model and the data and before the
first calibration, training or evaluation: a layer pattern that matches nothing, an N:M
pattern that does not divide a layer under ``strict``, or a checkpoint for 3-channel images
given 1-channel data fails in a second, not after the variants before it have run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

from torch import nn

from codesign.data import Dataset
from codesign.errors import DataError, QuantError
from codesign.pipeline.steps import FinetuneStep, PruneStep, PTQStep, cubic_timing


def check_steps_fit(model: nn.Module, steps: Iterable[Any]) -> None:
    """Raise the error a step would raise on ``model`` for its layer choices (patterns that
    match no layer, N:M that does not divide a layer under ``strict``, nothing left to prune,
    a model already pruned or quantized), without changing ``model``: pruning is planned,
    not applied, and quantization widths are resolved, not set. Layer names do not change
    under pruning or BN folding, so the loaded model answers for every step."""
    from codesign.quant import quant_layers
    from codesign.quant.ptq import layer_bits
    from codesign.sparsity import SparsityWarning, plan_pruning

    for step in steps:
        if isinstance(step, PruneStep):
            with warnings.catch_warnings():
                # The build warns about layers left dense; the plan here must not warn twice.
                warnings.simplefilter("ignore", SparsityWarning)
                plan_pruning(model, step.sparsity)
        elif isinstance(step, PTQStep):
            if quant_layers(model):
                raise QuantError(
                    "the checkpoint is already quantized: start from the float checkpoint"
                )
            layer_bits(model, step.quant)


def check_schedules_fit(steps: Iterable[Any], dataset: Dataset) -> None:
    """Raise the error a fine-tuning step's cubic schedule would raise on ``dataset``'s
    training split (too few steps to prune over)."""
    from codesign.sparsity import make_schedule

    for step in steps:
        if isinstance(step, FinetuneStep):
            steps_per_epoch = max(1, math.ceil(len(dataset.train) / step.train.batch_size))
            make_schedule(step.sparsity, steps_per_epoch, step.train.epochs, cubic_timing(step))


def model_io(model: nn.Module) -> tuple[int, int]:
    """(input channels of the first Conv2d/Linear, outputs of the last one): what images the
    model takes and how many classes it scores."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first, last = layers[0], layers[-1]
    channels = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
    classes = last.out_features if isinstance(last, nn.Linear) else last.out_channels
    return int(channels), int(classes)


def check_model_fits_data(model: nn.Module, dataset: Dataset, what: str = "the model") -> None:
    """Raise DataError when ``dataset``'s images have another channel count than ``model``
    takes, or its labels name more classes than the model scores (a label it can never
    predict; training on it fails)."""
    channels, classes = model_io(model)
    if dataset.in_channels != channels:
        raise DataError(
            f"{what} takes {channels}-channel images but {dataset.name} has "
            f"{dataset.in_channels}-channel images: give the data the model was trained on, "
            "or a checkpoint for this data"
        )
    if dataset.num_classes > classes:
        raise DataError(
            f"{dataset.name} has labels up to {dataset.num_classes - 1} but {what} scores "
            f"{classes} classes: give the data the model was trained on, or a checkpoint "
            "for this data"
        )
