"""Plain-language text from the result tables: findings and warnings (no markup)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tcavkit.report.common import (
    direction_of,
    directions,
    float_column,
    format_p,
    is_missing,
    sets_of,
    significant_mask,
    skipped_of,
    to_float,
)
from tcavkit.tables import LOW_CAV_ACCURACY, MIN_RANDOM_RUNS

_MAX_LISTED = 5


_WORDING = {"positive": "sensitive", "negative": "negatively sensitive"}


def finding(row: pd.Series, direction: str | None = None) -> str:
    """One sentence for a significant summary row, e.g.

    ``At layer block3, class fire is sensitive to concept red: score 0.93 ± 0.04 vs null
    0.51, p_adj = 1e-06.``

    ``direction`` (``positive``/``negative``, as from :func:`~tcavkit.report.common.directions`)
    picks "is sensitive to" or "is negatively sensitive to"; when not given, the row's own
    ``direction`` value decides (the sign of ``mean - null_mean`` only when it has none).
    """
    if direction not in _WORDING:
        direction = direction_of(row.get("direction"), row.get("mean"), row.get("null_mean"))
    mean, std = to_float(row.get("mean")), to_float(row.get("std"))
    null = to_float(row.get("null_mean"))
    score = f"score {mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")
    parts = [score + ("" if math.isnan(null) else f" vs null {null:.2f}")]
    if not is_missing(row.get("p_adjusted")):
        parts.append(f"p_adj = {format_p(row.get('p_adjusted'))}")
    elif not is_missing(row.get("p_value")):
        parts.append(f"p = {format_p(row.get('p_value'))}")
    return (
        f"At layer {row.get('layer')}, class {row.get('target')} is {_WORDING[direction]} to "
        f"concept {row.get('concept')}: {', '.join(parts)}."
    )


def findings(summary: pd.DataFrame, stats: dict[str, Any]) -> tuple[str, list[str]]:
    """An overview sentence and one :func:`finding` per significant row.

    The overview counts positive findings (the class is sensitive to the concept) and
    negative ones apart; both take their direction from
    :func:`~tcavkit.report.common.directions`.
    """
    sig = significant_mask(summary)
    dirs = directions(summary)
    alpha, correction = stats.get("alpha"), stats.get("correction")
    how = []
    if not is_missing(alpha):
        how.append(f"alpha = {alpha}")
    if correction:
        how.append(f"{correction} correction")
    how_text = f" ({', '.join(how)})" if how else ""
    n, k = len(summary), int(sig.sum())
    if n == 0:
        return "The summary table is empty: there is nothing to report.", []
    if k == 0:
        overview = (
            f"No concept differs significantly from the random null{how_text} for any class "
            f"and layer: none of the {n} tests is significant."
        )
    else:
        n_pos, n_neg = int((dirs == "positive").sum()), int((dirs == "negative").sum())
        overview = (
            f"{k} of {n} (class, concept, layer) tests differ significantly from the "
            f"random null{how_text}: {n_pos} positive (the class is sensitive to the "
            f"concept) and {n_neg} negative (the class is negatively sensitive to it)."
        )
    sentences = [finding(row, dirs[i]) for i, (_, row) in enumerate(summary.iterrows()) if sig[i]]
    return overview, sentences


def generated_warnings(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Warnings the tables imply: near-chance CAVs, skipped files, too few random runs."""
    out: list[str] = []
    if {"concept", "layer", "cav_accuracy_mean"} <= set(summary.columns):
        seen: set[tuple[str, str]] = set()
        acc = float_column(summary, "cav_accuracy_mean")
        for concept, layer, a in zip(summary["concept"], summary["layer"], acc, strict=True):
            key = (str(concept), str(layer))
            if a < LOW_CAV_ACCURACY and key not in seen:
                seen.add(key)
                out.append(
                    f"CAV for concept {concept} at layer {layer} is near chance "
                    f"(accuracy {a:.2f}): its TCAV score means little."
                )
    for name, info in sets_of(meta).items():
        n, files = skipped_of(info)
        if n:
            listed = ", ".join(files[:_MAX_LISTED])
            more = f" and {len(files) - _MAX_LISTED} more" if len(files) > _MAX_LISTED else ""
            which = f" ({listed}{more})" if files else ""
            out.append(f"Set {name}: {n} file(s) skipped{which}.")
    if {"concept", "layer", "n_runs"} <= set(summary.columns):
        out.extend(_few_runs_warnings(summary))
    return out


def _few_runs_warnings(summary: pd.DataFrame) -> list[str]:
    """One warning per distinct ``n_runs < MIN_RANDOM_RUNS``, naming where it occurs."""
    n_runs = float_column(summary, "n_runs")
    few: dict[int, list[str]] = {}
    for concept, layer, n in zip(summary["concept"], summary["layer"], n_runs, strict=True):
        if n < MIN_RANDOM_RUNS:
            where = f"concept {concept} at layer {layer}"
            if where not in few.setdefault(int(n), []):
                few[int(n)].append(where)
    advice = f"use at least {MIN_RANDOM_RUNS} random runs for a reliable test."
    out = []
    for n, places in sorted(few.items()):
        if (n_runs == n).all():
            out.append(f"Only {n} random run(s) per concept and layer: {advice}")
            continue
        listed = "; ".join(places[:_MAX_LISTED])
        more = f"; and {len(places) - _MAX_LISTED} more" if len(places) > _MAX_LISTED else ""
        out.append(f"Only {n} random run(s) for {listed}{more}: {advice}")
    return out
