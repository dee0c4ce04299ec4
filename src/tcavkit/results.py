"""The result of an experiment: the runs and summary tables plus everything to reproduce them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tcavkit.cav import CAV
from tcavkit.stats import CORE_SUMMARY_COLUMNS

RUN_COLUMNS = [
    "target",
    "concept",
    "layer",
    "random",
    "run",
    "tcav_score",
    "magnitude",
    "cav_accuracy",
    "is_null",
]
EXTRA_RUN_COLUMNS = ["magnitude_ratio", "separation", "effect", "kind"]
NAME_COLUMNS = ("target", "concept", "layer", "random")
SUMMARY_COLUMNS = list(CORE_SUMMARY_COLUMNS)


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
        runs: one row per scored CAV (see :data:`RUN_COLUMNS`; null rows have ``is_null``).
        summary: one row per (target, concept, layer) (see :data:`SUMMARY_COLUMNS`).
        meta: config, seed, versions, model and data fingerprints, timings, warnings.
        cavs: (concept, negative set, layer) → trained :class:`~tcavkit.cav.CAV` (read
            from the cache on demand, or kept in memory without a cache; not written by
            :meth:`save`).
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    cavs: Mapping[tuple[str, str, str], CAV] = field(default_factory=dict, repr=False)

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    @property
    def significant(self) -> pd.DataFrame:
        """The summary rows that are significant after correction."""
        return self.summary[self.summary["significant"]]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``runs.csv``, ``summary.csv`` and ``results.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "runs.csv", self.runs.to_csv(index=False))
        _atomic_write(out / "summary.csv", self.summary.to_csv(index=False))
        document = {
            **self.meta,
            "summary": self.summary.to_dict(orient="records"),
            "runs": self.runs.to_dict(orient="records"),
        }
        _atomic_write(out / "results.json", json.dumps(_jsonable(document), indent=1))
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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
