"""Significant positive and significant negative results look different everywhere.

One summary with a significant positive row, a significant negative row and a row that is
not significant, in four forms: written before the ``direction`` column existed (the
direction is the sign of ``mean - null_mean``), with the column, with a column that
disagrees with ``mean - null_mean`` (the column is authoritative, so only code that reads
it passes), and as :func:`tcavkit.stats.summarize` writes it today (the tested statistic's
columns: its mean, null, interval at the corrected level, and direction).
"""

from __future__ import annotations

import io
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from tcavkit.cli import print_summary
from tcavkit.report import build_report, plot_all, render_html
from tcavkit.report.common import direction_of, directions
from tcavkit.report.plots import (
    NEG_COLOR,
    NONSIG_COLOR,
    POS_COLOR,
    PlotSpec,
    draw_heatmap,
    draw_statistic_bars,
    draw_tcav_bars,
)
from tcavkit.report.text import finding, findings

EVIL = "<b>neg&</b>"
MINUS = "\u2212"
EXPECTED = ["positive", "negative", "none"]
FORMS = ("legacy", "tagged", "contrary", "tested")
EFFECT = {  # the tested statistic of the "tested" form: above, below and around the null
    "statistic": "effect", "statistic_mean": [4.2, -3.1, 0.3], "statistic_null_mean": 0.1,
    "statistic_null_std": 0.5, "statistic_low": [2.0, -5.0, -1.2],
    "statistic_high": [6.4, -1.2, 1.8], "direction": ["positive", "negative", "none"],
}  # fmt: skip


def summary_table(form: str) -> pd.DataFrame:
    """Rows: concept ``pos`` (significant, positive), ``EVIL`` (significant, negative),
    ``flat`` (not significant)."""
    means = [0.45, 0.7, 0.55] if form == "contrary" else [0.9, 0.2, 0.55]
    table = pd.DataFrame({
        "target": ["t"] * 3, "concept": ["pos", EVIL, "flat"], "layer": ["L1"] * 3,
        "n_runs": [10] * 3, "mean": means, "std": [0.05, 0.06, 0.1],
        "ci_low": [m - 0.05 for m in means], "ci_high": [m + 0.05 for m in means],
        "null_mean": [0.5] * 3, "null_std": [0.1] * 3,
        "p_value": [1e-4, 2e-4, 0.6], "p_adjusted": [3e-4, 4e-4, 0.6],
        "significant": [True, True, False],
    })  # fmt: skip
    if form == "tagged":
        table["direction"] = ["positive", "negative", "none"]
    elif form == "contrary":  # the tested statistic's sign, against mean - null_mean
        table["direction"] = ["Positive", " negative", "none"]
    elif form == "tested":
        table = table.assign(**EFFECT)
    return table


@pytest.fixture(params=FORMS)
def table(request: pytest.FixtureRequest) -> pd.DataFrame:
    return summary_table(request.param)


# ---------------------------------------------------------------- the helper


def test_directions_helper(table: pd.DataFrame) -> None:
    got = directions(table)
    assert isinstance(got, np.ndarray) and got.dtype.kind == "U"
    assert got.tolist() == EXPECTED


def test_direction_column_is_authoritative_and_fallbacks() -> None:
    table = summary_table("contrary")
    # without the column, the same numbers give the opposite directions
    assert directions(table.drop(columns="direction")).tolist() == [
        "negative", "positive", "none",
    ]  # fmt: skip
    # significance gates: a non-significant row is "none" whatever its direction says
    table.loc[2, "direction"] = "positive"
    assert directions(table)[2] == "none"
    # a significant row whose direction is missing falls back to mean vs null
    table.loc[0, "direction"] = np.nan
    assert directions(table).tolist() == ["negative", "negative", "none"]
    # significance read from CSV-like strings; no significant column: all "none"
    strings = summary_table("legacy").assign(significant=["True", "yes", "False"])
    assert directions(strings).tolist() == EXPECTED
    assert directions(strings.drop(columns="significant")).tolist() == ["none"] * 3
    assert directions(strings.iloc[:0]).tolist() == []
    assert direction_of(None, 0.3, float("nan")) == "positive"
    assert direction_of(None, 0.5, 0.5) == "positive"
    assert direction_of("garbage", 0.3, 0.5) == "negative"


# ---------------------------------------------------------------- text


def test_findings_wording(table: pd.DataFrame) -> None:
    overview, sentences = findings(table, {"alpha": 0.05, "correction": "holm"})
    assert "2 of 3" in overview
    assert "1 positive" in overview and "1 negative" in overview
    assert len(sentences) == 2
    if "statistic_mean" in table:  # the effect was tested: raises / lowers the logit
        assert sentences[0].startswith(
            "At layer L1, moving from random images toward concept pos raises the logit of "
            "class t by 4.2 (interval 2.0 to 6.4; random concepts change it by 0.1 ± 0.5); "
            "90% of t examples rise along it (TCAV score 0.90)."
        )
        assert sentences[1].startswith(
            f"At layer L1, moving from random images toward concept {EVIL} lowers the logit "
            "of class t by 3.1 (interval 1.2 to 5.0;"
        )
        assert " raises " in finding(table.iloc[0]) and " lowers " in finding(table.iloc[1])
    else:  # the TCAV score was tested
        assert sentences[0].startswith("At layer L1, the logit of class t rises along concept pos")
        assert sentences[0].endswith("more often than along random concepts. p_adj = 0.0003.")
        assert f"rises along concept {EVIL} for " in sentences[1]
        assert "less often than along random concepts" in sentences[1]
        # a row alone: its own direction value decides (mean vs null only without one)
        assert " more often " in finding(table.iloc[0])
        assert " less often " in finding(table.iloc[1])


def test_overview_counts_each_direction() -> None:
    table = summary_table("tagged")
    table.loc[2, ["significant", "direction"]] = [True, "negative"]
    overview, sentences = findings(table, {})
    assert "3 of 3" in overview and "1 positive" in overview and "2 negative" in overview
    assert sum(" less often than along random concepts" in s for s in sentences) == 2


def test_direction_falls_back_on_the_tested_statistic() -> None:
    """Without ``direction``, a significant row's sign is that of the tested statistic
    against its null (here against the TCAV score's, which points the other way)."""
    table = summary_table("tested").drop(columns="direction")
    table["mean"] = [0.2, 0.8, 0.55]
    assert directions(table).tolist() == EXPECTED


# ---------------------------------------------------------------- HTML


class Rows(HTMLParser):
    """The summary table's row classes and its ``significant`` cells (class, text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.in_table = False
        self.column = -1
        self.sig_column: int | None = None
        self.headers: list[str] = []
        self.row_classes: list[str | None] = []
        self.cells: list[list[tuple[str | None, str]]] = []
        self.cell_class: str | None = None
        self.tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "summary-table":
            self.in_table = True
        if not self.in_table:
            return
        self.tag = tag
        if tag == "tr" and self.headers:
            self.row_classes.append(a.get("class"))
            self.cells.append([])
        elif tag == "td":
            self.cells[-1].append((a.get("class"), ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_table = False
        self.tag = None

    def handle_data(self, data: str) -> None:
        if not self.in_table:
            return
        if self.tag == "th":
            self.headers.append(data)
        elif self.tag == "td":
            css, text = self.cells[-1][-1]
            self.cells[-1][-1] = (css, text + data)


def test_html_marks_each_direction(table: pd.DataFrame) -> None:
    html = render_html(table, None, {}, [])
    parser = Rows()
    parser.feed(html)
    assert parser.row_classes == ["sig sig-pos", "sig sig-neg", None]
    sig = parser.headers.index("significant")
    assert [row[sig] for row in parser.cells] == [
        ("dir-pos", "+ significant"),
        ("dir-neg", f"{MINUS} significant"),
        (None, "no"),
    ]
    # the two directions are styled apart (different colours)
    css = html[html.index("<style>") : html.index("</style>")]
    assert "tr.sig-pos td{background:var(--pos)}" in css
    assert "tr.sig-neg td{background:var(--neg)}" in css
    assert "--pos:#e3f0fa" in css and "--neg:#fdf1da" in css
    assert ".dir-pos{color:var(--posfg)}" in css and ".dir-neg{color:var(--negfg)}" in css
    # user names stay escaped in the table and the findings
    assert EVIL not in html
    assert html.count("&lt;b&gt;neg&amp;&lt;/b&gt;") >= 3
    assert "concept &lt;b&gt;neg&amp;&lt;/b&gt; " in html


# ---------------------------------------------------------------- plots


def _axes() -> tuple[Figure, object]:
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_bar_colours_and_marks(table: pd.DataFrame) -> None:
    _, ax = _axes()
    bars = draw_tcav_bars(ax, table, None, PlotSpec("tcav", "t", "L1", "x.png", "t"))
    faces = [bar.get_facecolor() for bar in bars]
    assert faces[0] == to_rgba(POS_COLOR)
    assert faces[1] == to_rgba(NEG_COLOR)
    assert faces[2] == to_rgba(NONSIG_COLOR) and bars[2].get_hatch() == "///"
    assert faces[0] != faces[1]
    marks = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("mark-")}
    assert marks["mark-positive"].get_text() == "+"
    assert marks["mark-negative"].get_text() == MINUS
    assert to_rgba(marks["mark-negative"].get_color()) == to_rgba(NEG_COLOR)
    labels = _legend_labels(ax)
    assert labels[:3] == [
        "significant, positive (+)",
        f"significant, negative ({MINUS})",
        "not significant",
    ]
    # the legend swatches are the bars' own colours
    swatches = [h.get_facecolor() for h in ax.get_legend().legend_handles[:3]]
    assert swatches == faces


def test_bar_legend_lists_only_what_is_drawn() -> None:
    _, ax = _axes()
    draw_tcav_bars(ax, summary_table("tagged").iloc[[0]], None, PlotSpec("tcav", "t", "L1", "", ""))
    labels = _legend_labels(ax)
    assert "significant, positive (+)" in labels
    assert not any("negative" in s or s == "not significant" for s in labels)


def test_statistic_bars() -> None:
    """The tested statistic: bars in the direction colours, error bars from statistic_low
    to statistic_high, the dashed null at statistic_null_mean."""
    _, ax = _axes()
    rows = summary_table("tested")
    bars = draw_statistic_bars(ax, rows, PlotSpec("statistic", "t", "L1", "x.png", "t"))
    assert [bar.get_height() for bar in bars] == EFFECT["statistic_mean"]
    faces = [bar.get_facecolor() for bar in bars]
    assert faces == [to_rgba(POS_COLOR), to_rgba(NEG_COLOR), to_rgba(NONSIG_COLOR)]
    assert bars[2].get_hatch() == "///"
    marks = sorted(t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("mark-"))
    assert marks == ["+", MINUS]
    (errors,) = [
        c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 3
    ]
    spans = [tuple(sorted(seg[:, 1])) for seg in errors.get_segments()]
    expected = np.column_stack([EFFECT["statistic_low"], EFFECT["statistic_high"]])
    np.testing.assert_allclose(spans, expected)
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert [tuple(ln.get_ydata()) for ln in dashed] == [(0.1, 0.1)]
    labels = _legend_labels(ax)
    assert labels[:3] == [
        "significant, positive (+)",
        f"significant, negative ({MINUS})",
        "not significant",
    ]
    assert "interval (corrected level)" in labels and "random concepts (mean)" in labels
    # without an interval (older results): no error bars, no interval in the legend
    _, ax = _axes()
    draw_statistic_bars(ax, rows.drop(columns=["statistic_low", "statistic_high"]),
                        PlotSpec("statistic", "t", "L1", "x.png", "t"))  # fmt: skip
    assert "interval (corrected level)" not in _legend_labels(ax)


def test_heatmap_marks_and_legend(table: pd.DataFrame) -> None:
    _, ax = _axes()
    dirs = draw_heatmap(ax, table, PlotSpec("heatmap", "t", None, "x.png", "t"))
    assert dirs.tolist() == [EXPECTED]
    by_gid = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    means = table["mean"].tolist()
    assert by_gid == {
        "mark-positive": f"{means[0]:.2f} +",
        "mark-negative": f"{means[1]:.2f} {MINUS}",
    }
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [
        "significant, positive (+)",
        f"significant, negative ({MINUS})",
        "not significant",
    ]
    # legend markers are the cells' marks (mathtext "-" is drawn as U+2212); no fill swatch
    markers = [h.get_marker() for h in legend.legend_handles[:2]]
    assert markers == ["$+$", "$-$"]


def test_heatmap_legend_has_no_unused_entry() -> None:
    _, ax = _axes()
    draw_heatmap(ax, summary_table("tagged").iloc[[1, 2]], PlotSpec("heatmap", "t", None, "", ""))
    labels = _legend_labels(ax)
    assert labels == [f"significant, negative ({MINUS})", "not significant"]


def test_heatmap_without_scores_keeps_marks() -> None:
    """Large grids drop the numbers but keep the direction marks."""
    rows = pd.DataFrame({
        "target": "t", "concept": [f"c{i}" for i in range(160)], "layer": "L",
        "mean": np.where(np.arange(160) % 2, 0.1, 0.9), "null_mean": 0.5,
        "significant": np.arange(160) < 4,
    })  # fmt: skip
    _, ax = _axes()
    draw_heatmap(ax, rows, PlotSpec("heatmap", "t", None, "", ""))
    marks = [t.get_text() for t in ax.texts if t.get_gid()]
    assert marks == ["+", MINUS, "+", MINUS]


@pytest.mark.parametrize("form", FORMS)
def test_report_from_folder(tmp_path: Path, form: str) -> None:
    table = summary_table(form)
    table.to_csv(tmp_path / "summary.csv", index=False)
    paths = plot_all(table, None, tmp_path / "direct")
    kinds = ["heatmap", "statistic", "tcav"] if form == "tested" else ["heatmap", "tcav"]
    assert len(paths) == len(kinds)  # one bar chart (two with the statistic), one heatmap
    out = build_report(tmp_path)
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name.split("-")[0] for p in pngs] == kinds
    for png in pngs:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300
    html = out.read_text(encoding="utf-8")
    # the first table and the full one (in <details>)
    assert html.count('<tr class="sig sig-pos">') == 2
    assert html.count('<tr class="sig sig-neg">') == 2
    assert "concept &lt;b&gt;neg&amp;&lt;/b&gt; " in html
    assert EVIL not in html


# ---------------------------------------------------------------- console


def _printed(table: pd.DataFrame) -> list[str]:
    lines: list[str] = []
    print_summary(table, echo=lambda text: lines.extend(text.splitlines()))
    return lines


def test_console_marks(table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    lines = _printed(table)
    assert len(lines) == 5  # header, three rows, footnote
    rows = lines[1:4]
    assert rows[0].split()[1] == "pos" and rows[0].rstrip().endswith(" +")
    assert rows[1].rstrip().endswith(f" {MINUS}")
    assert rows[2].split()[1] == "flat" and rows[2].rstrip().endswith(" 0.6")
    assert "*" not in "\n".join(lines)
    assert lines[-1].startswith(f"+ / {MINUS} significant after correction")
    if "statistic_mean" in table:  # the tested statistic with its interval, its null, score
        assert lines[0].split()[:9] == ["target", "concept", "layer", "effect", "[interval]",
                                        "random", "concepts", "score", "p_adjusted"]  # fmt: skip
        assert rows[0].split()[3:9] == ["4.2", "[2.0,", "6.4]", "0.1", "±", "0.5"]
        assert rows[0].split()[9:] == ["0.90", "0.0003", "+"]
        assert rows[2].split()[3:6] == ["0.3", "[-1.2,", "1.8]"]
    else:  # the TCAV score was tested: no interval to show, no second score column
        assert lines[0].split()[:6] == ["target", "concept", "layer", "TCAV", "score", "random"]
        score = f"{table['mean'][0]:.2f}"
        assert rows[0].split()[3:] == [score, "0.50", "±", "0.10", "0.0003", "+"]


def test_console_minus_falls_back_to_ascii(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    lines = _printed(summary_table("tagged"))
    assert lines[2].rstrip().endswith(" -")
    assert MINUS not in "\n".join(lines)
    assert lines[-1].startswith("+ / - significant after correction")


def test_console_names_are_not_markup() -> None:
    table = summary_table("tested")
    table.loc[0, "concept"] = "[bold]x[/bold]"
    assert "[bold]x[/bold]" in _printed(table)[1]
