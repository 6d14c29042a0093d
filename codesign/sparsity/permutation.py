"""Channel permutations that raise the magnitude N:M keeps (Pool & Yu 2021, NeurIPS).

N:M groups are M *consecutive* input channels. Which channels share a group is arbitrary: if
the producer of a conv's input writes its channels in another order (its output rows, and any
per-channel op in between such as BatchNorm, permuted the same way), the network computes the
same function, and the groups can be chosen so that large weights do not compete for the same N
slots. This module searches such an order per layer by greedy channel swaps between groups
(Pool & Yu's "channel swap" phase, without their bounded-regression escapes) and applies it
where the producer chain is simple: conv -> BatchNorm -> ReLU -> conv, the inside of every
ResNet basic/bottleneck block. Residual streams are left alone (every layer reading the stream
would need the same order).

Apply it to the dense model before ``prune_``; it changes no output (up to float rounding).
``SparsitySpec(permute=True)`` asks for it in `codesign prune --permute`, recipes and
``scripts/compare_pruning.py``, through :func:`permute_for_spec_`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
import torch.fx
from torch import nn

from codesign.config import SparsitySpec
from codesign.errors import SparsityError
from codesign.sparsity.masks import NMPattern, check_nm, kept_magnitude, nm_mask
from codesign.sparsity.prune import SparsityWarning, plan_pruning

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Identity)


def _slot_scores(
    columns: torch.Tensor, order: torch.Tensor, slots: torch.Tensor, n: int, m: int
) -> torch.Tensor:
    """Kept magnitude of the group holding each slot in ``slots`` if that slot took channel c.

    columns: |w| as [P, C] (P = K*R*S positions); order: [C] channel at each slot.
    Returns [len(slots), C].
    """
    groups = columns[:, order].view(columns.shape[0], -1, m)  # [P, G, M]
    base = groups[:, slots // m, :].permute(1, 0, 2)  # [S, P, M]
    trial = base.unsqueeze(1).repeat(1, columns.shape[1], 1, 1)  # [S, C, P, M]
    index = (slots % m).view(-1, 1, 1, 1).expand(-1, columns.shape[1], columns.shape[0], 1)
    trial.scatter_(3, index, columns.t().unsqueeze(0).unsqueeze(-1).expand(len(slots), -1, -1, 1))
    return trial.topk(n, dim=-1).values.sum((-1, -2))


def search_permutation(
    weight: torch.Tensor, n: int = 2, m: int = 4, max_swaps: int = 1000
) -> torch.Tensor:
    """An input-channel order that raises the N:M kept magnitude of ``weight`` [K, C, ...].

    Greedy: apply the best improving swap of two channels in different groups until none
    improves. Returns ``order`` [C] (long): the permuted weight is ``weight[:, order]``.
    Memory grows as C^2 * K*R*S * M floats per step (fine for CIFAR/ImageNet ResNet convs).
    """
    check_nm(n, m)
    channels = weight.shape[1]
    if channels % m:
        raise SparsityError(f"C={channels} is not a multiple of M={m}: no N:M groups to permute")
    columns = weight.detach().abs().movedim(1, -1).reshape(-1, channels).double()
    order = torch.arange(channels, device=columns.device)
    all_slots = torch.arange(channels, device=columns.device)
    group_of = all_slots // m
    scores = _slot_scores(columns, order, all_slots, n, m)  # [C slots, C channels]
    for _ in range(max_swaps):
        group_kept = columns[:, order].view(-1, channels // m, m).topk(n, -1).values.sum((0, 2))
        base = group_kept[group_of]
        moved = scores[:, order]  # [s, t]: slot s's group if it took the channel of slot t
        gain = moved + moved.t() - base.view(-1, 1) - base.view(1, -1)
        gain[group_of.view(-1, 1) == group_of.view(1, -1)] = 0.0
        best = int(gain.argmax())
        s, t = divmod(best, channels)
        if gain[s, t] <= 1e-9 * float(group_kept.sum()):
            break
        order[[s, t]] = order[[t, s]]
        touched = torch.cat(
            [all_slots[group_of == group_of[s]], all_slots[group_of == group_of[t]]]
        )
        scores[touched] = _slot_scores(columns, order, touched, n, m)
    return order


@dataclasses.dataclass(frozen=True)
class PermutationResult:
    """One permuted consumer layer and its N:M kept magnitude before and after."""

    layer: str
    producer: str
    kept_before: float
    kept_after: float


def permutable_chains(model: nn.Module) -> list[tuple[str, str, list[str]]]:
    """(producer conv, consumer conv, per-channel modules between) triples found by tracing.

    A chain is conv -> BatchNorm2d -> elementwise modules -> conv (groups 1), each node with a
    single user, so permuting the producer's outputs only reaches the consumer.
    """
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        between: list[str] = []
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if user.op != "call_module":
                break
            module = modules[user.target]
            if isinstance(module, nn.Conv2d):
                if module.groups == 1 and modules[node.target].groups == 1 and between:
                    chains.append((str(node.target), str(user.target), between))
                break
            if not isinstance(module, (nn.BatchNorm2d, *ELEMENTWISE)):
                break
            between.append(str(user.target))
            current = user
    return chains


@torch.no_grad()
def permute_for_nm_(
    model: nn.Module, n: int = 2, m: int = 4, layers: list[str] | None = None
) -> list[PermutationResult]:
    """Permute the channels between producer/consumer convs so N:M keeps more magnitude.

    ``layers`` limits it to those consumer names (default: every chain found). Only
    permutations that raise the kept magnitude are applied. Raises SparsityError on an
    already pruned or quantized (parametrized) layer: permute the dense float model first.
    """
    modules = dict(model.named_modules())
    results = []
    for producer_name, consumer_name, between in permutable_chains(model):
        if layers is not None and consumer_name not in layers:
            continue
        producer, consumer = modules[producer_name], modules[consumer_name]
        for name, module in ((producer_name, producer), (consumer_name, consumer)):
            if hasattr(module, "parametrizations"):
                raise SparsityError(
                    f"layer {name!r} is already pruned or quantized: permute channels on the "
                    "dense float model, before prune_"
                )
        if consumer.weight.shape[1] % m:
            continue
        before = kept_magnitude(consumer.weight, nm_mask(consumer.weight, n, m))
        order = search_permutation(consumer.weight, n, m)
        permuted = consumer.weight[:, order]
        after = kept_magnitude(permuted, nm_mask(permuted, n, m))
        if after <= before:
            results.append(PermutationResult(consumer_name, producer_name, before, before))
            continue
        consumer.weight.copy_(permuted)
        producer.weight.copy_(producer.weight[order])
        if producer.bias is not None:
            producer.bias.copy_(producer.bias[order])
        for name in between:
            module = modules[name]
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
                    if tensor is not None:
                        tensor.copy_(tensor[order])
        results.append(PermutationResult(consumer_name, producer_name, before, after))
    return results


def permute_for_spec_(model: nn.Module, spec: SparsitySpec) -> dict[str, Any]:
    """Run :func:`permute_for_nm_` on the N:M layers ``spec`` will prune, if it asks to.

    Call it on the dense float model just before ``prune_(model, spec)``. Returns ``{}`` when
    ``spec.permute`` is off, else ``{"kept_before", "kept_after"}`` (sum of kept |w| over the
    permuted layers, weight units) and ``"layers"``: one row per permuted consumer layer.
    Raises SparsityError when the spec prunes no layer N:M (nothing to permute for).
    """
    if not spec.permute:
        return {}
    nm_layers: dict[tuple[int, int], list[str]] = {}
    with warnings.catch_warnings():  # prune_ warns about skipped layers right after this
        warnings.simplefilter("ignore", SparsityWarning)
        plans = plan_pruning(model, spec)
    for plan in plans:
        if isinstance(plan.pattern, NMPattern):
            nm_layers.setdefault((plan.pattern.n, plan.pattern.m), []).append(plan.name)
    if not nm_layers:
        raise SparsityError(
            f"sparsity.permute reorders channels for N:M groups, but {spec.sparsity!r} prunes "
            "no layer N:M: drop permute or use a pattern such as '2:4'"
        )
    results = [
        result
        for (n, m), layers in nm_layers.items()
        for result in permute_for_nm_(model, n, m, layers=layers)
    ]
    return {
        "kept_before": sum(r.kept_before for r in results),
        "kept_after": sum(r.kept_after for r in results),
        "layers": [dataclasses.asdict(r) for r in results],
    }
