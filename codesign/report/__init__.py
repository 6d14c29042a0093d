"""Reports only read results: JSON/CSV, Pareto fronts, figures and the HTML report."""

from codesign.report.pareto import dominates, pareto_front
from codesign.report.results import (
    Point,
    StudyResults,
    build_results,
    results_csv,
    summary_table,
    write_results,
)
from codesign.report.writer import write_report

__all__ = [
    "Point",
    "StudyResults",
    "build_results",
    "dominates",
    "pareto_front",
    "results_csv",
    "summary_table",
    "write_report",
    "write_results",
]
