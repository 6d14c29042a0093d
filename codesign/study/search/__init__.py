"""Hardware-aware co-design search: per-layer widths and sparsity chosen from measured
sensitivity and simulated per-layer energy, verified by building the chosen models
(the steps are in :mod:`codesign.study.search.run`)."""

from codesign.study.search.front import (
    DROP_STEP,
    MAX_DROP,
    Assignment,
    charged_drops,
    feasible_span,
    first_guess,
    solve_front,
    spread_along_front,
)
from codesign.study.search.options import (
    Option,
    configuration_variant,
    option_variant,
    options_of,
    searchable_layers,
)
from codesign.study.search.results import (
    FrontEntry,
    LayerChoice,
    SearchResult,
    VerifiedConfiguration,
)
from codesign.study.search.run import check_search, run_search
from codesign.study.search.tables import (
    TABLES_VERSION,
    SearchTables,
    accuracies,
    cached_tables,
    measure_tables,
)
from codesign.study.search.verify import Builds, Goal, choose, judge, spread

__all__ = [
    "DROP_STEP",
    "MAX_DROP",
    "TABLES_VERSION",
    "Assignment",
    "Builds",
    "FrontEntry",
    "Goal",
    "LayerChoice",
    "Option",
    "SearchResult",
    "SearchTables",
    "VerifiedConfiguration",
    "accuracies",
    "cached_tables",
    "charged_drops",
    "check_search",
    "choose",
    "configuration_variant",
    "feasible_span",
    "first_guess",
    "judge",
    "measure_tables",
    "option_variant",
    "options_of",
    "run_search",
    "searchable_layers",
    "solve_front",
    "spread",
    "spread_along_front",
]
