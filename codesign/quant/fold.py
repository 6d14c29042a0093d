"""Fold BatchNorm into the preceding convolution before post-training quantization.

Quantizing the folded weight is what integer hardware runs, so PTQ must see it. Conv -> BN
pairs are found with torch.fx (a BN whose only input is a conv used nowhere else), which works
for any model fx can trace rather than by layer-name conventions.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of (conv, bn) module pairs where the BN directly and solely consumes the conv."""
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        producer = node.args[0]
        if (
            isinstance(producer, fx.Node)
            and producer.op == "call_module"
            and isinstance(modules.get(producer.target), nn.Conv2d)
            and len(producer.users) == 1
        ):
            pairs.append((str(producer.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BN into its conv in place (BN becomes Identity); returns the pairs.

    A pruned conv (mask parametrization) keeps its mask: the per-channel BN factor scales
    the stored weight, so masked zeros stay zero.
    """
    pairs = conv_bn_pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        if parametrize.is_parametrized(conv, "weight"):
            stored = conv.parametrizations.weight.original
        else:
            stored = conv.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_weight, new_bias = fuse_conv_bn_weights(
            stored, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        stored.data.copy_(new_weight)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.detach().clone())
        else:
            conv.bias.data.copy_(new_bias)
        parent_name, _, child = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return pairs
