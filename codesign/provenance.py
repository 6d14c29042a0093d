"""Where a figure was measured: the record every ``result.json`` carries under ``"runtime"``.

A top-1 that moves between two machines or two commits can be traced only if the result says
which code ran, with which library versions, on which device and CPU kernels (torch picks its
kernels by the CPU's instruction set), with how many threads and processes, and in which
precision.
"""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

import codesign
from codesign.runtime import Runtime


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _git_commit() -> str | None:
    """The commit of the source tree codesign runs from, when it is a git checkout (an
    editable install); None for an installed wheel."""
    source = Path(codesign.__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def runtime_record(seed: int | None = None, runtime: Runtime | None = None) -> dict[str, Any]:
    """``{"codesign", "git_commit", "python", "torch", "numpy", "device", "device_name",
    "world_size", "threads", "amp", "cuda", "tf32", "cudnn_benchmark", "cpu_model",
    "cpu_capability", "seed"}``: the versions, where it ran (:meth:`Runtime.to_record`: the
    device, the processes, the torch intra-op thread count in force, mixed precision, the
    TF32/cuDNN settings), the CPU and its kernel set
    (``torch.backends.cpu.get_cpu_capability``), and the seed of the run."""
    where = (runtime if runtime is not None else Runtime()).to_record()
    return {
        "codesign": codesign.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        **where,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "seed": seed,
    }
