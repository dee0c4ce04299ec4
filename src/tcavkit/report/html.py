"""One self-contained HTML report (inline CSS, PNGs as data URIs, no JS, no external links).

Every string from the user or the data goes through :func:`html.escape`; only this module's
own markup is inserted as is.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype

from tcavkit.report.common import (
    DIRECTION_MARKS,
    as_bool,
    as_list,
    directions,
    format_float,
    format_p,
    is_missing,
    sets_of,
    skipped_of,
    to_float,
)
from tcavkit.report.plots import EXPLANATIONS, plan_plots
from tcavkit.report.text import findings, generated_warnings

_MAX_LABELS = 20
_NAV = (
    '<nav class="toc"><a href="#experiment">Experiment</a> <a href="#warnings">Warnings</a> '
    '<a href="#results">Results</a> <a href="#summary">Summary table</a> '
    '<a href="#plots">Plots</a></nav>'
)
_PLOT_SECTIONS = {
    "tcav": "TCAV scores per class and layer",
    "heatmap": "Layer × concept heatmaps",
    "cav-accuracy": "CAV accuracy",
}

CSS = """
:root{--fg:#1a202c;--muted:#4a5568;--line:#e2e8f0;--head:#edf2f7;--zebra:#f7fafc;
--pos:#e3f0fa;--posbar:#0072b2;--posfg:#005a8c;--neg:#fdf1da;--negbar:#e69f00;
--negfg:#8a5a00;--warn:#fffaf0;--warnbar:#dd6b20;--accent:#2b6cb0}
*{box-sizing:border-box}
body{margin:0;background:#f1f4f8;color:var(--fg);
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.8em;margin:0 0 .1em}
h2{font-size:1.3em;margin:2.2em 0 .6em;padding-bottom:.3em;border-bottom:1px solid var(--line)}
h3{font-size:1.05em;margin:1.6em 0 .5em}
.sub{color:var(--muted);margin:0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
code{background:var(--head);padding:1px 5px;border-radius:4px;word-break:break-all}
pre{background:var(--zebra);border:1px solid var(--line);border-radius:6px;padding:12px;
overflow-x:auto}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:5px 18px;margin:0}
dl.kv dt{font-weight:600;color:var(--muted)}
dl.kv dd{margin:0}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:6px 10px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{background:var(--head);font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:var(--zebra)}
tr.sig-pos td{background:var(--pos)}
tr.sig-pos td:first-child{box-shadow:inset 4px 0 0 var(--posbar)}
tr.sig-neg td{background:var(--neg)}
tr.sig-neg td:first-child{box-shadow:inset 4px 0 0 var(--negbar)}
.dir-pos,.dir-neg{font-weight:600;white-space:nowrap}
.dir-pos{color:var(--posfg)}
.dir-neg{color:var(--negfg)}
tfoot td{font-weight:600}
ul.warn{list-style:none;padding:0;margin:0}
ul.warn li{background:var(--warn);border-left:4px solid var(--warnbar);padding:7px 12px;
margin:6px 0;border-radius:0 4px 4px 0}
ul.findings li{margin:4px 0}
p.ok{color:var(--muted)}
figure{margin:1.4em 0 2em}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);
border-radius:6px}
figcaption{color:var(--muted);font-size:13px;margin-top:6px;max-width:860px}
details summary{cursor:pointer;color:var(--accent)}
.legend{font-size:13px;color:var(--muted)}
nav.toc{margin:.8em 0 0;font-size:14px}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px}
nav.toc a:hover{text-decoration:underline}
"""


def render_html(
    summary: pd.DataFrame,
    runs: pd.DataFrame | None,
    meta: dict[str, Any],
    plot_paths: Iterable[Path],
) -> str:
    """The report as one HTML string; the PNGs in ``plot_paths`` are embedded as base64."""
    meta = meta if isinstance(meta, dict) else {}
    stats = meta.get("stats") if isinstance(meta.get("stats"), dict) else {}
    title = "TCAV report"
    name = (meta.get("config") or {}).get("name") if isinstance(meta.get("config"), dict) else None
    if name:
        title = f"TCAV report: {name}"
    sub = []
    if meta.get("created"):
        sub.append(f"created {meta['created']}")
    if meta.get("tcavkit_version"):
        sub.append(f"tcavkit {meta['tcavkit_version']}")
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(" · ".join(sub))}</p>' if sub else "",
        _NAV,
        _experiment(meta, stats, runs),
        _sets(meta),
        _warnings(summary, meta),
        _results(summary, stats),
        _summary_table(summary),
        _plots(summary, plot_paths),
        _timings(meta.get("timings")),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n<main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main>\n</body>\n</html>\n"
    )


def _section(title: str, anchor: str, content: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{content}\n</section>'


def _kv(items: list[tuple[str, str]]) -> str:
    """Definition list; values are already-escaped HTML."""
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="kv">{rows}</dl>'


def _experiment(meta: dict[str, Any], stats: dict[str, Any], runs: pd.DataFrame | None) -> str:
    model = meta.get("model")
    if not isinstance(model, dict):
        model = {} if is_missing(model) else {"description": model}
    items: list[tuple[str, str]] = []
    if model.get("description"):
        items.append(("Model", escape(str(model["description"]))))
    if model.get("fingerprint"):
        items.append(("Model fingerprint", f"<code>{escape(str(model['fingerprint']))}</code>"))
    layers = model.get("layers")
    if layers:
        items.append(("Layers", _inline_list([layers] if isinstance(layers, str) else layers)))
    labels = model.get("labels")
    if isinstance(labels, (list, tuple)) and labels:
        text = _inline_list(list(labels)[:_MAX_LABELS])
        if len(labels) > _MAX_LABELS:
            text += escape(f" … ({len(labels)} in all)")
        items.append(("Labels", text))
    if not is_missing(meta.get("seed")):
        items.append(("Seed", escape(str(meta["seed"]))))
    if stats:
        test = ", ".join(
            f"{k} {stats[k]}"
            for k in ("test", "alpha", "correction")
            if not is_missing(stats.get(k))
        )
        items.append(("Statistics", escape(test)))
    if runs is not None and len(runs):
        n_null = sum(as_bool(v) for v in runs["is_null"]) if "is_null" in runs else 0
        items.append(("CAVs", escape(f"{len(runs) - n_null} concept runs, {n_null} null runs")))
    if meta.get("created"):
        items.append(("Created", escape(str(meta["created"]))))
    if meta.get("tcavkit_version"):
        items.append(("tcavkit", escape(str(meta["tcavkit_version"]))))
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        items.append(("Versions", escape(", ".join(f"{k} {v}" for k, v in versions.items()))))
    content = _kv(items) if items else '<p class="ok">No experiment details were saved.</p>'
    config = meta.get("config")
    if config:
        dumped = json.dumps(config, indent=2, default=str, ensure_ascii=False)
        content += (
            f"\n<details><summary>Experiment config</summary><pre>{escape(dumped)}</pre></details>"
        )
    return _section("The experiment", "experiment", content)


def _inline_list(values: Iterable[Any]) -> str:
    return ", ".join(f"<code>{escape(str(v))}</code>" for v in values)


def _sets(meta: dict[str, Any]) -> str:
    sets = sets_of(meta)
    if not sets:
        return ""
    head = ("name", "role", "examples", "description", "skipped", "fingerprint")
    rows = []
    for name, info in sets.items():
        fp = "" if is_missing(info.get("fingerprint")) else str(info["fingerprint"])
        n_examples = info.get("n_examples")
        cells = [
            f"<td>{escape(name)}</td>",
            f"<td>{escape(str(info.get('role') or ''))}</td>",
            f'<td class="num">{escape("–" if is_missing(n_examples) else str(n_examples))}</td>',
            f"<td>{escape(str(info.get('description') or ''))}</td>",
            f'<td class="num">{skipped_of(info)[0]}</td>',
            f'<td><code title="{escape(fp)}">{escape(fp[:12])}</code></td>' if fp else "<td></td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _section("Example sets", "sets", _table(head, rows))


def _table(head: Iterable[str], rows: list[str], attrs: str = "", foot: str = "") -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    tfoot = f"<tfoot>{foot}</tfoot>" if foot else ""
    return (
        f'<div class="scroll"><table{attrs}><thead><tr>{header}</tr></thead>'
        f"<tbody>\n" + "\n".join(rows) + f"\n</tbody>{tfoot}</table></div>"
    )


def _warnings(summary: pd.DataFrame, meta: dict[str, Any]) -> str:
    items = [str(w) for w in as_list(meta.get("warnings"))] + generated_warnings(summary, meta)
    items = list(dict.fromkeys(items))
    if not items:
        return _section("Warnings", "warnings", '<p class="ok">No warnings.</p>')
    lis = "".join(f"<li>{escape(w)}</li>" for w in items)
    return _section("Warnings", "warnings", f'<ul class="warn">{lis}</ul>')


def _results(summary: pd.DataFrame, stats: dict[str, Any]) -> str:
    overview, sentences = findings(summary, stats)
    content = f"<p>{escape(overview)}</p>"
    if sentences:
        content += (
            '<ul class="findings">' + "".join(f"<li>{escape(s)}</li>" for s in sentences) + "</ul>"
        )
    return _section("What the results say", "results", content)


_ROW_CLASS = {"positive": "sig sig-pos", "negative": "sig sig-neg"}
_CELL_CLASS = {"positive": "dir-pos", "negative": "dir-neg"}


def _summary_table(summary: pd.DataFrame) -> str:
    columns = [str(c) for c in summary.columns]
    dirs = directions(summary)
    formatters = [
        _column_formatter(name, summary[col])
        for name, col in zip(columns, summary.columns, strict=True)
    ]
    rows = []
    for i, record in enumerate(summary.itertuples(index=False, name=None)):
        cells = "".join(
            _significant_cell(v, dirs[i]) if name == "significant" else fmt(v)
            for name, fmt, v in zip(columns, formatters, record, strict=True)
        )
        row_class = _ROW_CLASS.get(str(dirs[i]))
        rows.append(f'<tr class="{row_class}">{cells}</tr>' if row_class else f"<tr>{cells}</tr>")
    legend = (
        '<p class="legend">One row per (target, concept, layer). Highlighted rows are '
        "significant after multiple-testing correction: "
        f'<span class="dir-pos">{DIRECTION_MARKS["positive"]} significant</span> rows are '
        "positive (the class is sensitive to the concept), "
        f'<span class="dir-neg">{DIRECTION_MARKS["negative"]} significant</span> rows are '
        "negative (the class is negatively sensitive to it).</p>"
    )
    return _section(
        "Summary table", "summary", legend + _table(columns, rows, attrs=' id="summary-table"')
    )


def _significant_cell(value: Any, direction: str) -> str:
    """The ``significant`` cell: ``+ significant`` / ``− significant`` (by direction), ``no``."""
    if is_missing(value):
        return "<td>–</td>"
    css = _CELL_CLASS.get(str(direction))
    if css is None:  # not significant
        return "<td>no</td>"
    mark = DIRECTION_MARKS[str(direction)]
    return f'<td class="{css}" title="{direction}">{mark} significant</td>'


def _column_formatter(name: str, column: pd.Series):
    """A function value → ``<td>`` for one summary column, chosen by name and dtype."""
    if name in ("p_value", "p_adjusted") or name.startswith("p_"):
        return lambda v: f'<td class="num">{escape(format_p(v))}</td>'
    if name == "significant" or is_bool_dtype(column):
        return lambda v: (
            "<td>–</td>" if is_missing(v) else f"<td>{'yes' if as_bool(v) else 'no'}</td>"
        )
    if is_integer_dtype(column):
        return lambda v: f'<td class="num">{escape(str(v))}</td>'
    if is_float_dtype(column):
        finite = column.dropna()
        if name.startswith("n_") and (finite == finite.round()).all():
            return lambda v: f'<td class="num">{"–" if is_missing(v) else int(to_float(v))}</td>'
        return lambda v: f'<td class="num">{escape(format_float(v))}</td>'
    return lambda v: f"<td>{'' if is_missing(v) else escape(str(v))}</td>"


def _plots(summary: pd.DataFrame, plot_paths: Iterable[Path]) -> str:
    specs = {s.filename: s for s in plan_plots(summary)}
    groups: dict[str, list[str]] = {}
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
        groups.setdefault(kind, []).append(
            f'<figure><img src="{src}" alt="{escape(title)}">'
            f"<figcaption>{escape(title)}</figcaption></figure>"
        )
    if not groups:
        return _section("Plots", "plots", '<p class="ok">No plots.</p>')
    parts = []
    for kind in [*_PLOT_SECTIONS, *sorted(set(groups) - set(_PLOT_SECTIONS))]:
        if kind in groups:
            parts.append(f"<h3>{escape(_PLOT_SECTIONS.get(kind, 'Other plots'))}</h3>")
            if kind in EXPLANATIONS:
                parts.append(f'<p class="legend">{escape(EXPLANATIONS[kind])}</p>')
            parts.extend(groups[kind])
    return _section("Plots", "plots", "\n".join(parts))


def _timings(timings: Any) -> str:
    if not isinstance(timings, dict) or not timings:
        return ""
    rows, total = [], 0.0
    for phase, seconds in timings.items():
        s = to_float(seconds)
        total += 0.0 if math.isnan(s) else s
        shown = escape(str(seconds)) if math.isnan(s) else f"{s:.2f}"
        rows.append(f'<tr><td>{escape(str(phase))}</td><td class="num">{shown}</td></tr>')
    foot = f'<tr><td>total</td><td class="num">{total:.2f}</td></tr>'
    return _section("Timings", "timings", _table(("phase", "seconds"), rows, foot=foot))
