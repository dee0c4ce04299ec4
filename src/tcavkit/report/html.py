"""One self-contained HTML report (inline CSS, PNGs as data URIs, no JS, no external links).

The page is the Jinja2 template ``templates/report.html`` rendered with autoescaping on:
this module turns the tables and the metadata into plain values (strings, numbers, lists),
and the template escapes every one of them. No value is marked safe: the plots go into
``src`` attributes as ``data:image/png;base64,...`` strings, which escaping leaves as they
are.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype

from tcavkit.report.common import (
    DIRECTION_MARKS,
    as_bool,
    as_list,
    directions,
    format_number,
    format_p,
    is_missing,
    sets_of,
    skipped_of,
    statistics_of,
    to_float,
)
from tcavkit.report.figures import EXPLANATIONS, plan_plots
from tcavkit.report.text import (
    STATISTIC_MEANINGS,
    class_findings,
    controls_text,
    detectable_text,
    explain_statistic,
    findings,
    headline,
    report_warnings,
    set_notes,
    statistic_label,
)

RUN_ID_META = "tcavkit-run-id"
"""The ``<meta name=...>`` of report.html that holds the run id of the tables it shows."""

TEMPLATE = "report.html"
SHOWN_FINDINGS = 8
"""The findings' sentences start open when there are at most this many; each class's
one-line headline is always shown first."""
SHOWN_WARNINGS = 6
OPEN_SETS = 12
"""The example-set table starts open when it has at most this many rows."""
_MAX_LABELS = 20
_PLOT_SECTIONS = {
    "statistic": "Tested statistic per class and layer",
    "tcav": "TCAV scores per class and layer (descriptive)",
    "heatmap": "Layer × concept heatmaps of the TCAV score (descriptive)",
    "cav-accuracy": "CAV accuracy",
}
_ROW_CLASS = {"positive": "sig sig-pos", "negative": "sig sig-neg"}
_CELL_CLASS = {"positive": "dir-pos", "negative": "dir-neg"}
_ITEM_CLASS = {"positive": "pos", "negative": "neg"}


@dataclass(frozen=True)
class Cell:
    """One ``<td>``: its text, CSS class and tooltip; ``code`` wraps the text in ``<code>``."""

    text: str
    css: str | None = None
    title: str | None = None
    code: bool = False


@dataclass(frozen=True)
class Header:
    text: str
    title: str | None = None


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    css: str | None = None


@dataclass(frozen=True)
class Table:
    headers: list[Header]
    rows: list[Row]
    id: str | None = None
    css: str | None = None
    foot: Row | None = None


@dataclass(frozen=True)
class Item:
    """A list item: text and an optional CSS class."""

    text: str
    css: str | None = None


@dataclass
class PlotGroup:
    title: str
    explanation: str
    figures: list[dict[str, str]] = field(default_factory=list)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment: package templates, autoescaping on, undefined is an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tcavkit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(
    summary: pd.DataFrame,
    runs: pd.DataFrame | None,
    meta: dict[str, Any],
    plot_paths: Iterable[Path],
    gallery: Sequence[Any] = (),
) -> str:
    """The report as one HTML string; the PNGs in ``plot_paths`` are embedded as base64.

    Order: the findings (overview, one headline line per class, the significant findings
    class by class, the warnings that bear on reading them), the plots, the summary table
    (the columns a reader needs first; all columns on demand), then the details (run id,
    experiment, example sets, timings). ``meta`` is ``results.json`` (may be empty);
    ``meta["run_id"]`` goes into ``<meta name="tcavkit-run-id">`` and the details.
    ``gallery``: the discovered concepts (:func:`tcavkit.report.gallery.gallery`), shown
    after the findings.
    """
    meta = meta if isinstance(meta, dict) else {}
    stats = meta.get("stats") if isinstance(meta.get("stats"), dict) else {}
    config = meta.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    title = f"TCAV report: {name}" if name else "TCAV report"
    run_id = None if is_missing(meta.get("run_id")) else str(meta["run_id"]) or None
    sub = []
    if meta.get("created"):
        sub.append(f"created {meta['created']}")
    if meta.get("tcavkit_version"):
        sub.append(f"tcavkit {meta['tcavkit_version']}")
    if run_id:
        sub.append(f"run {run_id}")

    overview, sentences = findings(summary, stats)
    stat_name, head_rows = headline(summary)
    has_interval = any(t.has_interval for t in statistics_of(summary))
    context = {
        "title": title,
        "subtitle": " · ".join(sub),
        "run_id": run_id,
        "overview": overview,
        "classes": [
            {
                "target": c.target,
                "headline": c.headline,
                "findings": [Item(text, _ITEM_CLASS.get(d)) for text, d in c.findings],
            }
            for c in class_findings(summary)
        ],
        "n_findings": len(sentences),
        "open_findings": len(sentences) <= SHOWN_FINDINGS,
        "explanation": " ".join(
            part
            for part in (
                explain_statistic(stat_name, has_interval) if len(summary) else "",
                controls_text(meta.get("controls")),
                detectable_text(meta.get("detectable")),
            )
            if part
        ),
        "warnings": [Item(w) for w in report_warnings(summary, meta)],
        "shown_warnings": SHOWN_WARNINGS,
        "plot_groups": _plot_groups(summary, plot_paths, stat_name),
        "summary_legend": _summary_legend(stat_name, has_interval),
        "marks": DIRECTION_MARKS,
        "headline": _headline_table(stat_name, head_rows, has_interval),
        "full": _full_table(summary),
        "experiment": _experiment(meta, stats, runs, run_id),
        "config_json": (
            json.dumps(config, indent=2, default=str, ensure_ascii=False) if config else ""
        ),
        "sets": _sets(meta),
        "open_sets": OPEN_SETS,
        "notes": set_notes(meta),
        "timings": _timings(meta.get("timings")),
        "gallery": list(gallery),
    }
    return environment().get_template(TEMPLATE).render(**context)


# ---------------------------------------------------------------- summary tables


def _summary_legend(name: str, has_interval: bool) -> str:
    label = statistic_label(name)
    meaning = STATISTIC_MEANINGS.get(name)
    text = "One row per (target, concept, layer). "
    text += f"{label}: {meaning}" if meaning else f"{label}: the tested statistic"
    text += ", mean over runs"
    text += (
        ", with its interval at the level the correction tests the row at." if has_interval else "."
    )
    text += " random concepts: the same statistic for random image sets, mean ± sd."
    if name != "tcav_score":
        text += " TCAV score: the share of the class's examples whose logit rises (descriptive)."
    return text


def _headline_table(name: str, rows: list, has_interval: bool) -> Table:
    """The columns a reader needs first, one row per summary row: the row's names, then
    the verdict (significant, with its direction, and p_adjusted), so that they are in view
    on a narrow screen too; then the numbers behind it."""
    label = statistic_label(name)
    meaning = STATISTIC_MEANINGS.get(name, "the tested statistic")
    show_score = name != "tcav_score"
    headers = [
        Header("target"),
        Header("concept"),
        Header("layer"),
        Header("significant", "+ above random concepts, − below, after correction"),
        Header("p_adjusted", "p value after multiple-testing correction"),
        Header(
            f"{label} [interval]" if has_interval else label,
            f"Tested: {meaning}; mean over runs"
            + (" [interval at the level the correction tests the row at]" if has_interval else ""),
        ),
        Header("random concepts", f"The {label} of random image sets taken as concepts: mean ± sd"),
    ]
    if show_score:
        headers.append(
            Header("TCAV score", "Share of the class's examples whose logit rises (descriptive)")
        )
    out = []
    for r in rows:
        cells = [
            Cell(r.target),
            Cell(r.concept),
            Cell(r.layer),
            _significant_cell(r.direction),
            Cell(r.p_adjusted, "num"),
            Cell(r.statistic, "num"),
            Cell(r.null, "num"),
        ]
        if show_score:
            cells.append(Cell(r.score, "num"))
        out.append(Row(cells, _ROW_CLASS.get(r.direction)))
    return Table(headers, out, id="summary-table", css="headline")


def _significant_cell(direction: str) -> Cell:
    """``+ significant`` / ``− significant`` (by direction), ``no``."""
    css = _CELL_CLASS.get(direction)
    if css is None:
        return Cell("no")
    return Cell(f"{DIRECTION_MARKS[direction]} significant", css, direction)


def _full_table(summary: pd.DataFrame) -> Table:
    """Every column of the summary, formatted by name and dtype."""
    columns = [str(c) for c in summary.columns]
    dirs = directions(summary)
    formatters = [
        _column_formatter(name, summary[col])
        for name, col in zip(columns, summary.columns, strict=True)
    ]
    rows = []
    for i, record in enumerate(summary.itertuples(index=False, name=None)):
        cells = [
            (_full_significant_cell(v, str(dirs[i])) if name == "significant" else fmt(v))
            for name, fmt, v in zip(columns, formatters, record, strict=True)
        ]
        rows.append(Row(cells, _ROW_CLASS.get(str(dirs[i]))))
    return Table([Header(c) for c in columns], rows, id="summary-full")


def _full_significant_cell(value: Any, direction: str) -> Cell:
    if is_missing(value):
        return Cell("–")
    return _significant_cell(direction)


def _column_formatter(name: str, column: pd.Series):
    """A function value → :class:`Cell` for one summary column, chosen by name and dtype."""
    if name.startswith("p_"):
        return lambda v: Cell(format_p(v), "num")
    if is_bool_dtype(column):
        return lambda v: Cell("–" if is_missing(v) else ("yes" if as_bool(v) else "no"))
    if is_integer_dtype(column):
        return lambda v: Cell(str(v), "num")
    if is_float_dtype(column):
        finite = column.dropna()
        if name.startswith("n_") and (finite == finite.round()).all():
            return lambda v: Cell("–" if is_missing(v) else str(int(to_float(v))), "num")
        return lambda v: Cell(format_number(v), "num")
    return lambda v: Cell("" if is_missing(v) else str(v))


# ---------------------------------------------------------------- plots


def _plot_groups(summary: pd.DataFrame, plot_paths: Iterable[Path], stat: str) -> list[PlotGroup]:
    specs = {s.filename: s for s in plan_plots(summary)}
    groups: dict[str, list[dict[str, str]]] = {}
    for path in plot_paths:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError:
            continue
        spec = specs.get(path.name)
        kind = spec.kind if spec else "other"
        title = spec.title if spec else path.name
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        groups.setdefault(kind, []).append({"src": src, "title": title})
    out = []
    for kind in [*_PLOT_SECTIONS, *sorted(set(groups) - set(_PLOT_SECTIONS))]:
        if kind not in groups:
            continue
        title = _PLOT_SECTIONS.get(kind, "Other plots")
        if kind == "statistic":
            title = f"Tested statistic ({statistic_label(stat)}) per class and layer"
        out.append(PlotGroup(title, EXPLANATIONS.get(kind, ""), groups[kind]))
    return out


# ---------------------------------------------------------------- details


def _experiment(
    meta: dict[str, Any], stats: dict[str, Any], runs: pd.DataFrame | None, run_id: str | None
) -> list[dict[str, Any]]:
    """``dl`` items: ``key`` and ``text``; ``code`` for one code value, ``codes`` for many."""
    model = meta.get("model")
    if not isinstance(model, dict):
        model = {} if is_missing(model) else {"description": model}
    items: list[dict[str, Any]] = []

    def add(key: str, text: Any, code: bool = False, codes: list[str] | None = None) -> None:
        items.append({"key": key, "text": str(text), "code": code, "codes": codes or []})

    if run_id:
        add("Run id", run_id, code=True)
    if model.get("description"):
        add("Model", model["description"])
    if model.get("fingerprint"):
        add("Model fingerprint", model["fingerprint"], code=True)
    layers = model.get("layers")
    if layers:
        add("Layers", "", codes=[str(v) for v in as_list(layers)])
    labels = model.get("labels")
    if isinstance(labels, (list, tuple)) and labels:
        more = f" … ({len(labels)} in all)" if len(labels) > _MAX_LABELS else ""
        add("Labels", more, codes=[str(v) for v in list(labels)[:_MAX_LABELS]])
    if not is_missing(meta.get("seed")):
        add("Seed", meta["seed"])
    if stats:
        keys = ("test", "statistic", "alpha", "correction")
        shown = [f"{k} {stats[k]}" for k in keys if not is_missing(stats.get(k))]
        add("Statistics", ", ".join(shown))
    if runs is not None and len(runs):
        n_null = sum(as_bool(v) for v in runs["is_null"]) if "is_null" in runs else 0
        add("CAVs", f"{len(runs) - n_null} concept runs, {n_null} null runs")
    if meta.get("created"):
        add("Created", meta["created"])
    if meta.get("tcavkit_version"):
        add("tcavkit", meta["tcavkit_version"])
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        add("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()))
    return items


def _sets(meta: dict[str, Any]) -> Table | None:
    sets = sets_of(meta)
    if not sets:
        return None
    texts = any(as_list(info.get("examples")) for info in sets.values())
    head = ("name", "role", "examples", "description", "skipped", "fingerprint")
    head += ("example texts",) if texts else ()
    rows = []
    for name, info in sets.items():
        fp = "" if is_missing(info.get("fingerprint")) else str(info["fingerprint"])
        n_examples = info.get("n_examples")
        rows.append(
            Row(
                [
                    Cell(name),
                    Cell(str(info.get("role") or "")),
                    Cell("–" if is_missing(n_examples) else str(n_examples), "num"),
                    Cell(str(info.get("description") or "")),
                    Cell(str(skipped_of(info)[0]), "num"),
                    Cell(fp[:12], title=fp or None, code=True),
                    *([Cell(" · ".join(map(str, as_list(info.get("examples")))))] if texts else []),
                ]
            )
        )
    return Table([Header(h) for h in head], rows, id="sets-table")


def _timings(timings: Any) -> Table | None:
    """Seconds per phase; the saved ``total`` (or the sum of the phases) as the footer."""
    if not isinstance(timings, dict) or not timings:
        return None
    rows, total = [], 0.0
    saved_total = to_float(timings.get("total"))
    for phase, seconds in timings.items():
        if str(phase) == "total" and not math.isnan(saved_total):
            continue
        s = to_float(seconds)
        total += 0.0 if math.isnan(s) else s
        shown = str(seconds) if math.isnan(s) else f"{s:.2f}"
        rows.append(Row([Cell(str(phase)), Cell(shown, "num")]))
    total = total if math.isnan(saved_total) else saved_total
    foot = Row([Cell("total"), Cell(f"{total:.2f}", "num")])
    return Table([Header("phase"), Header("seconds")], rows, foot=foot)
