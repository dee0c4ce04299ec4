"""Tests of tcavkit.report: a fake results folder becomes a safe, self-contained report."""

from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from tcavkit.errors import DataError, TcavError
from tcavkit.report import LOW_CAV_ACCURACY, build_report, plot_all, render_html
from tcavkit.report.common import (
    format_number,
    format_p,
    plot_filename,
    statistic_of,
    statistics_of,
    table_decimals,
)
from tcavkit.report.html import environment
from tcavkit.report.plots import _legend_above
from tcavkit.report.text import finding, report_warnings
from tcavkit.tables import few_runs_warning

EVIL = "<script>alert(1)</script>"
TARGETS = ["fire", "water"]
CONCEPTS = ["red", "stripes", EVIL]
LAYERS = ["block2", "block3"]
N_RUNS = 4
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr", "area", "base", "source"}


def _accuracy(concept: str, layer: str) -> float:
    return 0.55 if (concept, layer) == ("stripes", "block2") else 0.9


def statistic_columns(sig: bool, rng: np.random.Generator) -> dict:
    """The tested statistic's columns of one summary row, as :func:`tcavkit.stats.summarize`
    writes them: an interval that excludes the null (0.0) exactly when ``sig``."""
    if sig:
        mean, low, high = 9.1, 6.8, 11.4
    else:
        mean = 0.4 * rng.standard_normal()
        low, high = min(mean - 1.5, -0.2), max(mean + 1.5, 0.2)
    return {
        "magnitude_mean": mean / 10, "n_null": N_RUNS, "n_null_runs": 12, "test": "concept-t",
        "statistic": "effect", "statistic_mean": mean, "statistic_null_mean": 0.0,
        "statistic_null_std": 0.6, "statistic_low": low, "statistic_high": high,
        "direction": "positive" if sig else "none",
    }  # fmt: skip


LEGACY_DROPPED = ("statistic_low", "statistic_high", "direction")
"""Columns that results folders of older versions lack."""


def write_results(folder: Path, legacy: str | None = None) -> Path:
    """A small fake results folder: 2 targets x 3 concepts x 2 layers, one significant row.

    ``legacy``: ``None`` writes today's summary; ``"no-interval"`` leaves out
    :data:`LEGACY_DROPPED`; ``"score"`` writes only the core columns (the TCAV score was
    the tested statistic).
    """
    rng = np.random.default_rng(0)
    summary, runs = [], []
    for target in TARGETS:
        for layer in LAYERS:
            for k in range(N_RUNS):
                null = rng.uniform(0.3, 0.7)
                runs.append((target, "random_0", layer, "random_1", k, null, 0.01, 0.5, True))
            for concept in CONCEPTS:
                sig = (target, concept, layer) == ("fire", "red", "block3")
                mean, std = (0.93, 0.04) if sig else (0.5 + 0.05 * rng.standard_normal(), 0.08)
                summary.append({
                    "target": target, "concept": concept, "layer": layer, "n_runs": N_RUNS,
                    "mean": mean, "std": std, "ci_low": mean - 0.05, "ci_high": mean + 0.05,
                    "null_mean": 0.51, "null_std": 0.1,
                    "p_value": 2.5e-7 if sig else 0.4, "p_adjusted": 1e-6 if sig else 0.8,
                    "significant": sig, "cav_accuracy_mean": _accuracy(concept, layer),
                    **(statistic_columns(sig, rng) if legacy != "score" else {}),
                })  # fmt: skip
                for k in range(N_RUNS):
                    runs.append((target, concept, layer, f"random_{k}", k,
                                 mean + rng.uniform(-0.05, 0.05), 0.02,
                                 _accuracy(concept, layer), False))  # fmt: skip
    table = pd.DataFrame(summary)
    if legacy == "no-interval":
        table = table.drop(columns=list(LEGACY_DROPPED))
    table.to_csv(folder / "summary.csv", index=False)
    cols = ["target", "concept", "layer", "random", "run", "tcav_score", "magnitude",
            "cav_accuracy", "is_null"]  # fmt: skip
    pd.DataFrame(runs, columns=cols).to_csv(folder / "runs.csv", index=False)
    sets = {name: {"role": "concept", "n_examples": 30, "description": f"concepts/{name}",
                   "fingerprint": "ab" * 20, "skipped": []} for name in CONCEPTS}  # fmt: skip
    sets["fire"] = {"role": "target", "n_examples": 50, "description": "data/fire",
                    "fingerprint": "cd" * 20, "skipped": ["bad.jpg"]}  # fmt: skip
    meta = {
        "tcavkit_version": "0.1.0", "created": "2024-05-01T12:00:00", "seed": 7,
        "config": {"name": "demo", "concepts": CONCEPTS},
        "versions": {"numpy": "1.26", "torch": "2.2"},
        "model": {"fingerprint": "f" * 16, "description": f"toy model {EVIL}",
                  "layers": LAYERS, "labels": None},
        "sets": sets, "warnings": [f"saved warning {EVIL}"],
        "timings": {"activations": 1.5, "cavs": 0.25},
        "stats": {"test": "t-test", "alpha": 0.05, "correction": "holm"},
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(meta))
    return folder


class Collector(HTMLParser):
    """Collects tags, attributes, text, and each table's (by id) headers and body rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.table: str | None = None
        self.part: str | None = None
        self.headers: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.row_classes: dict[str, list[str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id"):
            self.table = str(a["id"])
            self.headers[self.table], self.rows[self.table] = [], []
            self.row_classes[self.table] = []
        if self.table:
            if tag in ("thead", "tbody", "tfoot"):
                self.part = tag
            elif tag == "tr" and self.part == "tbody":
                self.rows[self.table].append([])
                self.row_classes[self.table].append(a.get("class"))
            elif tag == "td" and self.part == "tbody":
                self.rows[self.table][-1].append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in ("thead", "tbody", "tfoot"):
            self.part = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.table and self.part == "thead" and data.strip():
            self.headers[self.table].append(data.strip())
        elif self.table and self.part == "tbody" and "td" in self.stack:
            self.rows[self.table][-1][-1] += data


def parse(html: str) -> Collector:
    parser = Collector()
    parser.feed(html)
    parser.close()
    return parser


HEADLINE = ["target", "concept", "layer", "significant", "p_adjusted", "effect [interval]",
            "random concepts", "TCAV score"]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Collector]:
    folder = write_results(tmp_path_factory.mktemp("results"))
    out = build_report(folder)
    html = out.read_text(encoding="utf-8")
    return folder, html, parse(html)


def test_html_is_well_formed(built: tuple[Path, str, Collector]) -> None:
    folder, html, parser = built
    assert (folder / "report.html").is_file()
    assert html.startswith("<!DOCTYPE html>")
    assert parser.errors == []
    assert parser.stack == []
    names = [t for t, _ in parser.tags]
    assert names.count("html") == names.count("body") == names.count("main") == 1
    # self-contained: no scripts, no external resources
    assert "script" not in names and "link" not in names
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            assert attrs.get(key) is None or attrs[key].startswith(("data:", "#"))


def test_summary_table(built: tuple[Path, str, Collector]) -> None:
    """First the columns a reader needs; every column of summary.csv one click away."""
    folder, html, parser = built
    summary = pd.read_csv(folder / "summary.csv")
    assert parser.headers["summary-table"] == HEADLINE
    assert parser.headers["summary-full"] == list(summary.columns)
    assert len(parser.rows["summary-table"]) == len(parser.rows["summary-full"]) == len(summary)
    full = html[html.index("<details><summary>All ") : html.index('id="summary-full"')]
    assert "</details>" not in full  # the full table sits inside the <details> element
    sig = int(summary["significant"].sum())
    assert sig == 1
    for table in ("summary-table", "summary-full"):
        assert [c for c in parser.row_classes[table] if c] == ["sig sig-pos"]
    row = parser.rows["summary-table"][parser.row_classes["summary-table"].index("sig sig-pos")]
    assert row == ["fire", "red", "block3", "+ significant", "1e-06", "9.1 [6.8, 11.4]",
                   "0 ± 0.6", "0.93"]  # fmt: skip
    text = "".join(parser.text)
    assert "1e-06" in text and "0.930" in text


def test_a_mark_only_where_the_shown_interval_excludes_the_null(
    built: tuple[Path, str, Collector],
) -> None:
    _, _, parser = built
    assert_marks_agree_with_intervals(parser)


def assert_marks_agree_with_intervals(parser: Collector) -> None:
    """Each marked row's shown interval excludes the shown null; each other row's covers it."""
    headers = parser.headers["summary-table"]
    stat = next(i for i, h in enumerate(headers) if h.endswith("[interval]"))
    null, sig = headers.index("random concepts"), headers.index("significant")
    checked = 0
    for row in parser.rows["summary-table"]:
        if "[" not in row[stat]:
            continue
        low, high = (float(v) for v in row[stat].split("[")[1].rstrip("]").split(","))
        centre = float(row[null].split("±")[0])
        covers = low <= centre <= high
        assert covers == (row[sig] == "no"), row
        checked += 1
    assert checked


def test_one_embedded_png_per_plot(built: tuple[Path, str, Collector]) -> None:
    folder, _, parser = built
    files = sorted((folder / "plots").glob("*.png"))
    # tested statistic and TCAV score per (target, layer), heatmap per target, one CAV plot
    assert len(files) == 2 * len(TARGETS) * len(LAYERS) + len(TARGETS) + 1
    assert sum(f.name.startswith("statistic-") for f in files) == len(TARGETS) * len(LAYERS)
    srcs = [a["src"] for t, a in parser.tags if t == "img"]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in srcs)
    assert embedded == sorted(f.read_bytes() for f in files)
    for f in files:
        with Image.open(f) as im:
            im.verify()
        with Image.open(io.BytesIO(f.read_bytes())) as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_user_strings_are_escaped(built: tuple[Path, str, Collector]) -> None:
    folder, html, _ = built
    assert EVIL not in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    for f in (folder / "plots").iterdir():
        assert all(c.isalnum() or c in "-." for c in f.name), f.name


def test_sections_in_reading_order(built: tuple[Path, str, Collector]) -> None:
    """Findings (with the warnings) first, then plots, the summary table and the details."""
    _, html, parser = built
    sections = [a["id"] for t, a in parser.tags if t == "section"]
    assert sections == ["findings", "plots", "summary", "details"]
    findings = html[html.index('<section id="findings">') : html.index('<section id="plots">')]
    assert "<img" not in findings and "At layer block3" in findings
    assert "CAVs near chance" in findings and "saved warning" in findings
    details = html[html.index('<section id="details">') :]
    assert 'id="sets-table"' in details and "Run id" not in html[: html.index("<h2>Details")]
    assert "Set fire: 1 file(s) skipped (bad.jpg)" in details
    assert [a.get("href") for t, a in parser.tags if t == "a"] == [
        "#findings", "#plots", "#summary", "#details",
    ]  # fmt: skip


def test_warnings_and_findings(built: tuple[Path, str, Collector]) -> None:
    _, _, parser = built
    text = " ".join("".join(parser.text).split())
    assert (
        "CAVs near chance (accuracy below 0.6) for concept stripes at block2 (0.55): the "
        "concept is hardly told apart from random images at that layer"
    ) in text
    assert f"saved warning {EVIL}" in text
    assert "Set fire: 1 file(s) skipped (bad.jpg)" in text
    assert f"only {N_RUNS} random runs per concept: fewer than 10" in text
    assert (
        "At layer block3, moving from random images toward concept red raises the logit of "
        "class fire by 9.1 (interval 6.8 to 11.4; random concepts change it by 0 ± 0.6); "
        "93% of fire examples rise along it (TCAV score 0.93). p_adj = 1e-06."
    ) in text
    assert "1 of 12 (class, concept, layer) tests of the effect differ significantly" in text
    assert text.count("At layer ") == 1
    assert LOW_CAV_ACCURACY == 0.6


def test_rebuild_is_idempotent(tmp_path: Path) -> None:
    folder = write_results(tmp_path)
    first = build_report(folder)
    listing = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    html = first.read_text(encoding="utf-8")
    (folder / "plots" / "tcav-old-layer-0123abcd.png").write_bytes(b"stale")
    (folder / "plots" / "mine.png").write_bytes(b"user file")
    second = build_report(folder)
    assert second == first
    after = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert after == sorted([*listing, Path("plots/mine.png")])
    assert second.read_text(encoding="utf-8") == html


def test_nothing_significant_and_sparse_meta(tmp_path: Path) -> None:
    summary = pd.DataFrame({
        "target": ["a/b", ".."], "concept": ["x y", "ü"], "layer": ["0", "NA"],
        "mean": [0.4, 0.6], "significant": ["False", "false"],
    })  # fmt: skip
    paths = plot_all(summary, None, tmp_path)
    assert [p.parent for p in paths] == [tmp_path] * len(paths) and len(paths) == 4
    html = render_html(summary, None, {}, paths)
    assert "No concept differs significantly" in html
    assert html.count("data:image/png;base64,") == len(paths)


def test_missing_summary_raises(tmp_path: Path) -> None:
    (tmp_path / "runs.csv").write_text("target,concept,layer\n")
    with pytest.raises(TcavError) as info:
        build_report(tmp_path)
    assert isinstance(info.value, DataError)
    assert "summary.csv" in str(info.value)
    assert "tcavkit run" in str(info.value)


def test_formatting_and_names() -> None:
    assert [format_p(p) for p in (1e-6, 2.5e-7, 0.0342, 0.5, float("nan"))] == [
        "1e-06", "2.5e-07", "0.034", "0.5", "–",
    ]  # fmt: skip
    names = [
        plot_filename("tcav", t, "l") for t in (EVIL, "a/b", "a b", "..", "Fire", "fire", "火")
    ]
    assert len(set(names)) == len(names)
    for name in names:
        assert name.endswith(".png") and all(c.isalnum() or c in "-." for c in name)
        assert "/" not in name and not name.startswith(".")
    # results without the statistic_* columns tested the TCAV score
    row = pd.Series({"target": "t", "concept": "c", "layer": "l", "mean": 0.1, "std": 0.02,
                     "null_mean": 0.5, "p_adjusted": 0.0123})  # fmt: skip
    assert finding(row) == (
        "At layer l, the logit of class t rises along concept c for 10% of its examples "
        "(TCAV score 0.10; random concepts: 0.50), less often than along random concepts. "
        "p_adj = 0.012."
    )
    tested = {"statistic": "effect", "statistic_mean": -2.5, "statistic_null_mean": -0.0,
              "statistic_null_std": 0.4, "statistic_low": -3.6, "statistic_high": -1.4,
              "direction": "negative"}  # fmt: skip
    assert finding(pd.Series({**row, **tested})) == (
        "At layer l, moving from random images toward concept c lowers the logit of class t "
        "by 2.5 (interval 1.4 to 3.6; random concepts change it by 0 ± 0.4); 10% of t "
        "examples rise along it (TCAV score 0.10). p_adj = 0.012."
    )
    # an interval that reaches across 0 (the null is not 0): signed numbers, no "lowers"
    shifted = {**tested, "statistic_null_mean": 3.0, "statistic_high": 0.4}
    assert "changes the logit of class t by -2.5 (interval -3.6 to 0.4), less than random " \
        "concepts do (3.0 ± 0.4)" in finding(pd.Series({**row, **shifted}))  # fmt: skip


def test_shown_numbers_keep_an_excluding_bound_apart_from_the_null() -> None:
    row = {"statistic": "effect", "statistic_mean": 2.0, "statistic_null_mean": 0.0,
           "statistic_null_std": 0.5, "statistic_low": 0.004, "statistic_high": 4.0}  # fmt: skip
    shown = statistic_of(row)  # two significant digits of 4.0, then as many as 0.004 needs
    assert shown.with_interval() == "2.000 [0.004, 4.000]" and shown.null() == "0 ± 0.500"
    assert statistic_of({**row, "statistic_low": 0.4}).with_interval() == "2.0 [0.4, 4.0]"
    near = {**row, "statistic_low": 0.4, "statistic_null_mean": -0.01}
    assert statistic_of(near).null() == "0.0 ± 0.5"  # not -0.0
    wide = {**row, "statistic_mean": 200.0, "statistic_low": 100.0, "statistic_high": 300.0}
    table = pd.DataFrame([row, wide, wide])
    assert table_decimals(table) == 0  # two digits of the median row size, 300
    assert [t.decimals for t in statistics_of(table)] == [3, 0, 0]


def test_every_class_has_a_headline_before_the_details(tmp_path: Path) -> None:
    """Three classes, the first two with many findings: each class's one-line headline
    (strongest concept first, with its layers) comes before the first sentence."""
    rows = []
    for target, n_sig in (("fire", 6), ("water", 6), ("grass", 2), ("rock", 0)):
        for k in range(8):
            sig = k < n_sig
            p = 10.0 ** -(k + 3) if sig else 0.5
            rows.append({
                "target": target, "concept": f"c{k % 4}", "layer": f"l{k // 4}", "n_runs": 10,
                "mean": 0.9 if sig else 0.5, "p_value": p / 10, "p_adjusted": p,
                "significant": sig, **statistic_columns(sig, np.random.default_rng(k)),
            })  # fmt: skip
    rows[8 * 2 + 1]["direction"] = "negative"  # grass c1 at l0
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    html = build_report(tmp_path).read_text(encoding="utf-8")
    parser = parse(html)
    assert parser.errors == [] and parser.stack == []
    findings = html[html.index('<section id="findings">') : html.index('id="warnings"')]
    details = findings.index("<details")
    heads = findings[:details]
    assert [heads.count(f"<strong>{t}</strong>") for t in ("fire", "water", "grass", "rock")] == [
        1, 1, 1, 1,
    ]  # fmt: skip
    text = " ".join("".join(parse(heads).text).split())
    assert "fire: positive: c1 (l0, l1), c0 (l0, l1), c3 (l0), c2 (l0)" in text  # by p
    assert "grass: positive: c0 (l0); negative: c1 (l0)" in text
    assert "rock: no concept differs significantly from random concepts (8 tests)" in text
    assert "At layer" not in heads and findings.count("At layer") == 14
    assert "14 findings in full, class by class" in findings


def test_numbers_keep_their_significant_digits() -> None:
    """No number is shown as 0.000 unless it is zero, and a zero is shown as 0."""
    assert [format_number(v) for v in (21.73, 0.93, 0.00412, 4.1e-5, 0.0, -0.0, 9.996)] == [
        "21.7", "0.930", "0.00412", "4.10e-05", "0", "0", "10.0",
    ]  # fmt: skip
    zero = {"statistic": "effect", "statistic_mean": 0.0, "statistic_null_mean": 0.0,
            "statistic_null_std": 0.0, "statistic_low": 0.0, "statistic_high": 0.0}  # fmt: skip
    shown = statistic_of(zero, 3)
    assert (shown.with_interval(), shown.null()) == ("0 [0, 0]", "0 ± 0")
    tiny = {**zero, "statistic_mean": 2e-9, "statistic_null_std": 3e-9, "statistic_low": -4e-9,
            "statistic_high": 8e-9}  # fmt: skip
    shown = statistic_of(tiny, 1)  # a table's decimals that would round the row to zero
    assert (shown.with_interval(), shown.null()) == ("2.0e-09 [-4.0e-09, 8.0e-09]", "0 ± 3.0e-09")
    narrow = {**zero, "statistic_mean": 21.7, "statistic_low": 18.5, "statistic_high": 25.0,
              "statistic_null_std": 0.003}  # fmt: skip
    assert statistic_of(narrow, 1).null() == "0 ± 0.0030"  # a spread never shows as 0.0
    table = pd.DataFrame([narrow, narrow, tiny])
    assert [t.with_interval() for t in statistics_of(table)] == [
        "22 [18, 25]", "22 [18, 25]", "2.0e-09 [-4.0e-09, 8.0e-09]",
    ]  # fmt: skip


def test_one_warning_per_fact() -> None:
    """Near-chance CAVs are one warning; the run's too-few-runs warning and the tables' are
    the same words, listed once."""
    summary = pd.DataFrame({
        "target": "t", "concept": ["a", "b", "a", "c"], "layer": ["l1", "l1", "l2", "l2"],
        "n_runs": 3, "mean": 0.5, "cav_accuracy_mean": [0.51, 0.9, 0.42, 0.58],
    })  # fmt: skip
    meta = {"warnings": [few_runs_warning(3).replace(" ", "\n  ", 2), "another"]}
    assert report_warnings(summary, meta) == [
        few_runs_warning(3),
        "another",
        "CAVs near chance (accuracy below 0.6) for concept a at l1 (0.51), a at l2 (0.42), "
        "c at l2 (0.58): the concept is hardly told apart from random images at that layer, "
        "so its TCAV score there means little.",
    ]


def test_injection_payloads_are_escaped(tmp_path: Path) -> None:
    """Script and attribute payloads in every user-controlled string stay text."""
    payload = '<script>alert(1)</script>"onload="alert(2)'
    quoted = "'onload='alert(3)"
    summary = pd.DataFrame({
        "target": [f"t{payload}"] * 2, "concept": [f"c{payload}", f"c{quoted}"],
        "layer": [f"l{payload}"] * 2, "n_runs": [12, 12], "mean": [0.9, 0.5], "std": 0.05,
        "ci_low": [0.85, 0.45], "ci_high": [0.95, 0.55], "null_mean": 0.5, "null_std": 0.1,
        "p_value": [1e-5, 0.5], "p_adjusted": [2e-5, 0.5], "significant": [True, False],
        "cav_accuracy_mean": [0.9, 0.55], "statistic": "effect", "statistic_mean": [3.0, 0.1],
        "statistic_null_mean": 0.0, "statistic_null_std": 0.5, "statistic_low": [1.0, -1.0],
        "statistic_high": [5.0, 1.2], "direction": ["positive", "none"],
    })  # fmt: skip
    summary.to_csv(tmp_path / "summary.csv", index=False)
    meta = {
        "run_id": f"r{payload}", "created": f"today{payload}", "tcavkit_version": payload,
        "config": {"name": f"n{payload}"}, "seed": payload,
        "model": {"description": f"m{payload}", "fingerprint": payload, "layers": [payload],
                  "labels": [payload]},
        "sets": {f"s{payload}": {"role": payload, "n_examples": payload,
                                 "description": f"d{payload}", "fingerprint": payload,
                                 "skipped": [f"f{payload}"]}},
        "warnings": [f"w{payload}", f"w{quoted}"], "timings": {payload: payload},
        "stats": {"test": payload, "alpha": 0.05, "correction": payload},
        "versions": {payload: payload},
    }  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(meta))
    html = build_report(tmp_path).read_text(encoding="utf-8")
    lowered = html.lower()
    assert "<script" not in lowered and '"onload=' not in lowered and "'onload=" not in lowered
    parser = parse(html)
    assert parser.errors == [] and parser.stack == []
    assert "script" not in [t for t, _ in parser.tags]
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # the strings are shown as written, escaped
    text = "".join(parser.text)
    for shown in (f"t{payload}", f"c{quoted}", f"d{payload}", f"w{payload}", f"r{payload}",
                  f"m{payload}", f"n{payload}"):  # fmt: skip
        assert shown in text, shown
    run_ids = [a["content"] for t, a in parser.tags if a.get("name") == "tcavkit-run-id"]
    assert run_ids == [f"r{payload}"]


def test_templates_autoescape_and_ship_as_package_data() -> None:
    env = environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    templates = resources.files("tcavkit.report") / "templates"
    assert (templates / "report.html").is_file() and (templates / "report.css").is_file()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"report/templates/*"' in pyproject and "jinja2>=3.1" in pyproject


@pytest.mark.parametrize("legacy", ["no-interval", "score"])
def test_results_of_older_versions_still_build(tmp_path: Path, legacy: str) -> None:
    folder = write_results(tmp_path, legacy=legacy)
    parser = parse(build_report(folder).read_text(encoding="utf-8"))
    assert parser.errors == [] and parser.stack == []
    headers = parser.headers["summary-table"]
    rows = parser.rows["summary-table"]
    sig = [r for r, c in zip(rows, parser.row_classes["summary-table"], strict=True) if c]
    assert len(sig) == 1 and sig[0][3] == "+ significant"
    text = " ".join("".join(parser.text).split())
    if legacy == "no-interval":  # the effect was tested; it has no interval to show
        assert headers[5] == "effect" and "TCAV score" in headers
        assert sig[0][5] == "9.10" and "raises the logit of class fire by 9.10 (random" in text
        assert sig[0][6] == "0 ± 0.60"  # two digits of the typical size; the null is 0
        assert any(name.startswith("statistic-") for name in os.listdir(folder / "plots"))
    else:  # the TCAV score was tested: one column for it, no statistic plot
        assert headers[5] == "TCAV score" and headers.count("TCAV score") == 1
        assert sig[0][5] == "0.93" and sig[0][6] == "0.51 ± 0.10"
        assert "the logit of class fire rises along concept red for 93% of its" in text
        assert not any(name.startswith("statistic-") for name in os.listdir(folder / "plots"))


def test_timings_total_is_not_counted_twice(tmp_path: Path) -> None:
    folder = write_results(tmp_path)
    meta = json.loads((folder / "results.json").read_text())
    meta["timings"] = {"activations": 1.5, "cavs": 0.25, "total": 2.0}
    (folder / "results.json").write_text(json.dumps(meta))
    html = build_report(folder).read_text(encoding="utf-8")
    timings = html[html.index('<h3 id="timings">') :]
    assert timings.count(">total<") == 1 and ">2.00<" in timings


def test_cav_accuracy_legend_fits_above_the_axes() -> None:
    """The legend sits between the axes and the title, in rows no wider than the axes."""
    fig = Figure(figsize=(6.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = [Patch(facecolor="C0", label=f"layer features.block{i}.conv") for i in range(6)]
    handles.append(Patch(facecolor="white", hatch="xx", label="near chance (below 0.6), marked !"))
    _legend_above(ax, handles, "CAV accuracy · all classes")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    title = ax.title.get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.width <= axes.width + 1
    assert legend.y0 >= axes.y1 and title.y0 >= legend.y1 - 1


def test_run_id_is_escaped_and_the_html_stays_well_formed(tmp_path: Path) -> None:
    folder = write_results(tmp_path)
    meta = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**meta, "run_id": f'x"{EVIL}'}))
    html = build_report(folder).read_text(encoding="utf-8")
    parser = parse(html)
    assert parser.errors == [] and parser.stack == [] and EVIL not in html
    tags = [a for t, a in parser.tags if t == "meta" and a.get("name") == "tcavkit-run-id"]
    assert [a["content"] for a in tags] == [f'x"{EVIL}']
    assert f'Run idx"{EVIL}' in "".join(parser.text)  # <dt>Run id</dt><dd>value</dd>
    text = " ".join("".join(parser.text).split())
    assert "manifest.json not found" in text and "could not be checked" in text


def test_example_texts_are_shown_escaped() -> None:
    meta = {
        "sets": {
            "pwords": {"role": "concept", "examples": ["<script>alert(1)</script>", "a & b"]},
            "random500_0": {"role": "random", "examples": ["plain words"]},
        }
    }
    html = render_html(pd.DataFrame(columns=["target", "concept", "layer", "mean"]), None, meta, [])
    assert "<th>example texts</th>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; · a &amp; b" in html
    assert "<script>" not in html
    images = render_html(
        pd.DataFrame(columns=["target", "concept", "layer", "mean"]),
        None,
        {"sets": {"red": {"role": "concept"}}},
        [],
    )
    assert "example texts" not in images
