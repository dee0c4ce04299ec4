"""Build ``report.html`` and ``plots/*.png`` from a results folder written by ``tcavkit run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tcavkit.atomic import atomic_write
from tcavkit.errors import DataError, one_line
from tcavkit.report.common import STALE_PLOT_RE, as_list
from tcavkit.report.figures import plot_all
from tcavkit.report.gallery import gallery
from tcavkit.report.html import RUN_ID_META, render_html
from tcavkit.results import (
    MANIFEST_FILE,
    RESULTS_FILE,
    RUNS_FILE,
    SUMMARY_FILE,
    check_manifest,
    output_error,
)
from tcavkit.store import ArrayStore
from tcavkit.tables import NAME_COLUMNS

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
__all__ = [
    "PLOTS_DIR",
    "REPORT_FILE",
    "RUN_ID_META",
    "build_report",
    "discard_report",
    "load_meta",
    "read_table",
]

_SUMMARY_REQUIRED = ("target", "concept", "layer", "mean")
_RUNS_REQUIRED = ("target", "concept", "layer")
_HINT = "run `tcavkit run` first and point the report at the results folder it writes"


def build_report(results_dir: str | Path, plot_cache: str | Path | None = None) -> Path:
    """Write ``results_dir/plots/*.png`` and ``results_dir/report.html``; return the HTML path.

    Reads ``summary.csv`` (required), ``runs.csv`` and ``results.json`` (optional: the
    report says what is missing), after checking them against ``manifest.json``. A folder
    without a manifest (an older tcavkit's, or written by hand) is reported with a warning
    that its files could not be checked. The report carries the run id of its tables (in
    ``<meta name="tcavkit-run-id">`` and the details section; the manifest's id, else
    ``results.json``'s). Plots left over from an
    earlier build that the current tables no longer produce are removed, so rebuilding is
    idempotent. A folder written by ``tcavkit discover`` (with ``concepts.json``) also gets
    the gallery of discovered concepts.

    With ``plot_cache`` (a cache folder: ``tcavkit run`` gives the experiment's), a plot
    drawn before from the same rows by the same code is copied from there instead of drawn
    again (:mod:`tcavkit.report.figures`); without it, every plot is drawn.

    Raises:
        DataError: the folder or ``summary.csv`` is missing, a file cannot be read, a file
            disagrees with the manifest (files of two runs), or the report cannot be written.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise DataError(f"results folder {folder} does not exist: {_HINT}.")
    manifest = check_manifest(folder)
    summary_path = folder / SUMMARY_FILE
    if not summary_path.is_file():
        raise DataError(f"{summary_path} is missing ({SUMMARY_FILE} not found): {_HINT}.")
    summary = read_table(summary_path, _SUMMARY_REQUIRED)

    extra: list[str] = []
    if manifest is None:
        extra.append(
            f"{folder / MANIFEST_FILE} not found (a folder written by an older tcavkit or by "
            "hand): its files could not be checked to come from one run."
        )
    runs_path = folder / RUNS_FILE
    runs = read_table(runs_path, _RUNS_REQUIRED) if runs_path.is_file() else None
    if runs is None:
        extra.append(f"{runs_path} not found: single runs are not shown.")
    meta = load_meta(folder / RESULTS_FILE, extra)
    discovered = gallery(folder, extra)
    if extra:
        meta = {**meta, "warnings": [*as_list(meta.get("warnings")), *extra]}
    run_id = (manifest or {}).get("run_id") or meta.get("run_id")
    if run_id:
        meta = {**meta, "run_id": str(run_id)}

    try:
        plots_dir = folder / PLOTS_DIR
        cache = ArrayStore(plot_cache) if plot_cache is not None else None
        paths = plot_all(summary, runs, plots_dir, cache)
        keep = {p.name for p in paths}
        for old in plots_dir.iterdir():
            if old.name not in keep and STALE_PLOT_RE.match(old.name) and old.is_file():
                old.unlink()
        html = render_html(summary, runs, meta, paths, discovered)
        out = folder / REPORT_FILE
        atomic_write(out, html)
    except OSError as e:
        raise output_error(folder, e, report=True) from e
    return out


def discard_report(results_dir: str | Path) -> None:
    """Remove ``report.html`` from a results folder whose tables were just rewritten, so
    that a report of the previous run is not left beside them if the build is cut short."""
    path = Path(results_dir) / REPORT_FILE
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise output_error(Path(results_dir), e, report=True) from e


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a results CSV; names stay strings (``NA``, ``null``, ``01`` are kept as written)."""
    try:
        header = pd.read_csv(path, nrows=0).columns
        names = {c: str for c in NAME_COLUMNS if c in header}
        table = pd.read_csv(
            path,
            dtype=names,
            keep_default_na=False,
            na_values={c: _NA for c in header if c not in names},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path} cannot be read as CSV ({e}): rerun `tcavkit run`.") from e
    except OSError as e:
        raise DataError(f"{path} cannot be read ({one_line(e)}): check its permissions.") from e
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)}: it was not written by "
            "`tcavkit run`; rerun it."
        )
    return table


_NA = ["", "NA", "N/A", "NaN", "nan", "-nan", "NULL", "null", "None", "<NA>"]


def load_meta(path: Path, notes: list[str]) -> dict[str, Any]:
    """``results.json`` as a dict; ``{}`` (and a note) when absent."""
    if not path.is_file():
        notes.append(f"{path} not found: experiment details are not shown.")
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}): rerun `tcavkit run`.") from e
    if not isinstance(meta, dict):
        raise DataError(f"{path} does not hold a JSON object: rerun `tcavkit run`.")
    return meta
