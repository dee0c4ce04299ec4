"""The vocabulary of the results tables, in one place: column names and reading thresholds.

The pipeline writes these columns, :mod:`tcavkit.stats` reads and adds to them, the report
and the command line show them. This module imports nothing, so every side can use it.
"""

from __future__ import annotations

#: The runs table (one row per scored CAV): the stable columns, in order.
RUN_COLUMNS: tuple[str, ...] = (
    "target",
    "concept",
    "layer",
    "random",
    "run",
    "tcav_score",
    "magnitude",
    "cav_accuracy",
    "is_null",
)
#: Further runs-table columns (see :mod:`tcavkit.scoring` for their definitions).
EXTRA_RUN_COLUMNS: tuple[str, ...] = ("magnitude_ratio", "separation", "effect", "kind")

#: The summary table (one row per target, concept and layer): the stable columns, in order.
CORE_SUMMARY_COLUMNS: tuple[str, ...] = (
    "target",
    "concept",
    "layer",
    "n_runs",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "null_mean",
    "null_std",
    "p_value",
    "p_adjusted",
    "significant",
    "cav_accuracy_mean",
)
#: Every summary column, in order (:func:`tcavkit.stats.summarize` writes exactly these).
SUMMARY_COLUMNS: tuple[str, ...] = (
    *CORE_SUMMARY_COLUMNS,
    "magnitude_mean",
    "n_null",
    "n_null_runs",
    "test",
    "statistic",
    "statistic_mean",
    "statistic_null_mean",
    "statistic_null_std",
    "statistic_low",
    "statistic_high",
    "detectable",
    "direction",
)

#: Columns that hold names: read back as text, never as numbers ("1" is a layer name).
NAME_COLUMNS: tuple[str, ...] = ("target", "concept", "layer", "random")

MIN_RANDOM_RUNS = 10
"""Fewer random runs than this per concept gives unstable scores and a weak test: warned."""


def few_runs_warning(n_runs: int, where: str = "per concept") -> str:
    """The one text of the too-few-random-runs warning, e.g. ``only 3 random runs per
    concept: ...``: the run warns with it before its passes, and the report reads it from
    the tables with the same words, so that one fact is listed once."""
    return (
        f"only {n_runs} random runs {where}: fewer than {MIN_RANDOM_RUNS} gives unstable "
        "scores and weak tests; use 20 or more random sets"
    )


LOW_CAV_ACCURACY = 0.6
"""A CAV whose mean held-out accuracy is below this is flagged as near chance."""
