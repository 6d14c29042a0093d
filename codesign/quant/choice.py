"""``auto`` with a calibration time limit: run the PTQ methods that fit, keep the best on
the validation split.

Candidates run cheapest first (GPTQ, then AdaRound, then BRECQ). Before each candidate after
the first, its seconds are estimated from the first candidate's measured seconds and the
methods' relative costs; a candidate whose estimate does not fit in what is left of the limit
is skipped (the first always runs: some model must come out). Each calibrated model is scored
on the validation split: top-1 first, then the mean KL divergence of its logits from the float
model's (a well-trained float model can be right on every validation image, so top-1 alone
often ties). The test split is never read here.

Data never enters this module: the caller passes ``calibrate_with(method)`` and
``score(model)`` closures (the pipeline builds them from its calibration and validation sets).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Below-8-bit methods auto chooses among, cheapest first.
AUTO_CANDIDATES: tuple[str, ...] = ("gptq", "adaround", "brecq")
# Calibration seconds relative to GPTQ, measured on the ResNet-20 (first and last layer at 8
# bits, 512 images, one thread, W4A4 and W4A8): AdaRound took 2-3.5x and BRECQ 16-23x
# GPTQ's time. Only used to skip a candidate that would not fit.
RELATIVE_COST: dict[str, float] = {"gptq": 1.0, "adaround": 3.0, "brecq": 16.0}

Score = dict[str, float]


def kl_from_float(float_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over images of KL(float || quantized) of the softmax outputs [N, classes] (nats)."""
    return float(
        F.kl_div(
            F.log_softmax(logits.float(), dim=1),
            F.log_softmax(float_logits.float(), dim=1),
            log_target=True,
            reduction="batchmean",
        )
    )


def rank_key(score: Score) -> tuple[float, float]:
    """Higher is better: validation top-1 (%), then the smaller KL from the float logits."""
    return (score["validation_top1"], -score["validation_kl"])


def choose_method(
    methods: Sequence[str],
    calibrate_with: Callable[[str], tuple[nn.Module, dict[str, Any]]],
    score: Callable[[nn.Module], Score],
    budget_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[nn.Module, dict[str, Any]]:
    """Run ``methods`` in order within ``budget_s`` seconds; return (best model, record).

    ``calibrate_with(method)``: a calibrated quantized model and calibrate()'s info;
    ``score(model)``: ``{"validation_top1", "validation_kl"}``. The record: ``chosen``,
    ``budget_s``, ``seconds`` (all candidates and scoring), and per method either its score
    with ``calib_seconds``/``score_seconds`` or ``skipped`` with the estimate that did not fit.
    """
    if not methods:
        raise ValueError("choose_method needs at least one candidate method")
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a finite number > 0, got {budget_s}")
    started = clock()
    candidates: dict[str, dict[str, Any]] = {}
    best: tuple[tuple[float, float], str, nn.Module] | None = None
    first_seconds: float | None = None
    for method in methods:
        left_s = budget_s - (clock() - started)
        if first_seconds is not None:
            estimate_s = first_seconds * RELATIVE_COST[method] / RELATIVE_COST[methods[0]]
            if estimate_s > left_s:
                candidates[method] = {
                    "skipped": "estimated to exceed the calibration time limit",
                    "estimated_seconds": estimate_s,
                    "seconds_left": max(0.0, left_s),
                }
                continue
        calib_started = clock()
        model, info = calibrate_with(method)
        calib_seconds = clock() - calib_started
        if first_seconds is None:
            first_seconds = calib_seconds
        score_started = clock()
        figures = score(model)
        candidates[method] = {
            **figures,
            "calib_seconds": calib_seconds,
            "score_seconds": clock() - score_started,
        }
        key = rank_key(figures)
        if best is None or key > best[0]:
            best = (key, method, model)
        del model, info
    assert best is not None
    record = {
        "chosen": best[1],
        "rule": "validation top-1, then KL from the float logits",
        "budget_s": budget_s,
        "seconds": clock() - started,
        "candidates": candidates,
    }
    return best[2], record
