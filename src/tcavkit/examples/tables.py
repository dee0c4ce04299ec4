"""Tabular example sets: the rows of one CSV file (``<data>/<name>.csv``) as float features.

The model's feature columns are read in the order ``columns`` gives (all of the file's
columns, in file order, without it). Rows are chosen with the same seeded rule as every
other source, and the fingerprint hashes the chosen rows' values and the column names, so
re-saving the file with other formatting keeps the cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tcavkit.errors import DataError, one_line
from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
from tcavkit.examples.digests import FileDigests
from tcavkit.examples.sources import chosen_indices, record_digest, selection_record, tensor_sha256
from tcavkit.options import Preprocessing

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch


def read_feature_table(path: Path, columns: Sequence[str] | None, name: str) -> np.ndarray:
    """The feature columns of a CSV file as float32 ``(rows, features)``.

    Raises:
        DataError: the file is missing or unreadable, a column is missing, or a value is not
            a finite number (NaN, an infinity, or beyond float32's range included); the
            message names the file, the column and the row.
    """
    if not path.is_file():
        raise DataError(
            f"example set '{name}': {path} does not exist; create it or remove '{name}'"
        )
    try:
        # Only an empty cell is missing: "NA", "null", "nan" stay text, named if refused.
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(
            f"example set '{name}': cannot read {path} as CSV ({one_line(error)})"
        ) from error
    wanted = list(table.columns) if columns is None else list(columns)
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DataError(
            f"example set '{name}': {path} has no column {missing[0]!r} (model.columns); its "
            f"columns are {', '.join(map(repr, list(table.columns)[:12]))}"
        )
    features = np.empty((len(table), len(wanted)), dtype=np.float32)
    for j, column in enumerate(wanted):
        numeric = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(over="ignore"):  # beyond float32's range: infinite, refused below
            features[:, j] = numeric
        bad = ~np.isfinite(features[:, j])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = table[column].iloc[row]
            where = f"in data row {row + 1}"
            if pd.isna(value):
                problem = f"is not numeric (an empty cell {where})"
            elif not _is_number(value):
                problem = f"is not numeric ({value!r} {where})"
            else:
                problem = f"holds {str(value).strip()!r} {where}, not a finite float32 number"
            fix = (
                "choose the model's feature columns with model.columns"
                if columns is None and not _is_number(value)
                else "fix the value"
            )
            raise DataError(f"example set '{name}': {path} column {column!r} {problem}; {fix}")
    if not wanted:
        raise DataError(f"example set '{name}': {path} has no columns")
    return features


def _is_number(value: object) -> bool:
    """Whether a cell reads as a number (``inf`` and ``nan`` included)."""
    try:
        float(str(value))
    except ValueError:
        return False
    return True


class CsvTable(ExampleSource):
    """The rows of a CSV file with a header, as float32 model inputs ``(n, features)``.

    Args:
        path: the CSV file.
        columns: the model's feature columns, in the model's order (``None``: every column,
            in file order; then every column must be numeric).
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.columns = None if columns is None else tuple(columns)

    def __repr__(self) -> str:
        return f"CsvTable({str(self.path)!r})"

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> TableSet:
        """Read the features, choose a seeded subset of rows and hash them.

        Raises:
            DataError: see :func:`read_feature_table`.
            TooFewExamplesError: fewer rows than ``selection.min_examples``.
        """
        features = read_feature_table(self.path, self.columns, name)
        indices = chosen_indices(name, len(features), selection, f"file {self.path}")
        rows = features[np.asarray(indices, dtype=np.int64)]
        record = selection_record(name, selection)
        record.update(source="csv_table", columns=self.columns, rows=tensor_sha256(rows))
        return TableSet(
            name=name,
            fingerprint=record_digest(record),
            description=f"{self.path} ({features.shape[1]} columns)",
            rows=rows,
        )


@dataclass(eq=False)
class TableSet(ExampleSet):
    """The chosen rows of a :class:`CsvTable`.

    Attributes:
        rows: float32 ``(n, features)``.
    """

    name: str
    fingerprint: str
    description: str
    rows: np.ndarray = field(repr=False)

    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        """The rows ``(n, features)``; ``preprocessing`` (for images) is ignored."""
        import torch

        return torch.from_numpy(self.rows.copy())
