"""Cache keys from meaning, never from source files.

A variant's result depends on: its resolved steps, each with its kind and version (a step's
``version`` is raised when its handler's numbers change; see ``codesign.pipeline.steps``);
the float model (name, checkpoint sha256); the data actually loaded (contents, not paths);
the seed; the datapath and energy files; and how a built model is scored
(``SCORING_VERSION``). The key is the sha256 of exactly those, so editing a comment or
moving the data folder keeps every cached variant, while a change that alters numbers raises
a version and rebuilds the variants it touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

import torch

from codesign.data import Dataset, DataSplit, StreamedSplit
from codesign.pipeline import step_record, variant_steps
from codesign.recipe import DataSpec, VariantSpec, digest

if TYPE_CHECKING:
    from codesign.study.study import Study

# Raise when scoring a built model changes its numbers: evaluation, the capture of real
# tensors (``variants.CAPTURE_BATCH``), the simulators or the variant.json fields.
# 2: variant.json records its seed and per-image test correctness (``test_correct``), which
# paired tests read; a variant cached without them is built again under its new key.
#    Bit operations (``bops``, ``effectual_bops``) in every datapath summary.
SCORING_VERSION = 2

# Where the data came from does not change results, what was loaded does: the tensors are
# hashed, so the path (and whether downloading was allowed) stays out of the key.
# Streaming shows in the split digests, and the decoding workers change speed, not numbers.
DATA_FIELDS_NOT_IN_KEY = ("source", "download", "stream", "workers")


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (a contiguous CPU copy if need be)."""
    hasher = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def split_sha256(split: DataSplit) -> str:
    """sha256 (hex) of a split's identity (:func:`split_digest`): for a preloaded split its
    images and labels as loaded."""
    return digest(split_digest(split))


def data_digest(dataset: Dataset, spec: DataSpec) -> dict[str, Any]:
    """What a variant reads of the data: the data set's kind, classes and training
    augmentation, the ``[data]`` fields that size every subset, the validation subset's
    index digest, and sha256s of every split's images and labels as loaded."""
    splits = {"train": dataset.train, "test": dataset.test, "validation": dataset.validation}
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k not in DATA_FIELDS_NOT_IN_KEY}
    return {
        "kind": dataset.name.partition(":")[0],
        "num_classes": dataset.num_classes,
        "flip_augment": dataset.flip_augment,
        "pad_augment": dataset.pad_augment,
        "spec": fields,
        "validation_subset": (
            dataset.validation_info.digest if dataset.validation_info is not None else None
        ),
        "splits": {
            name: None if split is None else split_digest(split) for name, split in splits.items()
        },
    }


def split_digest(split: DataSplit) -> dict[str, Any]:
    """A preloaded split by the sha256 of its tensors; a streamed one (never decoded whole)
    by which files it reads (:meth:`~codesign.data.StreamedSplit.identity`), its transforms
    and its labels."""
    if isinstance(split, StreamedSplit):
        return {
            "files": split.identity(),
            "transforms": split.transform_record(),
            "labels": tensor_sha256(split.labels),
        }
    return {"images": tensor_sha256(split.images), "labels": tensor_sha256(split.labels)}


def study_key_material(study: Study) -> dict[str, Any]:
    """Everything besides a variant's own steps that its result depends on. Mixed precision
    (``amp``) changes what training computes, so a bf16 study keys its variants apart (an
    fp32 study's keys are unchanged). The device, the thread count and the number of
    processes stay out: they move figures only within run-to-run noise (rounding order;
    under torchrun, batch-norm statistics of each rank's share of a batch), and a study
    resumed on another machine reuses what it already built."""
    amp = {"amp": study.runtime.amp} if study.runtime.amp != "off" else {}
    return {
        **amp,
        "model": study.model_name,
        "checkpoint_sha256": study.checkpoint_sha256,
        "data_sha256": study.data_sha256,
        "seed": study.recipe.seed,
        "datapaths": {d.name: d.arch_sha256 for d in study.datapaths},
        "energy_sha256": study.datapaths[0].energy_sha256 if study.datapaths else None,
        "scoring_version": SCORING_VERSION,
    }


def steps_record(variant: VariantSpec) -> list[dict[str, Any]]:
    """The variant's resolved steps, each as ``{"kind", "version", ...spec}``."""
    steps = variant_steps(variant.sparsity, variant.finetune, variant.quant, variant.qat)
    return [step_record(step) for step in steps]


def variant_key(study: Study, variant: VariantSpec) -> str:
    """sha256 (hex) of the variant's steps and the study's key material. The variant's name
    is not in it: two names for the same steps give the same numbers."""
    return digest({"steps": steps_record(variant), **study.key_material()})
