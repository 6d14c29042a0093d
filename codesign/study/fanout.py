"""Building a study's variants across processes: ``--variants``, ``--jobs`` and waiting.

Variants are independent and each is built only under its own lock (see
:mod:`codesign.study.variants`), so any number of processes, on one machine or on many that
share the file system, can work on one OUT: ``--jobs N`` local workers, a Slurm array, or
``xargs -P``. A process goes through its variants in recipe order; one that another live
process is building is passed over and looked at again once the others are done, until it is
finished (its result is then read from the cache) or its holder is gone (the lock is taken
over and the variant built here).

Workers are separate processes (``spawn``: no state forked from the parent) that each open the
study once and build the variants they are handed into the shared OUT, with the torch thread
count of the parent, so their numbers are those of a serial run.

A build is a (seed, variant) task: a recipe with several seeds builds its trained variants at
each (see :mod:`codesign.study.seeds`); each seed's build has its own cache key and lock.
"""

from __future__ import annotations

import contextlib
import difflib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from codesign import locks
from codesign.errors import CodesignError, ConfigError
from codesign.locks import LockInfo
from codesign.pipeline.results import VariantResult
from codesign.recipe import Recipe, VariantSpec
from codesign.runtime import Runtime
from codesign.study.study import Study, at_seed
from codesign.study.variants import attempt_variant, waiting_message

Outcome = VariantResult | LockInfo
Task = tuple[int, VariantSpec]  # (seed, variant)
Attempts = Callable[[Sequence[Task]], Iterator[tuple[Task, Outcome]]]


def select_variants(recipe: Recipe, names: Sequence[str] | None) -> tuple[VariantSpec, ...]:
    """The recipe's variants named in ``names`` (all of them for None), in recipe order; a
    ConfigError naming close and available names for a name the recipe does not have."""
    if names is None:
        return recipe.variants
    known = [v.name for v in recipe.variants]
    unknown = [name for name in names if name not in known]
    if unknown:
        described = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            described.append(f"{name!r}" + (f" (close: {', '.join(close)})" if close else ""))
        raise ConfigError(
            f"--variants: recipe {recipe.name!r} has no variant {', '.join(described)}; "
            f"its variants: {', '.join(known)}"
        )
    wanted = set(names)
    return tuple(v for v in recipe.variants if v.name in wanted)


def _label(task: Task, study: Study) -> str:
    """The variant's name, with its seed where the recipe has several."""
    seed, variant = task
    return variant.name if study.recipe.seeds is None else f"{variant.name} (seed {seed})"


def _named(task: Task, study: Study, exc: CodesignError) -> CodesignError:
    return type(exc)(f"variant {_label(task, study)!r}: {exc}")


def _serial(study: Study, force: bool) -> Attempts:
    def attempts(tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        for task in tasks:
            seed, variant = task
            try:
                yield task, attempt_variant(at_seed(study, seed), variant, force)
            except CodesignError as exc:
                raise _named(task, study, exc) from None

    return attempts


# The worker process's study, opened once by _init_worker.
_WORKER_STUDY: Study | None = None


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's time limit) as SystemExit, so held locks are released."""
    raise SystemExit(128 + signum)


def _init_worker(recipe: Recipe, out: Path, threads: int, runtime: Runtime) -> None:
    import torch

    from codesign.study.study import open_study

    global _WORKER_STUDY
    signal.signal(signal.SIGTERM, _terminate)
    torch.set_num_threads(threads)  # the parent's count: the numbers of a serial run
    _WORKER_STUDY = open_study(recipe, out, progress=False, runtime=runtime)


def _attempt_in_worker(seed: int, variant: VariantSpec, force: bool) -> Outcome:
    assert _WORKER_STUDY is not None
    return attempt_variant(at_seed(_WORKER_STUDY, seed), variant, force)


@contextlib.contextmanager
def _pool(study: Study, force: bool, workers: int) -> Iterator[Attempts]:
    import torch

    context = get_context("spawn")
    initargs = (study.recipe, study.out, torch.get_num_threads(), study.runtime)
    pool = ProcessPoolExecutor(workers, context, _init_worker, initargs)

    def attempts(tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        futures = [(t, pool.submit(_attempt_in_worker, t[0], t[1], force)) for t in tasks]
        for task, future in futures:
            try:
                yield task, future.result()
            except CodesignError as exc:
                raise _named(task, study, exc) from None

    try:
        yield attempts
    finally:
        # On an error, variants not started are dropped; those in flight finish (and are
        # cached) before this returns. Ctrl-C reaches the workers too, which release locks.
        pool.shutdown(wait=True, cancel_futures=True)


def build_variants(
    study: Study, variants: Sequence[VariantSpec], *, force: bool = False, jobs: int = 1
) -> list[VariantResult]:
    """Build (or reuse) ``variants`` of ``study`` at its seed (``recipe.seed``): see
    :func:`build_tasks`."""
    return build_tasks(study, [(study.recipe.seed, v) for v in variants], force=force, jobs=jobs)


def build_tasks(
    study: Study, tasks: Sequence[Task], *, force: bool = False, jobs: int = 1
) -> list[VariantResult]:
    """Build (or reuse) each (seed, variant) of ``tasks`` in ``jobs`` processes (1: this one),
    sharing OUT with any other process; returns their results in the order given.

    A variant another live process is building is passed over, then waited for (one line on
    stderr per variant and holder) until its result is cached or its lock is taken over.
    """
    results: dict[tuple[int, str], VariantResult] = {}
    announced: set[tuple[int, str, str]] = set()
    pending = list(tasks)
    workers = min(jobs, len(pending))
    show = study.progress and study.runtime.is_writer
    bar = tqdm(total=len(pending), desc="variants", unit="variant", disable=not show)
    scope = (
        _pool(study, force, workers)
        if workers > 1
        else contextlib.nullcontext(_serial(study, force))
    )
    with bar, scope as attempts:
        while pending:
            held: dict[tuple[int, str], LockInfo] = {}
            for (seed, variant), outcome in attempts(pending):
                if isinstance(outcome, LockInfo):
                    held[seed, variant.name] = outcome
                else:
                    results[seed, variant.name] = outcome
                    bar.set_postfix_str(_label((seed, variant), study))
                    bar.update()
            pending = [(s, v) for s, v in pending if (s, v.name) in held]
            for task in pending:
                seed, variant = task
                holder = held[seed, variant.name]
                if (seed, variant.name, holder.token) not in announced:
                    announced.add((seed, variant.name, holder.token))
                    message = waiting_message(_label(task, study), holder)
                    tqdm.write(message, file=sys.stderr)
            if pending:
                time.sleep(locks.POLL_S)
    return [results[seed, v.name] for seed, v in tasks]
