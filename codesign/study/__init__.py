"""A recipe's variants: the study they share, semantic cache keys, building and scoring each
variant into a typed result, the whole run with its report, its fan-out over processes and machines
(:mod:`codesign.study.fanout`, locks in :mod:`codesign.locks`), the co-design search
(:mod:`codesign.study.search`) and the builds a recipe's ``seeds`` ask for
(:mod:`codesign.study.seeds`)."""

from codesign.pipeline.results import LayerSetting, Timing, VariantResult
from codesign.study.fanout import build_tasks, build_variants, select_variants
from codesign.study.keys import SCORING_VERSION, data_digest, variant_key
from codesign.study.manifest import read_manifest, write_manifest
from codesign.study.run import report_study, run_recipe, run_study, write_study_report
from codesign.study.study import (
    Datapath,
    Study,
    at_seed,
    check_out_dir,
    load_datapaths,
    open_study,
)
from codesign.study.variants import (
    CAPTURE_BATCH,
    VARIANT_FILE,
    attempt_variant,
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
    "at_seed",
    "attempt_variant",
    "build_tasks",
    "build_variant",
    "build_variants",
    "check_out_dir",
    "data_digest",
    "load_datapaths",
    "measured_densities",
    "open_study",
    "read_cached",
    "read_manifest",
    "report_study",
    "run_recipe",
    "run_study",
    "run_variant",
    "score_model",
    "select_variants",
    "variant_dir",
    "variant_key",
    "write_manifest",
    "write_study_report",
]
