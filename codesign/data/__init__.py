"""Data: preloaded and streamed splits behind one interface, and the forward loops on them."""

from codesign.data.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATA_KINDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    DataSplit,
    Split,
    load_dataset,
)
from codesign.data.loops import (
    ForwardLoop,
    augment,
    batches,
    correct_per_image,
    evaluate,
    logits_of,
    make_forward_loop,
    training_batches,
)
from codesign.data.streamed import LoaderSettings, StreamedSplit, default_workers

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATA_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataSplit",
    "Dataset",
    "ForwardLoop",
    "LoaderSettings",
    "Split",
    "StreamedSplit",
    "augment",
    "batches",
    "correct_per_image",
    "default_workers",
    "evaluate",
    "load_dataset",
    "logits_of",
    "make_forward_loop",
    "training_batches",
]
