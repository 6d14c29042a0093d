"""Pruning: magnitude and N:M masks, schedules, ``prune_`` via parametrizations, reports."""

from codesign.config import DEFAULT_FINETUNE
from codesign.sparsity.finetune import (
    CubicTiming,
    finetune_pruned,
    make_schedule,
)
from codesign.sparsity.masks import (
    NMPattern,
    Unstructured,
    check_level,
    check_nm,
    global_magnitude_masks,
    kept_magnitude,
    lamp_masks,
    lamp_scores,
    magnitude_mask,
    nm_compliant,
    nm_mask,
    parse_pattern,
)
from codesign.sparsity.prune import (
    SparsityWarning,
    WeightMask,
    plan_pruning,
    prunable_layers,
    prune_,
    remove_pruning,
    update_masks_,
    weight_masks,
)
from codesign.sparsity.report import masked_weights_from_state_dict, sparsity_report
from codesign.sparsity.schedules import CubicSchedule, OneShotSchedule, SparsitySchedule

__all__ = [
    "DEFAULT_FINETUNE",
    "CubicSchedule",
    "CubicTiming",
    "NMPattern",
    "OneShotSchedule",
    "SparsitySchedule",
    "SparsityWarning",
    "Unstructured",
    "WeightMask",
    "check_level",
    "check_nm",
    "finetune_pruned",
    "global_magnitude_masks",
    "kept_magnitude",
    "lamp_masks",
    "lamp_scores",
    "magnitude_mask",
    "make_schedule",
    "masked_weights_from_state_dict",
    "nm_compliant",
    "nm_mask",
    "parse_pattern",
    "plan_pruning",
    "prunable_layers",
    "prune_",
    "remove_pruning",
    "sparsity_report",
    "update_masks_",
    "weight_masks",
]
