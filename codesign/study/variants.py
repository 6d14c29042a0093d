"""One variant of a study: built through the pipeline's handlers, scored (test and validation
top-1, one capture of real tensors, every datapath simulated), and cached.

A finished variant is written atomically to ``OUT/variants/<name>-<key>/variant.json``
(with ``variant.json.sha256`` beside it) and ``model.pt``, where ``key`` is the semantic key
of :mod:`codesign.study.keys`. A cached file is used only when its digest, its stored key and
its parse into a :class:`VariantResult` all check out; anything else is rebuilt with a
one-line warning. Timings live in these files, never in ``results.json``.

Many processes (on one machine or many sharing the file system) may work on one OUT: a
variant is built only under its lock ``OUT/variants/<name>-<key>.lock`` (see
:mod:`codesign.locks`), so exactly one of them builds it and the others reuse its result.
Each build appends its host, pid, start and duration to ``builds.json`` in the variant's
directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from codesign import distributed
from codesign.data import correct_per_image, evaluate, make_forward_loop
from codesign.data.datasets import Split
from codesign.data.subsets import SubsetInfo
from codesign.errors import ResultError
from codesign.hw import capture
from codesign.hw.records import LayerRecord
from codesign.io import (
    read_json_verified,
    sweep_temporaries,
    write_json_atomic,
    write_json_verified,
)
from codesign.locks import POLL_S, LockInfo, try_lock, utc_now_iso
from codesign.per_image import PerImageCorrect
from codesign.pipeline import (
    BuildContext,
    BuildInfo,
    build,
    layer_bits_rows,
    model_kwargs_for,
    save_model,
    variant_steps,
)
from codesign.pipeline.results import LayerSetting, Timing, VariantResult
from codesign.recipe import VariantSpec, slug
from codesign.study.keys import split_sha256, variant_key
from codesign.study.study import Study

VARIANT_FILE = "variant.json"
BUILDS_FILE = "builds.json"  # who built the variant, when and how long (machine-dependent)
CAPTURE_BATCH = 64  # images per forward pass of the capture; part of SCORING_VERSION


def build_variant(study: Study, variant: VariantSpec) -> tuple[nn.Module, BuildInfo]:
    """Apply a variant's steps (prune, fine-tune, PTQ, QAT) to a copy of the float model,
    through the same handlers the ``prune`` / ``ptq`` / ``qat`` commands run, so a variant
    reproduces the standalone command with the same settings."""
    ctx = BuildContext(
        study.float_model,
        study.dataset,
        seed=study.recipe.seed,
        calib_samples=study.recipe.data.calib_samples,
        progress=study.progress,
        runtime=study.runtime,
    )
    steps = variant_steps(variant.sparsity, variant.finetune, variant.quant, variant.qat)
    return build(ctx, steps)


def measured_densities(records: Sequence[LayerRecord]) -> tuple[float, float, float]:
    """Whole-network (weight density, input-activation density, effectual MAC fraction):
    nonzeros / elements over the captured tensors, and effectual / dense MACs."""
    weights = sum(r.weight_count for r in records)
    inputs = sum(r.input_count for r in records)
    macs = sum(r.dense_macs for r in records)
    return (
        sum(r.weight_nonzeros for r in records) / max(weights, 1),
        sum(r.input_nonzeros for r in records) / max(inputs, 1),
        sum(r.effectual_macs for r in records) / max(macs, 1),
    )


def _layer_settings(model: nn.Module, sparsity_rows: Sequence[dict]) -> tuple[LayerSetting, ...]:
    """Per-layer widths (float layers are 32 bit) beside ``sparsity_report``'s layer rows."""
    quantized = {row["name"]: row for row in layer_bits_rows(model)}
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    settings = []
    for name, row in zip(names, sparsity_rows, strict=True):
        bits = quantized.get(name, {"weight_bits": 32, "act_bits": 32})
        settings.append(
            LayerSetting(
                name, bits["weight_bits"], bits["act_bits"], row["sparsity"], row["pattern"]
            )
        )
    return tuple(settings)


def score_model(
    study: Study, model: nn.Module, test: Split | None = None, *, key: str = ""
) -> VariantResult:
    """Top-1 on the test split (reported) and the validation split (what the search reads),
    then one capture of validation images and a simulation on every datapath.

    The result has no name, config, build subsets or timing yet: :func:`run_variant` adds
    them (``dataclasses.replace``).
    """
    from codesign.sparsity import sparsity_report

    device = study.runtime.torch_device
    split = test if test is not None else study.dataset.test
    hits = correct_per_image(model, split, device=device)
    correct = int(hits.sum())
    digest = study.test_sha256 if test is None else split_sha256(split)
    validation = study.dataset.validation
    assert validation is not None and study.dataset.validation_info is not None
    images, captured = study.dataset.capture_set(study.recipe.data.capture_samples)
    records = capture(model, make_forward_loop(images, CAPTURE_BATCH, device=device))
    report = sparsity_report(model)
    weight_density, act_density, effectual = measured_densities(records)
    return VariantResult(
        key=key,
        variant="",
        config={},
        seed=study.recipe.seed,
        top1=100.0 * correct / len(split),  # evaluate()'s figure, from the same predictions
        correct=correct,
        samples=len(split),
        test_correct=PerImageCorrect.of(hits, digest),
        val_top1=float(evaluate(model, validation, device=device)["top1"]),
        subsets={"validation": study.dataset.validation_info, "capture": captured},
        weight_sparsity=report["sparsity"],
        captured_samples=records[0].n,
        weight_density=weight_density,
        act_density=act_density,
        effectual_mac_fraction=effectual,
        layers=_layer_settings(model, report["layers"]),
        datapaths={d.name: d.simulate(records).summary(d.name) for d in study.datapaths},
        pruning={},
        timing=Timing(0.0, 0.0, 0.0),
    )


def variant_dir(study: Study, variant: VariantSpec) -> tuple[Path, str]:
    """``OUT/variants/<name>-<key prefix>`` and the full key."""
    key = variant_key(study, variant)
    return study.out / "variants" / f"{slug(variant.name)}-{key[:12]}", key


def read_cached(path: Path, key: str) -> VariantResult:
    """The result stored at ``path`` under ``key``; a :class:`ResultError` saying why not when
    the file is missing, does not match its sha256, holds another key or does not parse."""
    data = read_json_verified(path)
    if not isinstance(data, dict) or data.get("key") != key:
        raise ResultError("it was stored under another key")
    return VariantResult.from_json(data)


def write_result(path: Path, result: VariantResult, writer: bool = True) -> VariantResult:
    """Write ``variant.json`` (and its sha256); returns the result as read back, so a fresh
    run and a resumed one hand identical values onward. Without ``writer`` (a rank other
    than 0) nothing is written and the same JSON round trip is returned."""
    distributed.barrier()  # every rank has read ``path`` before rank 0 replaces it
    if writer:
        data = write_json_verified(path, result.to_json())
    else:
        data = json.loads(json.dumps(result.to_json()))
    distributed.barrier()
    return VariantResult.from_json(data)


def variant_lock_path(directory: Path) -> Path:
    """The lock of the variant stored in ``directory``: ``<directory>.lock`` beside it, so a
    build that fails leaves no directory behind."""
    return directory.with_name(directory.name + ".lock")


def reuse_cached(study: Study, variant: VariantSpec) -> VariantResult | None:
    """The variant's verified cached result when it is stored under its current name and
    config; None otherwise (missing, not verifying, or to be renamed: those need the lock).
    Reads only: safe while other processes build."""
    directory, key = variant_dir(study, variant)
    try:
        cached = read_cached(directory / VARIANT_FILE, key)
    except ResultError:
        return None
    config = json.loads(json.dumps(variant.to_dict()))  # tuples as JSON lists
    return cached if cached.variant == variant.name and cached.config == config else None


def attempt_variant(
    study: Study, variant: VariantSpec, force: bool = False
) -> VariantResult | LockInfo:
    """One try at a variant without waiting: its cached result, or its result built under its
    lock, or the :class:`LockInfo` of the live process that holds the lock now. The ranks of
    one torchrun build together without the lock (they agree at collectives: a lock would
    leave rank 1 waiting for rank 0 while rank 0 waits for rank 1)."""
    if study.runtime.distributed:
        return _build_or_reuse(study, variant, force)
    if not force:
        cached = reuse_cached(study, variant)
        if cached is not None:
            return cached
    directory, _ = variant_dir(study, variant)
    got = try_lock(variant_lock_path(directory), f"variant {variant.name}")
    if isinstance(got, LockInfo):
        return got
    with got:
        sweep_temporaries(directory)  # a killed builder's half-written files
        return _build_or_reuse(study, variant, force)


def run_variant(study: Study, variant: VariantSpec, force: bool = False) -> VariantResult:
    """Build, score and simulate one variant, or reuse its verified result from OUT; waits
    (with a message) while another process builds it."""
    announced: set[str] = set()
    while True:
        outcome = attempt_variant(study, variant, force)
        if isinstance(outcome, VariantResult):
            return outcome
        if outcome.token not in announced:
            announced.add(outcome.token)
            print(waiting_message(variant.name, outcome), file=sys.stderr)
        time.sleep(POLL_S)


def waiting_message(name: str, holder: LockInfo) -> str:
    """The one line a process prints when it waits for a variant another process builds."""
    return (
        f"codesign: variant {name!r} is being built by {holder.describe()}; waiting for it "
        "(taken over if that process dies)"
    )


def _record_build(directory: Path, started_utc: str, seconds: float) -> None:
    """Append this build to ``builds.json`` (who built the variant, when, how long): kept out
    of ``variant.json`` and ``results.json``, whose bytes must not depend on the machine."""
    path = directory / BUILDS_FILE
    try:
        builds = json.loads(path.read_text())["builds"]
    except (OSError, ValueError, KeyError, TypeError):
        builds = []
    builds.append(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started_utc,
            "seconds": round(seconds, 3),
        }
    )
    write_json_atomic(path, {"builds": builds})


def _build_or_reuse(study: Study, variant: VariantSpec, force: bool) -> VariantResult:
    """:func:`run_variant`'s work, with the variant's lock held."""
    directory, key = variant_dir(study, variant)
    result_path = directory / VARIANT_FILE
    writer = study.runtime.is_writer
    # Every rank takes the same decision (reuse or build): a rank that built alone would wait
    # forever in a collective the others never enter.
    if not force and distributed.all_true(result_path.exists()):
        try:
            cached = read_cached(result_path, key)
        except ResultError as reason:
            print(f"codesign: warning: {result_path}: {reason}; rebuilding", file=sys.stderr)
        else:
            config = json.loads(json.dumps(variant.to_dict()))  # tuples as JSON lists
            if cached.variant == variant.name and cached.config == config:
                return cached
            # Same steps under another spelling (e.g. a zero-epoch fine-tune table): the
            # numbers hold, the name and config are the current ones.
            named = dataclasses.replace(cached, variant=variant.name, config=variant.to_dict())
            return write_result(result_path, named, writer)
    started_utc = utc_now_iso()
    started = time.perf_counter()
    model, info = build_variant(study, variant)
    scored = score_model(study, model, key=key)
    recipe = {}
    if variant.sparsity is not None:
        recipe["sparsity"] = variant.sparsity.to_dict()
    if variant.quant is not None:
        recipe["quant"] = variant.quant.to_dict()
    if writer:
        directory.mkdir(parents=True, exist_ok=True)
        save_model(directory / "model.pt", model, study.model_name, recipe, model_kwargs_for(model))
    result = dataclasses.replace(
        scored,
        variant=variant.name,
        config=variant.to_dict(),
        # The build's own subsets (calibration) after the scoring ones, as always recorded.
        subsets={
            **scored.subsets,
            **{purpose: SubsetInfo.from_dict(v) for purpose, v in info.subsets.items()},
        },
        pruning=dict(info.pruning),
        timing=Timing(info.train_seconds, info.calib_seconds, time.perf_counter() - started),
        method_choice=info.method_choice,
    )
    written = write_result(result_path, result, writer)
    if writer:
        _record_build(directory, started_utc, time.perf_counter() - started)
    return written
