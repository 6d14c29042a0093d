"""Where a figure was measured: the record every ``result.json`` carries under ``"runtime"``.

A top-1 that moves between two machines or two commits can be traced only if the result says
which code ran, with which library versions, on which CPU kernels (torch picks its kernels by
the CPU's instruction set) and with how many threads.
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


@cache
def _cpu_model() -> str:
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


def runtime_record(seed: int | None = None) -> dict[str, Any]:
    """``{"codesign", "git_commit", "python", "torch", "numpy", "device", "threads",
    "cpu_model", "cpu_capability", "seed"}``: the versions, the CPU and its kernel set
    (``torch.backends.cpu.get_cpu_capability``), the torch intra-op thread count in force, and
    the seed of the run."""
    return {
        "codesign": codesign.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "seed": seed,
    }
