"""Several processes training one model: ``torchrun --nproc-per-node N -m codesign ...``.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init` joins the process group (gloo on the CPU, NCCL on GPUs). Every helper here is a
no-op in a single process, so the same code runs with and without torchrun.

What the package keeps identical across ranks: every rank loads the same data and draws the
same seeded subsets; the training loop shards each global batch across ranks and
``DistributedDataParallel`` averages the gradients; calibration shards its images across ranks
and reduces what it measured (:func:`all_reduce_`, :func:`sum_count`, :func:`all_gather_cat`),
so every rank computes the quantizers of the whole calibration set; masks, quantizers and
batch-norm statistics are then broadcast from rank 0 (:func:`broadcast_state_`); only rank 0
writes files, the others wait at a :func:`barrier`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn

from codesign.errors import ConfigError

# Where rank-identity checks write one state digest per rank (tests and debugging only).
RANK_DIGEST_ENV = "CODESIGN_RANK_DIGEST_DIR"


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """This process's place among torchrun's processes (0, 0, 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def process_info(env: Mapping[str, str]) -> ProcessInfo:
    """``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from torchrun's environment; ConfigError
    when they are not integers or do not fit together."""
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them); unset them "
            "to run a single process"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(
            f"RANK={rank} LOCAL_RANK={local_rank} WORLD_SIZE={world_size} do not fit together "
            "(0 <= RANK < WORLD_SIZE); launch with torchrun or unset them"
        )
    return ProcessInfo(rank, local_rank, world_size)


def init(rank: int, world_size: int, device: torch.device) -> None:
    """Join the process group of ``world_size`` processes (a no-op for one): NCCL when this
    process computes on a GPU, gloo on the CPU. The rendezvous address is torchrun's
    ``MASTER_ADDR``/``MASTER_PORT``."""
    if world_size <= 1 or dist.is_initialized():
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_writer() -> bool:
    """True in the process that writes files: rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def rank() -> int:
    """This process's rank in the group (0 in a single process)."""
    return dist.get_rank() if active() else 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if active():
        dist.barrier()


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over every rank (``sum``, ``max`` or ``min``); returns it.
    A no-op in a single process."""
    if active():
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]))
    return tensor


def sum_count(count: int, device: torch.device) -> int:
    """``count`` summed over every rank (a tensor on ``device`` crosses: NCCL needs the GPU);
    ``count`` itself in a single process."""
    if not active():
        return count
    return int(all_reduce_(torch.tensor([count], dtype=torch.int64, device=device)).item())


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The 1-D ``tensor`` of every rank, concatenated in rank order (lengths may differ);
    ``tensor`` itself in a single process. Used where a statistic is not a sum (activation
    samples whose clipping range is searched), so every rank holds the union."""
    if not active():
        return tensor
    world = dist.get_world_size()
    length = torch.tensor([tensor.numel()], dtype=torch.int64, device=tensor.device)
    lengths = [torch.empty_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    counts = [int(n.item()) for n in lengths]
    # all_gather moves equal shapes only: pad to the longest, cut each part back.
    padded = tensor.new_zeros(max(counts))
    padded[: tensor.numel()] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


def all_true(flag: torch.Tensor | bool, device: torch.device | None = None) -> bool:
    """Whether ``flag`` holds on every rank: one control-flow decision all ranks share, so no
    rank leaves a collective the others still wait in."""
    value = torch.as_tensor(flag, device=device).to(torch.int32).reshape(1)
    return bool(all_reduce_(value, "min").item())


@torch.no_grad()
def broadcast_state_(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s, in place
    (a no-op in a single process). Boolean buffers (masks) travel as uint8: gloo has no
    bool type."""
    if not active():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for tensor in tensors:
        if tensor.dtype == torch.bool:
            carrier = tensor.to(torch.uint8)
            dist.broadcast(carrier, src)
            tensor.copy_(carrier.to(torch.bool))
        else:
            dist.broadcast(tensor.data, src)


def write_rank_digest(module: nn.Module, label: str, rank: int, env: Mapping[str, str]) -> None:
    """With ``CODESIGN_RANK_DIGEST_DIR`` set, write the sha256 of ``module``'s state dict to
    ``DIR/<label>-rank<rank>.txt``: how a test checks every rank holds identical weights and
    quantizers without trusting the code that made them so."""
    folder = env.get(RANK_DIGEST_ENV)
    if not folder:
        return
    from pathlib import Path

    from codesign.io import tensors_digest, write_text_atomic

    path = Path(folder) / f"{label}-rank{rank}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, tensors_digest(module.state_dict()) + "\n")
