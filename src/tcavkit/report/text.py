"""Plain-language text from the result tables: findings and warnings (no markup)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tcavkit.report.common import (
    as_list,
    direction_of,
    directions,
    float_column,
    format_number,
    format_p,
    is_missing,
    ordered_unique,
    sets_of,
    significant_mask,
    skipped_of,
    statistic_of,
    statistics_of,
    table_decimals,
    to_float,
)
from tcavkit.tables import LOW_CAV_ACCURACY, MIN_RANDOM_RUNS, few_runs_warning

_MAX_LISTED = 5
_MAX_NEAR_CHANCE = 12

STATISTIC_LABELS = {"effect": "effect", "tcav_score": "TCAV score", "magnitude": "mean slope"}
"""Short names of the tested statistics, for headers and legends."""

STATISTIC_MEANINGS = {
    "effect": (
        "how much the class logit changes when an example moves from the random images' mean "
        "toward the concept's mean along the CAV (logit units)"
    ),
    "tcav_score": "the share of the class's examples whose logit rises along the CAV",
    "magnitude": "the mean slope of the class logit along the CAV (logit per unit of activation)",
}
"""What each tested statistic measures, in plain words."""

RANDOM_CONCEPTS = "random image sets, each tested as if it were a concept"
"""What "random concepts" (the null) are, in plain words."""


def statistic_label(name: str) -> str:
    """The short name of statistic ``name`` (the name itself when unknown)."""
    return STATISTIC_LABELS.get(name, name)


def explain_statistic(name: str, has_interval: bool) -> str:
    """A paragraph on what was tested: the statistic, the null, the interval, the score."""
    label = statistic_label(name)
    meaning = STATISTIC_MEANINGS.get(name, "the statistic the test compares")
    text = (
        f"Tested: the {label}, {meaning}, averaged over the runs. Each concept is compared "
        f"with random concepts ({RANDOM_CONCEPTS})."
    )
    if has_interval:
        text += (
            " Each interval is at the level the multiple-testing correction tests its row at, "
            "so it excludes the random concepts' mean exactly when the row is significant."
        )
    if name != "tcav_score":
        text += (
            " The TCAV score (the share of the class's examples whose logit rises along the "
            f"CAV) describes the result; significance comes from the {label}."
        )
    return text


def controls_text(controls: Any) -> str:
    """A sentence on the built-in negative controls (random sets tested as concepts), or
    an empty string when the run had none."""
    if not isinstance(controls, dict) or not controls.get("tested"):
        return ""
    tested, significant = int(controls["tested"]), int(controls.get("significant", 0))
    at_alpha, alpha = int(controls.get("at_alpha", 0)), controls.get("alpha", 0.05)
    verdict = (
        "as expected of a calibrated test"
        if significant == 0
        else "more than a calibrated test should give: read the findings with care"
    )
    return (
        f"Negative controls: {significant} of {tested} random sets tested as if they were "
        f"concepts came out significant after correction, {verdict}; {at_alpha} "
        f"({at_alpha / tested:.0%}) had p \u2264 {alpha} before correction (about "
        f"{alpha:.0%} expected)."
    )


def detectable_text(records: Any) -> str:
    """What a "not significant" means at each (target, layer): the smallest difference from
    random concepts the run could have called significant (the ``detectable`` records of
    :func:`tcavkit.stats.detectable_effects`), or an empty string when it has none."""
    if not isinstance(records, list) or not records:
        return ""
    parts = []
    for record in records:
        if not isinstance(record, dict) or record.get("detectable") is None:
            continue
        value = float(record["detectable"])
        low, high = record.get("min"), record.get("max")
        spread = ""
        if low is not None and high is not None and float(high) > float(low) * 1.05:
            spread = f" ({_sig(float(low))} to {_sig(float(high))} by set size)"
        parts.append(f"{record.get('target')} at {record.get('layer')}: {_sig(value)}{spread}")
    if not parts:
        return ""
    label = statistic_label(str(records[0].get("statistic", "effect")))
    return (
        f"What the test could see: a concept not marked significant differs from random "
        f"concepts by less than about this much {label}, or by too little for this run to "
        f"tell: " + "; ".join(parts) + "."
    )


def _sig(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits (``0.0041``, ``1.3``, ``120``)."""
    if not np.isfinite(value) or value == 0:
        return "0" if value == 0 else "-"
    return f"{value:.{digits}g}" if abs(value) >= 1e-4 else f"{value:.1e}"


def finding(row: pd.Series, direction: str | None = None, decimals: int | None = None) -> str:
    """One sentence for a significant summary row, in the terms of its tested statistic, e.g.

    ``At layer block3, moving from random images toward concept red raises the logit of
    class fire by 9.1 (interval 6.8 to 11.4; random concepts change it by 0.0 ± 0.1); 100%
    of fire examples rise along it (TCAV score 1.00). p_adj = 2e-07.``

    ``direction`` (``positive``/``negative``, as from :func:`~tcavkit.report.common.directions`)
    says whether the statistic is above or below random concepts (``raises``/``lowers``);
    when not given, the row's own ``direction`` value decides (the sign of the tested
    statistic against its null only when it has none). Rows without the ``statistic_*``
    columns tested the TCAV score, and are worded so. ``decimals``: those of the tested
    statistic's numbers (see :func:`~tcavkit.report.common.statistic_of`).
    """
    tested = statistic_of(row, decimals)
    if direction not in ("positive", "negative"):
        direction = direction_of(row.get("direction"), tested.mean, tested.null_mean)
    up = direction == "positive"
    target, concept, layer = row.get("target"), row.get("concept"), row.get("layer")
    score = to_float(row.get("mean"))
    rise = (
        ""
        if math.isnan(score)
        else f"; {score:.0%} of {target} examples rise along it (TCAV score {score:.2f})"
    )
    null = tested.null()
    if tested.name == "effect":
        head = f"moving from random images toward concept {concept}"
        same_side = tested.low > 0 if up else tested.high < 0
        if (tested.mean > 0 if up else tested.mean < 0) and (same_side or not tested.has_interval):
            # raises (lowers) by |m|: the interval of the change as magnitudes, low to high
            bounds = sorted(abs(v) for v in (tested.low, tested.high))
            interval = (
                f"interval {tested.number(bounds[0])} to {tested.number(bounds[1])}; "
                if tested.has_interval
                else ""
            )
            body = (
                f"{head} {'raises' if up else 'lowers'} the logit of class {target} by "
                f"{tested.number(abs(tested.mean))} ({interval}random concepts change it by "
                f"{null}){rise}"
            )
        else:  # the change's sign is not (everywhere) that of its difference from random
            interval = f" (interval {tested.interval(' to ')})" if tested.has_interval else ""
            body = (
                f"{head} changes the logit of class {target} by {tested.number(tested.mean)}"
                f"{interval}, {'more' if up else 'less'} than random concepts do ({null})"
                f"{rise}"
            )
    elif tested.name == "tcav_score":
        interval = f", interval {tested.interval(' to ')}" if tested.has_interval else ""
        share = "–" if math.isnan(tested.mean) else f"{tested.mean:.0%}"
        body = (
            f"the logit of class {target} rises along concept {concept} for {share} of its "
            f"examples (TCAV score {tested.number(tested.mean)}{interval}; random concepts: "
            f"{null}), {'more' if up else 'less'} often than along random concepts"
        )
    else:
        label = statistic_label(tested.name)
        interval = f"interval {tested.interval(' to ')}; " if tested.has_interval else ""
        body = (
            f"the {label} of the logit of class {target} along concept {concept} is "
            f"{tested.number(tested.mean)} ({interval}random concepts: {null}), "
            f"{'above' if up else 'below'} random concepts{rise}"
        )
    if not is_missing(row.get("p_adjusted")):
        p_text = f" p_adj = {format_p(row.get('p_adjusted'))}."
    elif not is_missing(row.get("p_value")):
        p_text = f" p = {format_p(row.get('p_value'))}."
    else:
        p_text = ""
    return f"At layer {layer}, {body}.{p_text}"


_SIDES = {
    "effect": ("the concept raises the class logit", "it lowers it"),
    "tcav_score": (
        "the class logit rises along the concept for more examples than along random concepts",
        "for fewer",
    ),
}


def findings(summary: pd.DataFrame, stats: dict[str, Any]) -> tuple[str, list[str]]:
    """An overview sentence and one :func:`finding` per significant row.

    The overview names the tested statistic and counts positive findings (above random
    concepts) and negative ones apart; both take their direction from
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
    name = statistic_of(summary.iloc[0]).name
    label = statistic_label(name)
    if k == 0:
        overview = (
            f"No concept differs significantly from random concepts{how_text} for any class "
            f"and layer: none of the {n} tests of the {label} is significant."
        )
    else:
        n_pos, n_neg = int((dirs == "positive").sum()), int((dirs == "negative").sum())
        pos, neg = _SIDES.get(name, (f"the {label} is above random concepts", "below"))
        overview = (
            f"{k} of {n} (class, concept, layer) tests of the {label} differ significantly "
            f"from random concepts{how_text}: {n_pos} positive ({pos}) and {n_neg} "
            f"negative ({neg})."
        )
    decimals = table_decimals(summary)
    sentences = [
        finding(row, dirs[i], decimals) for i, (_, row) in enumerate(summary.iterrows()) if sig[i]
    ]
    return overview, sentences


@dataclass(frozen=True)
class ClassFindings:
    """One class's findings: ``headline``, one line naming its significant concepts by
    direction (strongest first, each with its layers), and ``findings``, a
    :func:`finding` sentence and its direction per significant row, in table order."""

    target: str
    headline: str
    findings: list[tuple[str, str]]


def class_findings(summary: pd.DataFrame) -> list[ClassFindings]:
    """:class:`ClassFindings` of every target of ``summary``, in order of appearance, those
    without a significant row included: a reader sees every class's result in one line
    before the sentences."""
    if summary.empty or "target" not in summary.columns:
        return []
    sig, dirs, decimals = significant_mask(summary), directions(summary), table_decimals(summary)
    p_column = "p_adjusted" if "p_adjusted" in summary.columns else "p_value"
    p = float_column(summary, p_column)
    targets = [_name(t) for t in summary["target"]]
    out = []
    for target in ordered_unique(targets):
        rows = [i for i, t in enumerate(targets) if t == target]
        found = [i for i in rows if sig[i]]
        parts = []
        for direction in ("positive", "negative"):
            layers: dict[str, list[str]] = {}
            strongest: dict[str, float] = {}
            for i in (i for i in found if dirs[i] == direction):
                concept = _name(summary["concept"].iloc[i]) if "concept" in summary else ""
                layers.setdefault(concept, []).append(_name(summary["layer"].iloc[i]))
                value = p[i] if math.isfinite(p[i]) else 1.0
                strongest[concept] = min(strongest.get(concept, 1.0), value)
            if layers:
                ranked = sorted(layers, key=lambda c: strongest[c])  # stable: table order
                named = ", ".join(f"{c} ({', '.join(layers[c])})" for c in ranked)
                parts.append(f"{direction}: {named}")
        headline = (
            "; ".join(parts)
            if parts
            else f"no concept differs significantly from random concepts ({len(rows)} tests)"
        )
        sentences = [
            (finding(summary.iloc[i], str(dirs[i]), decimals), str(dirs[i])) for i in found
        ]
        out.append(ClassFindings(target, headline, sentences))
    return out


@dataclass(frozen=True)
class HeadlineRow:
    """One summary row as the report's first table and the console show it (plain text)."""

    target: str
    concept: str
    layer: str
    statistic: str
    null: str
    score: str
    p_adjusted: str
    direction: str


def headline(summary: pd.DataFrame) -> tuple[str, list[HeadlineRow]]:
    """The tested statistic's name and, per row, the columns a reader needs first.

    ``statistic`` is the tested statistic with its interval (``15.5 [12.8, 18.2]``),
    ``null`` that of random concepts (``0.0 ± 0.7``), ``score`` the TCAV score, and
    ``direction`` that of :func:`~tcavkit.report.common.directions`: a row is marked only
    when it is significant, and then its interval excludes the null (the summary's
    ``statistic_low``/``statistic_high`` are made so).
    """
    tested = statistics_of(summary)
    dirs = directions(summary)
    name = tested[0].name if tested else "effect"
    rows = []
    for i, record in enumerate(summary.to_dict(orient="records")):
        t = tested[i]
        score = to_float(record.get("mean"))
        p = record.get("p_adjusted") if "p_adjusted" in record else record.get("p_value")
        rows.append(
            HeadlineRow(
                target=_name(record.get("target")),
                concept=_name(record.get("concept")),
                layer=_name(record.get("layer")),
                statistic=t.with_interval(),
                null=t.null(),
                score="–" if math.isnan(score) else f"{score:.2f}",
                p_adjusted=format_p(p),
                direction=str(dirs[i]),
            )
        )
    return name, rows


def _name(value: Any) -> str:
    return "" if is_missing(value) else str(value)


def report_warnings(summary: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Every warning the report lists, each once and in order: the run's own
    (``meta["warnings"]``), then those the tables imply (:func:`reading_warnings`) that the
    run did not already give. The command line counts and prints these same texts, so the
    console and the report agree. White space is collapsed (as a browser shows it).
    """
    texts = [str(w) for w in as_list(meta.get("warnings"))] + reading_warnings(summary)
    return list(dict.fromkeys(" ".join(text.split()) for text in texts))


def reading_warnings(summary: pd.DataFrame) -> list[str]:
    """Warnings that change how the results read: one naming every near-chance CAV (by
    concept and layer), one per distinct too-small number of random runs."""
    out: list[str] = []
    if {"concept", "layer", "cav_accuracy_mean"} <= set(summary.columns):
        low: dict[tuple[str, str], float] = {}
        acc = float_column(summary, "cav_accuracy_mean")
        for concept, layer, a in zip(summary["concept"], summary["layer"], acc, strict=True):
            if a < LOW_CAV_ACCURACY:
                low.setdefault((str(concept), str(layer)), float(a))
        if low:
            listed = [f"{c} at {layer} ({format_number(a, 2)})" for (c, layer), a in low.items()]
            more = len(listed) - _MAX_NEAR_CHANCE
            out.append(
                f"CAVs near chance (accuracy below {LOW_CAV_ACCURACY:g}) for concept "
                f"{', '.join(listed[:_MAX_NEAR_CHANCE])}{f' and {more} more' if more > 0 else ''}"
                ": the concept is hardly told apart from random images at that layer, so its "
                "TCAV score there means little."
            )
    if {"concept", "layer", "n_runs"} <= set(summary.columns):
        out.extend(_few_runs_warnings(summary))
    return out


def set_notes(meta: dict[str, Any]) -> list[str]:
    """One note per example set that skipped files (unreadable or filtered out)."""
    out: list[str] = []
    for name, info in sets_of(meta).items():
        n, files = skipped_of(info)
        if n:
            listed = ", ".join(files[:_MAX_LISTED])
            more = f" and {len(files) - _MAX_LISTED} more" if len(files) > _MAX_LISTED else ""
            which = f" ({listed}{more})" if files else ""
            out.append(f"Set {name}: {n} file(s) skipped{which}.")
    return out


def _few_runs_warnings(summary: pd.DataFrame) -> list[str]:
    """One warning per distinct ``n_runs < MIN_RANDOM_RUNS``, naming where it occurs (the
    run's own words, :func:`~tcavkit.tables.few_runs_warning`, when every row has it)."""
    n_runs = float_column(summary, "n_runs")
    few: dict[int, list[str]] = {}
    for concept, layer, n in zip(summary["concept"], summary["layer"], n_runs, strict=True):
        if n < MIN_RANDOM_RUNS:
            where = f"concept {concept} at layer {layer}"
            if where not in few.setdefault(int(n), []):
                few[int(n)].append(where)
    out = []
    for n, places in sorted(few.items()):
        if (n_runs == n).all():
            out.append(few_runs_warning(n))
            continue
        listed = "; ".join(places[:_MAX_LISTED])
        more = f"; and {len(places) - _MAX_LISTED} more" if len(places) > _MAX_LISTED else ""
        out.append(few_runs_warning(n, f"for {listed}{more}"))
    return out
