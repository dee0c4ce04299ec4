"""PNG plots of the result tables (matplotlib Agg canvas; no pyplot global state)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, font_manager, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from tcavkit.report.common import (
    DIRECTION_MARKS,
    directions,
    float_column,
    ordered_unique,
    statistics_of,
    to_float,
)
from tcavkit.report.figures import (  # noqa: F401 (plot_all and plan_plots: kept here too)
    EXPLANATIONS,
    PlotSpec,
    plan_plots,
    plot_all,
)
from tcavkit.report.text import statistic_label
from tcavkit.tables import LOW_CAV_ACCURACY

# Okabe-Ito blue and orange: told apart with every common colour-vision deficiency, and
# neither is the red that flags near-chance CAVs.
POS_COLOR = "#0072b2"
NEG_COLOR = "#e69f00"
DIRECTION_COLORS = {"positive": POS_COLOR, "negative": NEG_COLOR}
DIRECTION_LABELS = {
    "positive": f"significant, positive ({DIRECTION_MARKS['positive']})",
    "negative": f"significant, negative ({DIRECTION_MARKS['negative']})",
}
NONSIG_COLOR = "#d5dbe3"
NONSIG_EDGE = "#8a94a6"
NONSIG_LABEL = "not significant"
NULL_COLOR = "#4a5568"
NULL_LABEL = "random concepts (mean)"
NULL_BAND_LABEL = "random concepts ± 1 sd"
SCORE_CMAP = LinearSegmentedColormap.from_list("tcav_score", [NEG_COLOR, "#ffffff", POS_COLOR])
"""Heatmap colours: orange below 0.5, white at 0.5, blue above (as the bars' directions)."""
LOW_ACC_COLOR = "#c53030"
TEXT_COLOR = "#1a202c"
DPI = 110
MAX_WIDTH_IN = 18.0
MAX_ANNOTATED_CELLS = 150
_LABEL_MAX = 28
_FALLBACK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Source Han Sans SC",
    "WenQuanYi Zen Hei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans", "Malgun Gothic",
    "Arial Unicode MS", "Noto Sans",
)  # fmt: skip


def plot_tcav_bars(
    rows: pd.DataFrame, runs: pd.DataFrame | None, spec: PlotSpec, path: Path
) -> None:
    """Bar chart of one (target, layer) as PNG at ``path`` (see :func:`draw_tcav_bars`)."""
    n = len(rows)
    with _figure(min(MAX_WIDTH_IN, max(6.0, 0.55 * n + 4.0)), 4.2, path) as fig:
        draw_tcav_bars(fig.add_subplot(), rows, runs, spec)


def draw_tcav_bars(ax: Axes, rows: pd.DataFrame, runs: pd.DataFrame | None, spec: PlotSpec):
    """Draw one (target, layer) on ``ax``: mean ± CI per concept, the null, significance.

    Significant bars are solid, coloured and marked by direction (:func:`directions`):
    blue ``+`` positive, orange ``−`` negative; the others hatched grey. Returns the bars
    (one per row of ``rows``, in order).
    """
    concepts = [str(c) for c in rows["concept"]]
    n = len(concepts)
    x = np.arange(n, dtype=float)
    mean = float_column(rows, "mean")
    lo, hi = float_column(rows, "ci_low"), float_column(rows, "ci_high")
    null_mean, null_std = float_column(rows, "null_mean"), float_column(rows, "null_std")
    dirs = directions(rows)

    bars = _direction_bars(ax, x, mean, dirs)
    ok = np.isfinite(mean) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        yerr = np.clip(np.vstack([mean[ok] - lo[ok], hi[ok] - mean[ok]]), 0, None)
        ax.errorbar(
            x[ok],
            mean[ok],
            yerr=yerr,
            fmt="none",
            ecolor=TEXT_COLOR,
            elinewidth=1.2,
            capsize=4,
            zorder=4,
        )
    _draw_null(ax, x, null_mean, null_std)
    _draw_run_dots(ax, concepts, runs, "tcav_score", x, 0.5)
    for xi in x[~np.isfinite(mean)]:
        ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=8, color=NONSIG_EDGE)
    _direction_marks(ax, x, dirs)
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("TCAV score")
    ax.set_title(_label(f"class {spec.target} · layer {spec.layer}", 70), loc="left", pad=24)
    _concept_ticks(ax, x, concepts)
    handles = _significance_handles(dirs)
    handles.append(
        Line2D([], [], color=TEXT_COLOR, marker="|", markersize=10, lw=1.2, label="95% interval")
    )
    handles += _null_handles(null_mean, null_std)
    if runs is not None and len(runs):
        handles.append(
            Line2D(
                [], [], ls="", marker="o", ms=4, color=TEXT_COLOR, alpha=0.45, label="single runs"
            )
        )
    _legend_right(ax, handles)
    return bars


def plot_statistic_bars(rows: pd.DataFrame, spec: PlotSpec, path: Path) -> None:
    """The tested statistic of one (target, layer) as PNG at ``path`` (see
    :func:`draw_statistic_bars`)."""
    n = len(rows)
    with _figure(min(MAX_WIDTH_IN, max(6.0, 0.55 * n + 4.0)), 4.2, path) as fig:
        draw_statistic_bars(fig.add_subplot(), rows, spec)


def draw_statistic_bars(ax: Axes, rows: pd.DataFrame, spec: PlotSpec):
    """Draw the tested statistic of one (target, layer) on ``ax``: per concept the bar of
    ``statistic_mean``, an error bar from ``statistic_low`` to ``statistic_high`` (where the
    results have them), and random concepts' mean (``statistic_null_mean``, dashed) ± 1 sd.

    Bars are coloured and marked by :func:`directions` as in :func:`draw_tcav_bars`, so a
    mark sits only on a bar whose interval excludes the dashed line. Returns the bars.
    """
    concepts = [str(c) for c in rows["concept"]]
    n = len(concepts)
    x = np.arange(n, dtype=float)
    tested = statistics_of(rows)
    mean = np.array([t.mean for t in tested], dtype=float)
    low = np.array([t.low for t in tested], dtype=float)
    high = np.array([t.high for t in tested], dtype=float)
    null_mean = np.array([t.null_mean for t in tested], dtype=float)
    null_std = np.array([t.null_std for t in tested], dtype=float)
    dirs = directions(rows)

    ax.axhline(0, color=TEXT_COLOR, lw=0.8, zorder=1.5)
    bars = _direction_bars(ax, x, mean, dirs)
    ok = np.isfinite(mean) & np.isfinite(low) & np.isfinite(high)
    if ok.any():
        yerr = np.clip(np.vstack([mean[ok] - low[ok], high[ok] - mean[ok]]), 0, None)
        ax.errorbar(x[ok], mean[ok], yerr=yerr, fmt="none", ecolor=TEXT_COLOR, elinewidth=1.2,
                    capsize=4, zorder=4)  # fmt: skip
    _draw_null(ax, x, null_mean, null_std)
    for xi in x[~np.isfinite(mean)]:
        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8, color=NONSIG_EDGE)
    _direction_marks(ax, x, dirs)
    ax.margins(y=0.08)
    ax.set_xlim(-0.6, n - 0.4)
    names = ordered_unique(t.name for t in tested)
    label = " / ".join(statistic_label(name) for name in names) or "statistic"
    unit = " (change of the class logit)" if names == ["effect"] else ""
    ax.set_ylabel(_label(label + unit, 60))
    ax.set_title(
        _label(f"class {spec.target} · layer {spec.layer} · tested: {label}", 80),
        loc="left",
        pad=24,
    )
    _concept_ticks(ax, x, concepts)
    handles = _significance_handles(dirs)
    if ok.any():
        interval = "interval (corrected level)"
        handles.append(Line2D([], [], color=TEXT_COLOR, marker="|", ms=10, lw=1.2, label=interval))
    handles += _null_handles(null_mean, null_std)
    _legend_right(ax, handles)
    return bars


def plot_heatmap(rows: pd.DataFrame, spec: PlotSpec, path: Path) -> None:
    """Layer × concept heatmap of one target as PNG at ``path`` (see :func:`draw_heatmap`)."""
    n_l, n_c = len(ordered_unique(rows["layer"])), len(ordered_unique(rows["concept"]))
    width = min(MAX_WIDTH_IN, max(5.5, 0.75 * n_c + 3.5))
    height = min(14.0, max(3.0, 0.5 * n_l + 2.3))
    with _figure(width, height, path) as fig:
        draw_heatmap(fig.add_subplot(), rows, spec)


def draw_heatmap(ax: Axes, rows: pd.DataFrame, spec: PlotSpec) -> np.ndarray:
    """Draw the layer × concept heatmap of mean TCAV scores for one target on ``ax``.

    Significant cells are coloured by score and marked ``+`` (positive) or ``−``
    (negative) by :func:`directions`; the others hatched grey. The legend shows exactly
    those marks (only the kinds that occur). Returns the ``(n_layers, n_concepts)``
    direction of each cell (``none`` also for cells without a row).
    """
    layers, concepts = ordered_unique(rows["layer"]), ordered_unique(rows["concept"])
    n_l, n_c = len(layers), len(concepts)
    values = np.full((n_l, n_c), np.nan)
    dirs = np.full((n_l, n_c), "none", dtype="<U8")
    seen = np.zeros((n_l, n_c), dtype=bool)
    li, ci = {v: i for i, v in enumerate(layers)}, {v: i for i, v in enumerate(concepts)}
    for layer, concept, m, d in zip(
        rows["layer"], rows["concept"], float_column(rows, "mean"), directions(rows), strict=True
    ):
        i, j = li[str(layer)], ci[str(concept)]
        if not seen[i, j] or np.isnan(values[i, j]):  # the first row with a score wins
            seen[i, j], values[i, j], dirs[i, j] = True, m, d
    sig = dirs != "none"

    norm = TwoSlopeNorm(vmin=0.0, vcenter=0.5, vmax=1.0)
    shown = np.ma.masked_invalid(np.where(sig, values, np.nan))
    image = ax.imshow(shown, cmap=SCORE_CMAP, norm=norm, aspect="auto", interpolation="nearest")
    annotate = n_l * n_c <= MAX_ANNOTATED_CELLS
    for i in range(n_l):
        for j in range(n_c):
            v, d = values[i, j], str(dirs[i, j])
            if not sig[i, j]:
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        facecolor=NONSIG_COLOR,
                        edgecolor=NONSIG_EDGE,
                        hatch="//",
                        lw=0,
                        zorder=1,
                    )
                )
            if sig[i, j]:  # the direction mark always; the score too when there is room
                mark = DIRECTION_MARKS[d]
                text = f"{v:.2f} {mark}" if annotate and np.isfinite(v) else mark
                fill = SCORE_CMAP(norm(v)) if np.isfinite(v) else (1.0, 1.0, 1.0)
                ax.text(j, i, text, ha="center", va="center", fontsize=9 if annotate else 11,
                        fontweight="bold", color=_text_color_on(fill), zorder=3,
                        gid=f"mark-{d}")  # fmt: skip
            elif annotate:
                text, color = ("n/a", NONSIG_EDGE) if np.isnan(v) else (f"{v:.2f}", "#4a5568")
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color=color,
                    zorder=3,
                    bbox=dict(boxstyle="round,pad=0.15", fc=NONSIG_COLOR, ec="none"),
                )
    ax.set_xticks(np.arange(n_c) + 0.5, minor=True)
    ax.set_yticks(np.arange(n_l) + 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    _concept_ticks(ax, np.arange(n_c, dtype=float), concepts)
    ax.set_yticks(np.arange(n_l), [_label(v) for v in layers])
    ax.set_ylabel("layer")
    ax.set_xlim(-0.5, n_c - 0.5)
    ax.set_ylim(n_l - 0.5, -0.5)
    ax.figure.colorbar(
        image,
        ax=ax,
        label="mean TCAV score",
        fraction=0.05,
        pad=0.02,
        shrink=0.9 if n_l > 2 else 1.0,
    )
    handles: list = [
        Line2D([], [], ls="", marker=_mathtext_mark(d), ms=9, color=TEXT_COLOR, label=label)
        for d, label in DIRECTION_LABELS.items()
        if (dirs == d).any()
    ]
    if (~sig).any():
        handles.append(
            Patch(facecolor=NONSIG_COLOR, edgecolor=NONSIG_EDGE, hatch="//", label=NONSIG_LABEL)
        )
    # one row above the axes when the entries fit the figure's width, else a column
    fits = len(handles) * 2.1 <= ax.figure.get_figwidth()
    ax.set_title(
        _label(f"Mean TCAV score · class {spec.target}", 70),
        loc="left",
        pad=24 if fits else 10 + 14 * len(handles),
    )
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=len(handles) if fits else 1,
        frameon=False,
        fontsize=8.5,
        borderaxespad=0.2,
    )
    return dirs


def plot_cav_accuracy(
    rows: pd.DataFrame, runs: pd.DataFrame | None, spec: PlotSpec, path: Path
) -> None:
    """Grouped bars of mean CAV accuracy (concept × layer); near-chance CAVs flagged."""
    concepts, layers = ordered_unique(rows["concept"]), ordered_unique(rows["layer"])
    n_c, n_l = len(concepts), len(layers)
    acc = {
        (str(c), str(lay)): to_float(a)
        for c, lay, a in zip(rows["concept"], rows["layer"], rows["cav_accuracy_mean"], strict=True)
    }
    group_w = 0.8
    bar_w = group_w / max(n_l, 1)
    palette = _layer_colors(n_l)
    x0 = np.arange(n_c, dtype=float)
    width = min(MAX_WIDTH_IN, max(6.5, (0.3 * n_l + 0.35) * n_c + 1.5))
    with _figure(width, 4.2, path) as fig:
        ax = fig.add_subplot()
        ax.axhline(LOW_CAV_ACCURACY, color=LOW_ACC_COLOR, ls="--", lw=1.4, zorder=3)
        ax.axhline(0.5, color=NONSIG_EDGE, ls=":", lw=1.2, zorder=3)
        handles: list = []
        near_chance = False
        for k, layer in enumerate(layers):
            color = palette[k]
            xs = x0 - group_w / 2 + (k + 0.5) * bar_w
            vals = np.array([acc.get((c, layer), np.nan) for c in concepts])
            bars = ax.bar(xs, np.nan_to_num(vals), width=bar_w * 0.92, color=color, zorder=2)
            for bar, v, xi in zip(bars, vals, xs, strict=True):
                if np.isfinite(v) and v < LOW_CAV_ACCURACY:
                    near_chance = True
                    bar.set_hatch("xx")
                    bar.set_edgecolor(LOW_ACC_COLOR)
                    bar.set_linewidth(1.2)
                    ax.text(
                        xi,
                        max(v, LOW_CAV_ACCURACY) + 0.01,
                        "!",
                        ha="center",
                        va="bottom",
                        color=LOW_ACC_COLOR,
                        fontsize=13,
                        fontweight="bold",
                        zorder=5,
                    )
            if runs is not None and len(runs):
                layer_runs = runs[runs["layer"].astype(str) == layer]
                _draw_run_dots(ax, concepts, layer_runs, "cav_accuracy", xs, bar_w * 0.6)
            handles.append(Patch(facecolor=color, label=_label(f"layer {layer}")))
        if near_chance:
            label = f"near chance (below {LOW_CAV_ACCURACY:g}), marked !"
            handles.append(
                Patch(facecolor="white", edgecolor=LOW_ACC_COLOR, hatch="xx", lw=1.2, label=label)
            )
        handles += [
            Line2D([], [], color=LOW_ACC_COLOR, ls="--", lw=1.4,
                   label=f"threshold {LOW_CAV_ACCURACY:g}"),
            Line2D([], [], color=NONSIG_EDGE, ls=":", lw=1.2, label="chance (0.5)"),
        ]  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, n_c - 0.4)
        ax.set_ylabel("CAV accuracy (held out)")
        who = "all classes" if spec.target is None else f"class {spec.target}"
        _concept_ticks(ax, x0, concepts)
        _legend_above(ax, handles, _label(f"CAV accuracy · {who}", 70))


# ---------------------------------------------------------------- helpers


@contextmanager
def _figure(width: float, height: float, path: Path) -> Iterator[Figure]:
    """A fresh Agg figure, saved to ``path`` as PNG on exit."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fonts = {"font.family": "sans-serif", "font.sans-serif": _font_stack()}
    with warnings.catch_warnings(), rc_context(fonts):
        warnings.filterwarnings("ignore", message=r"Glyph .* missing")
        yield fig
        for ax in fig.axes:
            ax.spines[["top", "right"]].set_visible(False)
        fig.savefig(
            path,
            format="png",
            dpi=DPI,
            bbox_inches="tight",
            pad_inches=0.15,
            metadata={"Software": None},
        )


@lru_cache(maxsize=1)
def _font_stack() -> list[str]:
    """DejaVu Sans, then installed fonts with wider Unicode coverage (CJK names)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(f for f in _FALLBACK_FONTS if f in installed)]


def _text_color_on(fill) -> str:
    """White or dark text, whichever contrasts more with the colour ``fill`` (WCAG)."""

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in to_rgb(fill))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    dark = 0.0137  # relative luminance of TEXT_COLOR
    return "white" if (1.05 / (lum + 0.05)) > ((lum + 0.05) / (dark + 0.05)) else TEXT_COLOR


def _mathtext_mark(direction: str) -> str:
    """The legend marker for a direction's mark (mathtext ``-`` draws U+2212)."""
    return r"$+$" if direction == "positive" else r"$-$"


def _layer_colors(n: int) -> list:
    """Distinct colours for ``n`` layers, avoiding the red used to flag near-chance CAVs."""
    if n <= 8:
        tab = colormaps["tab10"]
        return [tab(i) for i in (0, 1, 2, 4, 5, 7, 8, 9)][:n]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def _label(text: str, max_len: int = _LABEL_MAX) -> str:
    """Plain text for matplotlib: ``$`` escaped (no mathtext), long names shortened."""
    text = " ".join(str(text).split())
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text.replace("$", r"\$")


def _concept_ticks(ax, x: np.ndarray, concepts: list[str]) -> None:
    labels = [_label(c) for c in concepts]
    rotate = len(labels) > 4 or max((len(s) for s in labels), default=0) > 10
    ax.set_xticks(
        x,
        labels,
        rotation=35 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
    )


def _direction_bars(ax, x: np.ndarray, values: np.ndarray, dirs: np.ndarray):
    """Bars of ``values`` (NaN drawn as 0): solid blue/orange for significant positive/
    negative rows, hatched grey for the others; a coloured stripe at 0 keeps the colour
    visible when a value is (near) 0. Returns the bars."""
    bars = ax.bar(x, np.nan_to_num(values), width=0.7, zorder=2, linewidth=0.8)
    for bar, d in zip(bars, dirs, strict=True):
        color = DIRECTION_COLORS.get(str(d))
        bar.set_facecolor(color or NONSIG_COLOR)
        bar.set_edgecolor(color or NONSIG_EDGE)
        bar.set_hatch(None if color else "///")
        if color:
            ax.hlines(0, bar.get_x(), bar.get_x() + bar.get_width(), colors=color, lw=4,
                      zorder=2.5, clip_on=False)  # fmt: skip
    return bars


def _direction_marks(ax, x: np.ndarray, dirs: np.ndarray) -> None:
    """``+``/``−`` above the axes over each significant bar (never hidden by the data)."""
    for xi, d in zip(x, dirs, strict=True):
        if d in DIRECTION_COLORS:
            ax.text(xi, 1.0, DIRECTION_MARKS[d], ha="center", va="bottom", fontsize=16,
                    fontweight="bold", color=DIRECTION_COLORS[d], clip_on=False, zorder=5,
                    gid=f"mark-{d}", transform=ax.get_xaxis_transform())  # fmt: skip


def _significance_handles(dirs: np.ndarray) -> list:
    """Legend entries for the kinds of bars that are drawn (see :func:`_direction_bars`)."""
    handles: list = [
        Patch(facecolor=DIRECTION_COLORS[d], edgecolor=DIRECTION_COLORS[d], label=label)
        for d, label in DIRECTION_LABELS.items()
        if (dirs == d).any()
    ]
    if (dirs == "none").any():
        handles.append(
            Patch(facecolor=NONSIG_COLOR, edgecolor=NONSIG_EDGE, hatch="///", label=NONSIG_LABEL)
        )
    return handles


def _null_handles(null_mean: np.ndarray, null_std: np.ndarray) -> list:
    handles: list = []
    if np.isfinite(null_mean).any():
        handles.append(Line2D([], [], color=NULL_COLOR, ls="--", lw=1.5, label=NULL_LABEL))
    if np.isfinite(null_std).any():
        handles.append(Patch(facecolor=NULL_COLOR, alpha=0.15, label=NULL_BAND_LABEL))
    return handles


def _legend_above(ax, handles: list, title: str) -> None:
    """The legend in as few rows as fit the axes' width, between the axes and ``title``.

    Measured on the figure's renderer, so that neither the legend nor the title is cut or
    overlaps the other, whatever the labels.
    """
    renderer = ax.figure.canvas.get_renderer()
    width = ax.get_window_extent(renderer).width
    for ncol in range(len(handles), 0, -1):
        legend = ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.02),
            ncol=ncol,
            frameon=False,
            fontsize=8.5,
            borderaxespad=0.0,
            handlelength=2.4,
            handleheight=1.4,
            columnspacing=1.6,
        )
        box = legend.get_window_extent(renderer)
        if box.width <= width or ncol == 1:
            break
    points = 72.0 / ax.figure.dpi  # points per pixel
    ax.set_title(title, loc="left", pad=(box.height + 0.02 * ax.bbox.height) * points + 6)


def _legend_right(ax, handles: list) -> None:
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=8.5,
        borderaxespad=0.0,
    )


def _draw_null(ax, x: np.ndarray, null_mean: np.ndarray, null_std: np.ndarray) -> None:
    """One dashed line (and ±1 sd band) if the null is shared, else one per bar."""
    ok = np.isfinite(null_mean)
    if not ok.any():
        return
    shared = np.ptp(null_mean[ok]) < 1e-9 and (
        not np.isfinite(null_std).any() or np.nanmax(null_std) - np.nanmin(null_std) < 1e-9
    )
    if shared:
        m = null_mean[ok][0]
        sd = null_std[np.isfinite(null_std)]
        if sd.size:
            ax.axhspan(m - sd[0], m + sd[0], color=NULL_COLOR, alpha=0.15, lw=0, zorder=1)
        ax.axhline(m, color=NULL_COLOR, ls="--", lw=1.5, zorder=3)
        return
    for xi, m, sd in zip(x[ok], null_mean[ok], null_std[ok], strict=True):
        if np.isfinite(sd):
            ax.add_patch(
                Rectangle(
                    (xi - 0.45, m - sd), 0.9, 2 * sd, color=NULL_COLOR, alpha=0.15, lw=0, zorder=1
                )
            )
        ax.hlines(m, xi - 0.45, xi + 0.45, colors=NULL_COLOR, linestyles="--", lw=1.5, zorder=3)


def _draw_run_dots(
    ax, concepts: list[str], runs: pd.DataFrame | None, column: str, x: np.ndarray, spread: float
) -> None:
    """Single-run values as small dots, spread evenly across each bar."""
    if runs is None or column not in runs.columns or runs.empty:
        return
    names = runs["concept"].astype(str)
    for xi, concept in zip(x, concepts, strict=True):
        vals = float_column(runs[names == concept], column)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            offsets = np.linspace(-spread / 2, spread / 2, vals.size) if vals.size > 1 else [0]
            ax.scatter(
                xi + np.asarray(offsets), vals, s=7, color=TEXT_COLOR, alpha=0.45, lw=0, zorder=4
            )


def draw_plot(spec: PlotSpec, rows: pd.DataFrame, runs: pd.DataFrame | None, path: Path) -> None:
    """Draw the plot ``spec`` of ``rows`` (and ``runs``, the single runs it shows) as PNG at
    ``path`` (the rows :func:`tcavkit.report.figures.plot_data` selects)."""
    if spec.kind == "statistic":
        plot_statistic_bars(rows, spec, path)
    elif spec.kind == "tcav":
        plot_tcav_bars(rows, runs, spec, path)
    elif spec.kind == "heatmap":
        plot_heatmap(rows, spec, path)
    else:
        plot_cav_accuracy(rows, runs, spec, path)
