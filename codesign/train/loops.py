"""Plain training: SGD + cosine LR, augmented batches, optional distillation, resumable.

Progress is shown with tqdm. With ``state_path`` the full training state (model, optimizer,
scheduler, epoch, RNG) is written atomically after every epoch, so a killed run resumes from
the last finished epoch with the same result as an uninterrupted one. The state is keyed by the
settings that make it (the TrainSpec, the caller's ``state_key``, the model's and optimizer's
structure) and carries its sha256: a state from other settings is ignored and overwritten, a
damaged one refused (:func:`codesign.io.read_keyed_state`).

A run whose loss or weights go NaN/Inf stops with :class:`codesign.errors.DivergenceError`
at the end of that epoch, before its state is written, so nothing diverged is ever resumed.

Where it computes is the caller's :class:`codesign.runtime.Runtime`: the model and every batch
on its device, the forward passes under bf16 autocast with ``amp="bf16"`` (losses in fp32),
and under torchrun ``DistributedDataParallel``: each global batch of ``spec.batch_size``
images (the same seeded order and augmentation on every rank) is split across the ranks, each
rank's loss weighted by its share so the averaged gradient is the global batch's. The
schedule, the steps per epoch and the learning rate are those of one process; only rank 0
writes the resumable state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from codesign import distributed
from codesign.config import TrainSpec
from codesign.data import Dataset, training_batches
from codesign.errors import CheckpointError, DivergenceError
from codesign.io import read_keyed_state, settings_key, write_keyed_state
from codesign.runtime import Runtime

StepHook = Callable[[int], None]


def set_bn_frozen(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or resume) BatchNorm running-statistics updates; affine parameters still train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval() if frozen else module.train()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. 2015: KL(teacher || student) at temperature T, scaled by T^2."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)


def train(
    model: nn.Module,
    dataset: Dataset,
    spec: TrainSpec,
    *,
    teacher: nn.Module | None = None,
    on_step: StepHook | None = None,
    state_path: str | Path | None = None,
    state_key: str | None = None,
    parameters: list[nn.Parameter] | None = None,
    extra_param_groups: list[dict[str, Any]] | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``dataset.train``; returns ``{"train_seconds", "epochs",
    "steps", "final_loss"}``. ``runtime`` (default: one CPU process, fp32) says where; the
    model (and ``teacher``) are moved to its device.

    ``on_step(step)`` runs before every optimizer step (pruning schedules use it).
    ``extra_param_groups`` lets quantizers train their step sizes at their own learning rate.
    ``state_key`` describes what the state at ``state_path`` depends on beyond ``spec`` and
    the model's structure (where the starting weights come from, the data): a state written
    under another key is not resumed. Raises DivergenceError when the loss or the weights
    become NaN/Inf, CheckpointError when the state file is damaged.
    """
    runtime = runtime if runtime is not None else Runtime()
    device = runtime.torch_device
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    torch.manual_seed(spec.seed)
    # On the CPU whatever the device: the order and the augmentation are then the same on
    # every device and every rank.
    generator = torch.Generator().manual_seed(spec.seed)
    params = (
        parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    )
    groups: list[dict[str, Any]] = [{"params": params}, *list(extra_param_groups or [])]
    optimizer = torch.optim.SGD(
        groups, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=True
    )
    steps_per_epoch = max(1, math.ceil(len(dataset.train) / spec.batch_size))
    total_steps = max(1, spec.epochs * steps_per_epoch)
    warmup_steps = int(spec.warmup_epochs * steps_per_epoch)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_fraction = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress_fraction))

    key = _state_settings_key(model, spec, optimizer, teacher, state_key, runtime)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start_epoch = 0
    if state_path is not None:
        state = read_keyed_state(state_path, key, "training state")
        if state is not None:
            start_epoch = _resume(state, state_path, model, optimizer, scheduler, generator)
        distributed.barrier()  # every rank has read the state before rank 0 may rewrite it
    if teacher is not None:
        teacher.eval()
    net = _data_parallel(model, runtime)

    started = time.perf_counter()
    step = start_epoch * steps_per_epoch
    last_loss = float("nan")
    for epoch in range(start_epoch, spec.epochs):
        net.train()
        if 0 <= spec.freeze_bn_epoch <= epoch:
            set_bn_frozen(model)
        running = torch.zeros((), device=device)
        # Non-finite losses are tracked on the loss's device without a host sync per step:
        # ``finite`` stays True until the first NaN/Inf loss, ``finite_steps`` counts the steps
        # before it. They are read once per epoch (where ``running`` is read anyway).
        finite = torch.ones((), dtype=torch.bool, device=device)
        finite_steps = torch.zeros((), dtype=torch.int64, device=device)
        epoch_first_step = step
        bar = tqdm(
            training_batches(dataset, spec.batch_size, generator),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{spec.epochs}",
            disable=not progress or not runtime.is_writer,
            leave=False,
        )
        for images, labels in bar:
            if on_step is not None:
                on_step(step)
            images, labels, share = _rank_shard(images, labels, runtime)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with runtime.autocast():
                logits = net(images)
                if teacher is not None and spec.distill_temperature > 0:
                    with torch.no_grad():
                        teacher_logits = teacher(images)
            # Losses in fp32 whatever the autocast dtype: bf16 log-softmax loses the small
            # probabilities distillation is about.
            loss = F.cross_entropy(logits.float(), labels)
            if teacher is not None and spec.distill_temperature > 0:
                kd = distillation_loss(
                    logits.float(), teacher_logits.float(), spec.distill_temperature
                )
                loss = (1 - spec.distill_weight) * loss + spec.distill_weight * kd
            loss = loss * share  # DDP averages over ranks: each rank's share of the batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.detach()
            finite = finite & torch.isfinite(loss.detach())
            finite_steps = finite_steps + finite
            step += 1
        if not distributed.all_true(finite, device):
            bad = epoch_first_step + int(finite_steps) + 1
            raise DivergenceError(
                f"training diverged: the loss became NaN/Inf at epoch {epoch + 1}, step {bad} "
                f"(of {total_steps}); lower the learning rate (lr={spec.lr:g})"
            )
        # Batch-norm statistics follow each rank's own shard: rank 0's are kept, as DDP
        # itself does at every forward, so every rank ends the epoch with one model.
        distributed.broadcast_state_(model, buffers_only=True)
        _check_finite_weights(model, epoch, spec)
        last_loss = float(distributed.all_reduce_(running)) / steps_per_epoch / runtime.world_size
        if state_path is not None:
            if runtime.is_writer:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch + 1,
                }
                write_keyed_state(state_path, state, key)
            distributed.barrier()
    model.eval()
    return {
        "train_seconds": time.perf_counter() - started,
        "epochs": spec.epochs,
        "steps": step,
        "final_loss": last_loss,
    }


def _data_parallel(model: nn.Module, runtime: Runtime) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun, else itself. Wrapping
    broadcasts rank 0's parameters and buffers, so every rank starts from one model."""
    if not runtime.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [runtime.torch_device.index] if runtime.device_type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _rank_shard(
    images: torch.Tensor, labels: torch.Tensor, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's part of a global batch (every ``world_size``-th sample from ``rank``) and
    its loss weight ``n_rank * world_size / n``, so the mean of the ranks' weighted losses is
    the global batch's mean loss even when the batch does not split evenly. A batch smaller
    than the world gives each rank one sample, shared by several ranks and weighted down by
    how many hold it (every rank must take part in each step)."""
    if not runtime.distributed:
        return images, labels, 1.0
    count, world, rank = int(labels.shape[0]), runtime.world_size, runtime.rank
    if count >= world:
        index = torch.arange(rank, count, world)
        return images[index], labels[index], index.numel() * world / count
    holders = len(range(rank % count, world, count))  # ranks that hold this sample
    index = torch.tensor([rank % count])
    return images[index], labels[index], world / (count * holders)


def _state_settings_key(
    model: nn.Module,
    spec: TrainSpec,
    optimizer: torch.optim.Optimizer,
    teacher: nn.Module | None,
    state_key: str | None,
    runtime: Runtime,
) -> str:
    """The key a resumable state is written under. The model enters by structure (names,
    dtypes, shapes), not by values: a calibration that is not bit-reproducible on an
    accelerator would otherwise never resume; the caller's ``state_key`` names where the
    starting values come from. Mixed precision changes the numbers, so it is in the key (the
    device and the number of processes are not: a run may resume elsewhere)."""
    groups = [
        {
            **{name: value for name, value in group.items() if name != "params"},
            "params": [list(p.shape) for p in group["params"]],
        }
        for group in optimizer.param_groups
    ]
    return settings_key(
        {
            "format": "codesign-train-state-v1",
            "train": spec.to_dict(),
            "state_key": state_key,
            "model": [[n, str(t.dtype), list(t.shape)] for n, t in model.state_dict().items()],
            "param_groups": groups,
            "distilled": teacher is not None,
            **({"amp": runtime.amp} if runtime.amp != "off" else {}),
        }
    )


def _resume(
    state: Any,
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> int:
    """Load a verified state written under this run's key; returns the epoch to start at."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        # Same key and an intact digest make this a writer's bug, not a user's file; still
        # say which file and how to get past it.
        raise CheckpointError(
            f"training state {path} does not fit this run ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to start over"
        ) from None


def _check_finite_weights(model: nn.Module, epoch: int, spec: TrainSpec) -> None:
    """Raise DivergenceError when a floating tensor of ``model`` holds NaN/Inf: the last
    update of an epoch can overflow the weights after the last (finite) loss was seen."""
    tensors = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return
    name = next(n for n, t in tensors if not bool(torch.isfinite(t).all()))
    raise DivergenceError(
        f"training diverged: {name} became NaN/Inf in epoch {epoch + 1}; lower the learning "
        f"rate (lr={spec.lr:g})"
    )
