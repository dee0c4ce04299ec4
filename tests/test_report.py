"""Tests of tcavkit.report: a fake results folder becomes a safe, self-contained report."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tcavkit.errors import DataError, TcavError
from tcavkit.report import LOW_CAV_ACCURACY, build_report, plot_all, render_html
from tcavkit.report.common import format_p, plot_filename
from tcavkit.report.text import finding

EVIL = "<script>alert(1)</script>"
TARGETS = ["fire", "water"]
CONCEPTS = ["red", "stripes", EVIL]
LAYERS = ["block2", "block3"]
N_RUNS = 4
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr", "area", "base", "source"}


def _accuracy(concept: str, layer: str) -> float:
    return 0.55 if (concept, layer) == ("stripes", "block2") else 0.9


def write_results(folder: Path) -> Path:
    """A small fake results folder: 2 targets x 3 concepts x 2 layers, one significant row."""
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
                })  # fmt: skip
                for k in range(N_RUNS):
                    runs.append((target, concept, layer, f"random_{k}", k,
                                 mean + rng.uniform(-0.05, 0.05), 0.02,
                                 _accuracy(concept, layer), False))  # fmt: skip
    pd.DataFrame(summary).to_csv(folder / "summary.csv", index=False)
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
    """Collects tags, attributes, text, and the summary table's headers and rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.in_summary = self.in_head = self.in_body = False
        self.headers: list[str] = []
        self.body_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id") == "summary-table":
            self.in_summary = True
        if self.in_summary:
            self.in_head |= tag == "thead"
            self.in_body |= tag == "tbody"
            if tag == "tr" and self.in_body:
                self.body_rows += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if self.in_summary:
            if tag == "thead":
                self.in_head = False
            elif tag == "tbody":
                self.in_body = False
            elif tag == "table":
                self.in_summary = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_summary and self.in_head and data.strip():
            self.headers.append(data.strip())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Collector]:
    folder = write_results(tmp_path_factory.mktemp("results"))
    out = build_report(folder)
    html = out.read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(html)
    parser.close()
    return folder, html, parser


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
    folder, _, parser = built
    summary = pd.read_csv(folder / "summary.csv")
    assert parser.headers == list(summary.columns)
    assert parser.body_rows == len(summary)
    text = "".join(parser.text)
    assert "1e-06" in text and "0.930" in text
    sig_rows = [a["class"] for t, a in parser.tags if t == "tr" and "sig" in (a.get("class") or "")]
    assert sig_rows == ["sig sig-pos"] and int(summary["significant"].sum()) == 1


def test_one_embedded_png_per_plot(built: tuple[Path, str, Collector]) -> None:
    folder, _, parser = built
    files = sorted((folder / "plots").glob("*.png"))
    # bar charts per (target, layer), heatmap per target, one shared CAV accuracy plot
    assert len(files) == len(TARGETS) * len(LAYERS) + len(TARGETS) + 1
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


def test_warnings_and_findings(built: tuple[Path, str, Collector]) -> None:
    _, _, parser = built
    text = " ".join("".join(parser.text).split())
    assert (
        "CAV for concept stripes at layer block2 is near chance (accuracy 0.55): "
        "its TCAV score means little"
    ) in text
    assert f"saved warning {EVIL}" in text
    assert "Set fire: 1 file(s) skipped (bad.jpg)" in text
    assert f"Only {N_RUNS} random run(s)" in text
    assert (
        "At layer block3, class fire is sensitive to concept red: "
        "score 0.93 ± 0.04 vs null 0.51, p_adj = 1e-06."
    ) in text
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
    row = pd.Series({"target": "t", "concept": "c", "layer": "l", "mean": 0.1, "std": 0.02,
                     "null_mean": 0.5, "p_adjusted": 0.0123})  # fmt: skip
    assert finding(row) == (
        "At layer l, class t is negatively sensitive to concept c: "
        "score 0.10 ± 0.02 vs null 0.50, p_adj = 0.012."
    )


def test_run_id_is_escaped_and_the_html_stays_well_formed(tmp_path: Path) -> None:
    folder = write_results(tmp_path)
    meta = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**meta, "run_id": f'x"{EVIL}'}))
    html = build_report(folder).read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(html)
    parser.close()
    assert parser.errors == [] and parser.stack == [] and EVIL not in html
    tags = [a for t, a in parser.tags if t == "meta" and a.get("name") == "tcavkit-run-id"]
    assert [a["content"] for a in tags] == [f'x"{EVIL}']
    assert f'Run idx"{EVIL}' in "".join(parser.text)  # <dt>Run id</dt><dd>value</dd>
    text = " ".join("".join(parser.text).split())
    assert "manifest.json not found" in text and "could not be checked" in text
