"""The result of an experiment: the runs and summary tables, plus the provenance that
reproduces them (config, seed, package versions, model and data fingerprints)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tcavkit.atomic import atomic_write
from tcavkit.cav.vector import CAV
from tcavkit.tables import NAME_COLUMNS
from tcavkit.version import __version__


@dataclass
class Counts:
    """What a run computed, and what it read from the cache (for tests and the benchmark)."""

    forward_batches: int = 0
    backward_batches: int = 0
    sets_computed: int = 0
    sets_from_cache: int = 0
    cavs_trained: int = 0
    cavs_from_cache: int = 0


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class TcavResult:
    """What :meth:`tcavkit.Experiment.run` returns.

    Attributes:
        runs: one row per scored CAV (see :data:`tcavkit.tables.RUN_COLUMNS`; null rows
            have ``is_null``).
        summary: one row per (target, concept, layer) (see :data:`tcavkit.tables.SUMMARY_COLUMNS`).
        meta: config, seed, versions, model and data fingerprints, timings, warnings.
        cavs: every trained :class:`~tcavkit.cav.CAV` by :class:`~tcavkit.cav.CavKey`
            ``(positive, negative, layer, run)`` (rebuilt from the cache on demand, or kept
            in memory without a cache; not written by :meth:`save`).
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    cavs: Mapping[tuple[str, str, str, int], CAV] = field(default_factory=dict, repr=False)

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    @property
    def counts(self) -> Counts:
        """What the run computed and what it read from the cache."""
        return Counts(**self.meta.get("counts", {}))

    @property
    def significant(self) -> pd.DataFrame:
        """The summary rows that are significant after correction."""
        return self.summary[self.summary["significant"]]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``runs.csv``, ``summary.csv`` and ``results.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "runs.csv", self.runs.to_csv(index=False))
        atomic_write(out / "summary.csv", self.summary.to_csv(index=False))
        document = {
            **self.meta,
            "summary": self.summary.to_dict(orient="records"),
            "runs": self.runs.to_dict(orient="records"),
        }
        atomic_write(out / "results.json", json.dumps(_jsonable(document), indent=1))
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> TcavResult:
        """Read a folder written by :meth:`save`."""
        out = Path(out_dir)
        meta = json.loads((out / "results.json").read_text())
        meta.pop("summary", None)
        meta.pop("runs", None)
        names = {column: str for column in NAME_COLUMNS}
        return cls(
            runs=pd.read_csv(out / "runs.csv", dtype=names, keep_default_na=False),
            summary=pd.read_csv(out / "summary.csv", dtype=names, keep_default_na=False),
            meta=meta,
        )


def provenance(
    *,
    config: dict[str, Any],
    seed: int,
    model: dict[str, Any],
    sets: dict[str, dict[str, Any]],
    stats: Any,
    warnings: list[str],
    timings: dict[str, float],
    counts: Counts,
) -> dict[str, Any]:
    """The ``meta`` of a :class:`TcavResult`: everything needed to reproduce it."""
    return {
        "tcavkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        "config": config,
        "versions": package_versions(),
        "model": model,
        "sets": sets,
        "stats": asdict(stats),
        "warnings": warnings,
        "timings": timings,
        "counts": asdict(counts),
    }


def package_versions() -> dict[str, str]:
    """Versions of the packages behind a result (read from their metadata: importing
    scikit-learn and matplotlib here alone took 0.4 s of a run)."""
    import torch

    found = {
        "tcavkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for package in ("numpy", "scipy", "scikit-learn", "pandas", "matplotlib"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
