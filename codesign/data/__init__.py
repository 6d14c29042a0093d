"""Data: preloaded tensor data sets and the forward loops built on them."""

from codesign.data.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATA_KINDS,
    Dataset,
    Split,
    load_dataset,
)
from codesign.data.loops import (
    ForwardLoop,
    augment,
    batches,
    evaluate,
    logits_of,
    make_forward_loop,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATA_KINDS",
    "Dataset",
    "ForwardLoop",
    "Split",
    "augment",
    "batches",
    "evaluate",
    "load_dataset",
    "logits_of",
    "make_forward_loop",
]
