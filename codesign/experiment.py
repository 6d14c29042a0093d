"""The study layer under its earlier name: see :mod:`codesign.study`."""

from codesign.study import (
    CAPTURE_BATCH,
    VARIANT_FILE,
    Datapath,
    Study,
    VariantResult,
    build_variant,
    check_out_dir,
    load_datapaths,
    measured_densities,
    open_study,
    run_recipe,
    run_study,
    run_variant,
    score_model,
    variant_dir,
)

__all__ = [
    "CAPTURE_BATCH",
    "VARIANT_FILE",
    "Datapath",
    "Study",
    "VariantResult",
    "build_variant",
    "check_out_dir",
    "load_datapaths",
    "measured_densities",
    "open_study",
    "run_recipe",
    "run_study",
    "run_variant",
    "score_model",
    "variant_dir",
]
