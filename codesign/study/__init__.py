"""A recipe's variants: the study they share, semantic cache keys, building and scoring each
variant into a typed result, the whole run with its report, the co-design search
(:mod:`codesign.study.search`) and the seed-spread study (:mod:`codesign.study.seeds`)."""

from codesign.pipeline.results import LayerSetting, Timing, VariantResult
from codesign.study.keys import SCORING_VERSION, data_digest, variant_key
from codesign.study.run import run_recipe, run_study
from codesign.study.study import Datapath, Study, check_out_dir, load_datapaths, open_study
from codesign.study.variants import (
    CAPTURE_BATCH,
    VARIANT_FILE,
    build_variant,
    measured_densities,
    read_cached,
    run_variant,
    score_model,
    variant_dir,
)

__all__ = [
    "CAPTURE_BATCH",
    "SCORING_VERSION",
    "VARIANT_FILE",
    "Datapath",
    "LayerSetting",
    "Study",
    "Timing",
    "VariantResult",
    "build_variant",
    "check_out_dir",
    "data_digest",
    "load_datapaths",
    "measured_densities",
    "open_study",
    "read_cached",
    "run_recipe",
    "run_study",
    "run_variant",
    "score_model",
    "variant_dir",
    "variant_key",
]
