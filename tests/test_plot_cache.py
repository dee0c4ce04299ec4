"""The plot cache: a plot whose rows and drawing code are unchanged is copied from the
experiment's cache folder, not drawn; a changed or damaged one is drawn again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcavkit.errors import TcavWarning
from tcavkit.report import build_report
from tcavkit.report.figures import plot_all
from tcavkit.store import ArrayStore
from tcavkit.workflow import run_experiment_file
from tiny_project import fresh, write_project

CONFIG = """\
model:
  path: models/cnn.pt
  layers: [block2, block3]
  labels: [fire, water, grass]
  input:
    size: [32, 32]
data: data
targets: [fire, water]
concepts: [red, blue]
random:
  runs: 4
examples:
  min: 5
seed: 0
cache: cache
"""

pytestmark = [
    pytest.mark.filterwarnings("ignore:only 4 random runs:tcavkit.errors.TcavWarning"),
    pytest.mark.filterwarnings("ignore:nearly every random CAV:tcavkit.errors.TcavWarning"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("plots"), CONFIG)


def test_plots_are_reused_redrawn_when_their_rows_change_and_when_damaged(
    project, tmp_path, monkeypatch
):
    import tcavkit.report.plots as plots

    folder = fresh(project, tmp_path)
    outcome = run_experiment_file(folder / "experiment.yaml", out=folder / "r1", progress=False)
    cache = ArrayStore(folder / "cache")
    drawn: list[str] = []
    draw = plots.draw_plot

    def counting(spec, rows, runs, path):
        drawn.append(spec.filename)
        draw(spec, rows, runs, path)

    monkeypatch.setattr(plots, "draw_plot", counting)
    summary, runs = outcome.result.summary, outcome.result.runs
    first = {p.name: p.read_bytes() for p in plot_all(summary, runs, folder / "p1", cache)}
    assert drawn == [] and first  # every plot came from the cache
    assert first == {p.name: p.read_bytes() for p in (folder / "r1" / "plots").iterdir()}

    changed = summary.copy()
    row = changed.index[(changed["target"] == "water") & (changed["layer"] == "block3")][0]
    changed.loc[row, "mean"] = changed.loc[row, "mean"] + 0.125
    plot_all(changed, runs, folder / "p2", cache)
    assert drawn and all("water" in name for name in drawn)  # only water's plots
    assert any("block3" in name for name in drawn)

    drawn.clear()
    victim = next(name for name in first if name.startswith("heatmap"))
    for npy in (folder / "cache").rglob("*.npy"):
        meta = json.loads(npy.with_suffix(".json").read_text())
        if meta.get("plot") == victim:
            data = bytearray(npy.read_bytes())
            data[-10] ^= 0xFF
            npy.write_bytes(bytes(data))
    with pytest.warns(TcavWarning, match="damaged"):
        again = plot_all(summary, runs, folder / "p3", cache)
    assert drawn == [victim]
    assert {p.name: p.read_bytes() for p in again} == first


def test_report_without_a_plot_cache_draws_every_plot(project, tmp_path, monkeypatch):
    import tcavkit.report.plots as plots

    folder = fresh(project, tmp_path)
    run_experiment_file(folder / "experiment.yaml", out=folder / "r1", progress=False)
    drawn: list[str] = []
    draw = plots.draw_plot
    monkeypatch.setattr(
        plots, "draw_plot", lambda spec, *args: (drawn.append(spec.filename), draw(spec, *args))
    )
    build_report(folder / "r1")
    assert len(drawn) == len(list((folder / "r1" / "plots").iterdir()))
