"""Which plots a report has, and each plot's PNG: reused from the plot cache when the same
plot of the same rows was drawn before, else drawn (by :mod:`tcavkit.report.plots`).

This module does not import matplotlib: a report whose every plot is in the cache is built
without it.

The plot cache is a folder of :class:`~tcavkit.store.ArrayStore` entries (the experiment's
cache folder, when ``tcavkit run`` builds the report). A plot's key is the content of what
it shows and of what draws it: the plot's spec (kind, class, layer, file name, title), the
exact rows it is drawn from (as CSV text), the source code of the report modules that draw
(:data:`PLOT_CODE`) and matplotlib's version. A change of any of them draws the plot anew;
an entry that fails its checksum is reported, deleted and drawn again. Fonts are not part of
the key: a plot drawn before a font was installed keeps its glyphs until one of the above
changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from tcavkit.atomic import atomic_write
from tcavkit.report.common import as_bool, float_column, ordered_unique, plot_filename
from tcavkit.store import ArrayStore, cache_key
from tcavkit.tables import LOW_CAV_ACCURACY

_DRAWING_MODULES = ("figures.py", "plots.py", "common.py", "text.py")
"""The report modules whose code decides a plot's pixels (their source is in the key)."""


EXPLANATIONS = {
    "statistic": (
        "What was tested. Bars: the tested statistic per concept (mean over runs), with its "
        "interval at the level the multiple-testing correction tests the row at. Dashed line "
        "and band: random concepts (random image sets, each tested as if it were a concept), "
        "mean ± 1 sd. Solid blue bars marked + are significantly above random concepts, solid "
        "orange bars marked − significantly below; hatched grey bars are not significant, and "
        "their interval covers the random concepts' mean."
    ),
    "tcav": (
        "The TCAV score, a description: the share of the class's examples whose logit rises "
        "along the CAV (mean over random runs, with its 95% interval; dots: single runs). "
        "Dashed line and band: random concepts, mean ± 1 sd. Colours and marks are those of "
        "the test of the tested statistic (above), not of this score: blue + significantly "
        "positive, orange − significantly negative, hatched grey not significant."
    ),
    "heatmap": (
        "Mean TCAV score (descriptive) for each concept (columns) at each layer (rows). 0.5 "
        "(white) is no preference; blue: the class logit rises along the concept for most "
        "examples, orange: it falls. Marks come from the test of the tested statistic: + "
        "significantly positive, − significantly negative; hatched grey cells are not "
        "significant."
    ),
    "cav-accuracy": (
        "Held-out accuracy of the concept-vs-random linear classifiers (mean over runs; dots: "
        f"single runs). Bars below the dashed line at {LOW_CAV_ACCURACY:g} are near chance, "
        "hatched and marked !: TCAV scores from those CAVs mean little."
    ),
}
"""What each kind of plot shows (one paragraph per kind in the report)."""


@dataclass(frozen=True)
class PlotSpec:
    """One plot to draw: its kind, the rows it shows, its file name and a short title."""

    kind: str
    target: str | None
    layer: str | None
    filename: str
    title: str


def plan_plots(summary: pd.DataFrame) -> list[PlotSpec]:
    """The plots ``summary`` gives rise to, in report order: the tested statistic (when the
    summary has it), TCAV score bars, heatmaps, CAV accuracy."""
    if summary.empty or not {"target", "concept", "layer", "mean"} <= set(summary.columns):
        return []
    specs: list[PlotSpec] = []
    targets = ordered_unique(summary["target"])
    if np.isfinite(float_column(summary, "statistic_mean")).any():
        for target in targets:
            rows = summary[summary["target"].astype(str) == target]
            for layer in ordered_unique(rows["layer"]):
                name = plot_filename("statistic", target, layer)
                title = f"Class {target}, layer {layer}: tested statistic"
                specs.append(PlotSpec("statistic", target, layer, name, title))
    for target in targets:
        rows = summary[summary["target"].astype(str) == target]
        for layer in ordered_unique(rows["layer"]):
            name = plot_filename("tcav", target, layer)
            specs.append(PlotSpec("tcav", target, layer, name, f"Class {target}, layer {layer}"))
    for target in targets:
        name = plot_filename("heatmap", target)
        specs.append(PlotSpec("heatmap", target, None, name, f"Class {target}, all layers"))
    if np.isfinite(float_column(summary, "cav_accuracy_mean")).any():
        if _accuracy_shared(summary):
            name = plot_filename("cav-accuracy", None)
            specs.append(PlotSpec("cav-accuracy", None, None, name, "All concepts and layers"))
        else:  # accuracies differ between targets: one plot per target
            for target in targets:
                name = plot_filename("cav-accuracy", target)
                specs.append(PlotSpec("cav-accuracy", target, None, name, f"Class {target}"))
    return specs


@lru_cache(maxsize=1)
def plot_code() -> str:
    """SHA-256 of the source of the modules that draw the plots, and matplotlib's version."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _DRAWING_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        digest.update(importlib.metadata.version("matplotlib").encode())
    return digest.hexdigest()


def plot_data(
    spec: PlotSpec, summary: pd.DataFrame, concept_runs: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The rows plot ``spec`` is drawn from: summary rows, and single runs (or ``None``).

    ``concept_runs``: the runs table without its null rows (:func:`_concept_runs`).
    """
    if spec.kind in ("statistic", "heatmap"):
        return _select(summary, spec.target, spec.layer), None
    if spec.kind == "tcav":
        return (
            _select(summary, spec.target, spec.layer),
            _select(concept_runs, spec.target, spec.layer),
        )
    rows = _select(summary, spec.target)
    run_rows = _select(concept_runs, spec.target)
    if spec.target is None:
        rows = rows.drop_duplicates(["concept", "layer"])
        if run_rows is not None:
            keys = [c for c in ("concept", "layer", "random", "run") if c in run_rows]
            run_rows = run_rows.drop_duplicates(keys)
    return rows, run_rows


def plot_key(spec: PlotSpec, rows: pd.DataFrame, runs: pd.DataFrame | None) -> str:
    """The plot cache key of ``spec`` drawn from ``rows`` and ``runs`` (see the module)."""

    def content(table: pd.DataFrame | None) -> str | None:
        if table is None:
            return None
        text = table.to_csv(index=False, lineterminator="\n")
        return hashlib.sha256(text.encode()).hexdigest()

    return cache_key(
        kind="plot", spec=asdict(spec), rows=content(rows), runs=content(runs), code=plot_code()
    )


def plot_all(
    summary: pd.DataFrame,
    runs: pd.DataFrame | None,
    out_dir: Path,
    cache: ArrayStore | None = None,
) -> list[Path]:
    """Write every plot of :func:`plan_plots` as PNG into ``out_dir``; return their paths.

    Args:
        summary: one row per (target, concept, layer) with at least ``target, concept,
            layer, mean``; other columns (``ci_low, ci_high, null_mean, null_std,
            significant, direction, cav_accuracy_mean`` and the ``statistic_*`` columns) are
            used when present.
        runs: one row per CAV (``target, concept, layer, tcav_score, cav_accuracy,
            is_null``) for the single-run dots, or ``None``.
        out_dir: folder for the PNGs (created if needed).
        cache: the plot cache (see the module): a plot found there is copied, not drawn,
            and a plot drawn is stored there. ``None``: every plot is drawn.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    concept_runs = _concept_runs(runs)
    store = cache if cache is not None and cache.root is not None else None
    paths: list[Path] = []
    for spec in plan_plots(summary):
        path = out_dir / spec.filename
        rows, run_rows = plot_data(spec, summary, concept_runs)
        key = plot_key(spec, rows, run_rows) if store is not None else ""
        found = store.get(key) if store is not None else None
        if found is not None:
            atomic_write(path, found.tobytes())
        else:
            from tcavkit.report.plots import draw_plot  # matplotlib: only to draw

            draw_plot(spec, rows, run_rows, path)
            if store is not None:
                png = np.frombuffer(path.read_bytes(), dtype=np.uint8)
                store.put(key, png, meta={"plot": spec.filename})
        paths.append(path)
    return paths


def _concept_runs(runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """The non-null rows of ``runs`` (None if unusable)."""
    if runs is None or runs.empty or not {"target", "concept", "layer"} <= set(runs.columns):
        return None
    if "is_null" in runs.columns:
        runs = runs[[not as_bool(v) for v in runs["is_null"]]]
    return runs


def _select(table: pd.DataFrame | None, target: str | None, layer: str | None = None):
    """Rows of ``table`` for ``target`` (all if None) and ``layer`` (all if None)."""
    if table is None:
        return None
    mask = np.ones(len(table), dtype=bool)
    if target is not None:
        mask &= (table["target"].astype(str) == target).to_numpy()
    if layer is not None:
        mask &= (table["layer"].astype(str) == layer).to_numpy()
    return table[mask]


def _accuracy_shared(summary: pd.DataFrame) -> bool:
    """True when every (concept, layer) has the same CAV accuracy for all targets."""
    acc = pd.DataFrame(
        {
            "concept": summary["concept"].astype(str),
            "layer": summary["layer"].astype(str),
            "acc": float_column(summary, "cav_accuracy_mean"),
        }
    )
    spread = acc.groupby(["concept", "layer"], sort=False)["acc"].agg(
        lambda s: (s.max() - s.min()) if s.notna().any() else 0.0
    )
    return bool((spread.fillna(0.0) <= 1e-9).all())
