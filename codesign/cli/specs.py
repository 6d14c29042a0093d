"""Specs built from parsed flags: what a single-step command hands the pipeline.

Unset training flags fall back to the defaults recipes use, so a command and a recipe variant
with the same settings build the same specs.
"""

from __future__ import annotations

import argparse
from typing import Any


def quant_spec(args: argparse.Namespace) -> Any:
    """The ``QuantSpec`` of the quantization flags."""
    from codesign.config import QuantSpec

    keep = tuple(item.strip() for item in args.keep_8bit.split(",") if item.strip())
    return QuantSpec(
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        per_channel=not args.per_tensor,
        method=args.method or "auto",
        bias_correction=not args.no_bias_correction,
        keep_8bit=keep,
        **({"calib_budget_s": args.calib_budget_s} if args.calib_budget_s is not None else {}),
    )


def qat_train_spec(args: argparse.Namespace) -> Any:
    """The QAT defaults recipes use (``QAT_DEFAULTS``), below 4 bits the schedule of the final
    widths (:func:`codesign.config.qat_width_defaults`: epochs and progressive stages, only
    where neither ``--epochs`` nor ``--progressive`` is given), with the options given."""
    from codesign.config import QATSpec, qat_width_defaults
    from codesign.recipe import QAT_DEFAULTS

    given = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "progressive": parse_stages(args.progressive) if args.progressive is not None else None,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    widths = (getattr(args, "weight_bits", None), getattr(args, "act_bits", None))
    schedule: dict[str, Any] = {}
    if None not in widths and args.epochs is None and args.progressive is None:
        # The schedule is one piece: a given --epochs or --progressive replaces all of it.
        schedule = qat_width_defaults(*widths)
    return QATSpec(**{**QAT_DEFAULTS, **schedule, **changes, "seed": args.seed})


def parse_stages(text: str) -> tuple[Any, ...]:
    """``--progressive`` text ("4:3,3:3": bits:epochs per stage) as QATStage tuples; a bad
    item raises ConfigError naming it."""
    from codesign.config import QATStage
    from codesign.errors import ConfigError

    stages = []
    for item in text.split(","):
        bits, _, epochs = item.strip().partition(":")
        if not (bits.strip().isdigit() and epochs.strip().isdigit()):
            raise ConfigError(
                f"--progressive: expected BITS:EPOCHS items separated by commas (e.g. 4:3,3:3), "
                f"got {item.strip()!r}"
            )
        stages.append(QATStage(bits=int(bits), epochs=int(epochs)))
    return tuple(stages)


def sparsity_spec(args: argparse.Namespace) -> Any:
    """The ``SparsitySpec`` of the pruning flags; unset cubic timings keep the spec's."""
    from codesign.config import SparsitySpec

    given = {
        "prune_start": args.prune_start,
        "prune_end": args.prune_end,
        "prune_updates": args.prune_updates,
    }
    return SparsitySpec(
        sparsity=args.sparsity,
        scope=args.scope,
        schedule=args.schedule,
        strict=args.strict,
        permute=args.permute,
        method=args.prune_method,
        **{key: value for key, value in given.items() if value is not None},
    )


def prune_train_spec(args: argparse.Namespace) -> Any:
    """The fine-tuning defaults recipes use (``FINETUNE_DEFAULTS``) with the options given."""
    from codesign.config import TrainSpec
    from codesign.recipe import FINETUNE_DEFAULTS

    given = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "distill_temperature": args.temperature,
        "distill_weight": args.distill_weight,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return TrainSpec(**{**FINETUNE_DEFAULTS, **changes, "seed": args.seed})
