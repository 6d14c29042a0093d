"""Where work runs: device, mixed precision, CPU threads, torch.distributed rank and world size,
seed. One frozen :class:`Runtime` is built once from the flags (or a recipe) and passed down;
nothing below the command line reads a device, a thread count or a rank from a global.

- ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` (the GPU of this
  process: ``LOCAL_RANK`` under torchrun, else GPU 0) or ``cuda:N``. Asking for CUDA where none
  exists is a :class:`~codesign.errors.ConfigError` before any work.
- ``amp``: ``off`` or ``bf16``: float training and fine-tuning run under ``torch.autocast``
  in bfloat16; quantizers always compute in fp32 (their integer grids need fp32's 24-bit
  significand: bf16's 8 bits cannot even hold the 8-bit codes times a scale exactly).
- ``threads``: torch's intra-op CPU threads, set from ``--threads`` once by
  :func:`start`; ``None`` leaves torch's own default (one per core).
- TF32 and the cuDNN autotuner are set explicitly (both off by default: calibration and the
  hardware capture want fp32 convolutions, and results repeatable run to run) and recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from typing import Literal

import torch

from codesign import distributed
from codesign.errors import ConfigError

DEVICE_HELP = "auto | cpu | cuda | cuda:N"
AMP_CHOICES = ("off", "bf16")
Amp = Literal["off", "bf16"]
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def parse_device(text: str, where: str = "--device") -> str:
    """Check the spelling of a device request; returns it canonical (``cuda:01`` ->
    ``cuda:1``). Whether the device exists is :func:`resolve_device`'s question."""
    if text in ("auto", "cpu", "cuda"):
        return text
    match = _CUDA_INDEX.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"{where} {text!r} is not a device: use auto, cpu, cuda or cuda:N (N a GPU index)"
        )
    return f"cuda:{int(match.group(1))}"


def resolve_device(
    requested: str, local_rank: int = 0, world_size: int = 1, where: str = "--device"
) -> str:
    """The device a request names on this machine: ``"cpu"`` or ``"cuda:N"``.

    Under torchrun (``world_size > 1``) ``cuda`` and ``auto`` take the GPU of ``local_rank``.
    Raises ConfigError for CUDA where none exists, a GPU index past the last GPU, or one
    fixed GPU shared by several processes.
    """
    requested = parse_device(requested, where)
    if requested == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if requested == "auto" and not available:
        return "cpu"
    if not available:
        raise ConfigError(
            f"{where} {requested}: no CUDA GPU is available here (torch.cuda.is_available() is "
            "False); use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if requested.startswith("cuda:"):
        if world_size > 1:
            raise ConfigError(
                f"{where} {requested} under torchrun would put every process on one GPU: give "
                "--device cuda (each process takes the GPU of its LOCAL_RANK)"
            )
        index = int(requested.split(":")[1])
    else:
        index = local_rank
    if index >= count:
        raise ConfigError(
            f"{where} {requested}: GPU {index} does not exist ({count} visible); "
            + (
                "start at most as many processes per node as there are GPUs"
                if world_size > 1
                else "give an index below the count"
            )
        )
    return f"cuda:{index}"


def check_amp(amp: str, device: str, where: str = "--amp") -> Amp:
    """``off`` or ``bf16`` where the device computes bf16; else ConfigError."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"{where} {amp!r}: use one of {', '.join(AMP_CHOICES)}")
    if amp == "bf16" and device.startswith("cuda"):
        with torch.cuda.device(torch.device(device)):
            supported = torch.cuda.is_bf16_supported()
        if not supported:
            raise ConfigError(
                f"{where} bf16: {torch.cuda.get_device_name(torch.device(device))} has no "
                "bfloat16 arithmetic; use --amp off"
            )
    return amp  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how a command computes. ``device`` is resolved (``"cpu"`` or ``"cuda:N"``);
    ``threads`` is what ``--threads`` asked for (None: torch's default); ``rank``,
    ``local_rank`` and ``world_size`` come from torchrun (0, 0, 1 in a single process)."""

    device: str = "cpu"
    amp: Amp = "off"
    threads: int | None = None
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    seed: int = 0
    tf32: bool = False
    cudnn_benchmark: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"`` (what ``torch.autocast`` takes)."""
        return self.torch_device.type

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.amp == "bf16" else None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints, results and reports."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """``torch.autocast`` in bf16 under ``amp="bf16"``; a no-op context otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def device_name(self) -> str:
        """The GPU's name, or the CPU's model name."""
        if self.device_type == "cuda":
            return torch.cuda.get_device_name(self.torch_device)
        from codesign.provenance import cpu_model

        return cpu_model()

    def to_record(self) -> dict[str, object]:
        """``{"device", "device_name", "world_size", "threads", "amp", "torch", "cuda",
        "tf32", "cudnn_benchmark"}``: ``threads`` is the count in force, ``cuda`` the CUDA
        version torch runs with on a GPU (None on the CPU)."""
        on_gpu = self.device_type == "cuda"
        return {
            "device": self.device,
            "device_name": self.device_name(),
            "world_size": self.world_size,
            "threads": torch.get_num_threads(),
            "amp": self.amp,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if on_gpu else None,
            "tf32": self.tf32,
            "cudnn_benchmark": self.cudnn_benchmark,
        }


def make_runtime(
    device: str = "auto",
    amp: str = "off",
    threads: int | None = None,
    seed: int = 0,
    env: Mapping[str, str] | None = None,
) -> Runtime:
    """Resolve a runtime from requests (flags or a recipe) and torchrun's environment
    (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``; ``env`` defaults to ``os.environ``).
    Checks everything, changes nothing: :func:`start` applies it."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give a positive number of CPU threads")
    process = distributed.process_info(os.environ if env is None else env)
    resolved = resolve_device(device, process.local_rank, process.world_size)
    return Runtime(
        device=resolved,
        amp=check_amp(amp, resolved),
        threads=threads,
        rank=process.rank,
        local_rank=process.local_rank,
        world_size=process.world_size,
        seed=seed,
    )


def start(runtime: Runtime) -> Runtime:
    """Apply ``runtime`` to this process, once, at the top of a command: the thread count,
    TF32 and the cuDNN autotuner (always set, so a result never depends on a library default
    or on what ran before), the current GPU, and the process group under torchrun."""
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    _set_tf32(runtime.tf32)
    torch.backends.cudnn.benchmark = runtime.cudnn_benchmark
    if runtime.device_type == "cuda":
        torch.cuda.set_device(runtime.torch_device)
    distributed.init(runtime.rank, runtime.world_size, runtime.torch_device)
    return runtime


def _set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions, on or off. torch >= 2.9 has one setting per
    backend (and refuses to mix it with the older flags); before, ``allow_tf32``."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        precision = "tf32" if enabled else "ieee"
        matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision  # type: ignore[attr-defined]
    else:
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def started(runtime: Runtime) -> Iterator[Runtime]:
    """:func:`start`, then the process group torn down on exit (also on error)."""
    try:
        yield start(runtime)
    finally:
        distributed.shutdown()
