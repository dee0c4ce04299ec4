"""Constants, number formatting and safe file names shared by plots and the HTML report."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PLOT_KINDS = ("statistic", "tcav", "heatmap", "cav-accuracy")
"""File-name prefixes of the plots this package writes (used to clean stale files)."""

_SLUG_MAX = 32
_MAX_DECIMALS = 5
"""More decimals than this are written in scientific notation (:meth:`ShownStatistic.number`)."""


def is_missing(value: Any) -> bool:
    """True for ``None``, NaN and pandas NA."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def to_float(value: Any) -> float:
    """``value`` as a float, NaN when missing or not numeric."""
    if is_missing(value) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_p(p: Any) -> str:
    """A p value with 2 significant digits, scientific when small: ``0.034``, ``1e-06``."""
    value = to_float(p)
    if math.isnan(value):
        return "–"
    return f"{value:.2g}"


def format_number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits: ``21.7``, ``0.930``, ``0.00412``.

    The one number format of the report and the console (p values: :func:`format_p`). An
    exact zero is ``0`` (no digits it does not have), a value that rounds to zero is never
    shown as ``0.000`` nor as ``-0.0``: below 0.001 (and from a million on) it is written
    ``4.1e-05``. Missing is ``–``.
    """
    v = to_float(value)
    if math.isnan(v):
        return "–"
    if v == 0 or math.isinf(v):
        return "0" if v == 0 else str(v)
    magnitude = _magnitude(v)
    if magnitude < -3 or magnitude >= 6:
        return f"{v:.{max(digits - 1, 0)}e}"
    decimals = max(0, digits - 1 - magnitude)
    if decimals and _magnitude(round(v, decimals)) > magnitude:  # 9.996 rounds up to 10.0
        decimals -= 1
    return f"{round(v, decimals) + 0.0:.{decimals}f}"


def _magnitude(value: float) -> int:
    """The power of ten of a finite, non-zero ``value``: -3 for 0.0042."""
    return math.floor(math.log10(abs(value)))


def as_bool(value: Any) -> bool:
    """Read a CSV/JSON truth value (bool, 0/1, "True"/"false"/"yes"); missing is False."""
    if is_missing(value):
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value != 0
    return str(value).strip().lower() in {"true", "1", "yes", "y", "t"}


def significant_mask(table: pd.DataFrame) -> np.ndarray:
    """Boolean array ``(n_rows,)`` from the ``significant`` column (all False if absent)."""
    if "significant" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return np.array([as_bool(v) for v in table["significant"]], dtype=bool)


DIRECTIONS = ("positive", "negative", "none")
"""Values of the summary's ``direction`` column (``none``: not significant)."""

DIRECTION_MARKS = {"positive": "+", "negative": "\u2212", "none": ""}
"""The mark shown for each direction (``−`` is U+2212, the minus sign)."""


def direction_of(direction: Any, mean: Any, null_mean: Any) -> str:
    """The direction of one *significant* row: ``"positive"`` or ``"negative"``.

    ``direction`` (the summary's ``direction`` value: the sign of the tested statistic)
    decides when it reads ``positive`` or ``negative``. When it is missing (results saved
    before that column existed) or unreadable, the sign of ``mean - null_mean`` decides:
    positive when ``mean >= null_mean`` or either is missing.
    """
    if not is_missing(direction):
        text = str(direction).strip().lower()
        if text in ("positive", "negative"):
            return text
    mean_f, null_f = to_float(mean), to_float(null_mean)
    return "negative" if mean_f < null_f else "positive"  # False when either is NaN


def directions(table: pd.DataFrame) -> np.ndarray:
    """Per-row direction ``(n_rows,)`` of str: ``positive``, ``negative`` or ``none``.

    ``none`` for rows that are not significant (:func:`significant_mask`); significant rows
    get :func:`direction_of` of their ``direction`` value. Without one (results saved before
    that column existed) the tested statistic decides: ``statistic_mean`` against
    ``statistic_null_mean`` where both are there and finite, else ``mean`` against
    ``null_mean`` (the TCAV score, the tested statistic of the oldest results).
    """
    sig = significant_mask(table)
    out = np.full(len(table), "none", dtype="<U8")
    if not sig.any():
        return out

    def column(name: str) -> list[Any]:
        return list(table[name]) if name in table.columns else [None] * len(table)

    given, mean, null = column("direction"), column("mean"), column("null_mean")
    stat, stat_null = column("statistic_mean"), column("statistic_null_mean")
    for i in np.flatnonzero(sig):
        if math.isfinite(to_float(stat[i])) and math.isfinite(to_float(stat_null[i])):
            out[i] = direction_of(given[i], stat[i], stat_null[i])
        else:
            out[i] = direction_of(given[i], mean[i], null[i])
    return out


def float_column(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float array ``(n_rows,)``; all NaN when absent."""
    if name not in table.columns:
        return np.full(len(table), np.nan)
    return np.array([to_float(v) for v in table[name]], dtype=float)


@dataclass(frozen=True)
class ShownStatistic:
    """The tested statistic of one summary row, as the report shows it.

    ``name`` is the statistic (``effect``, ``tcav_score``, ``magnitude``); ``mean`` its
    value, ``null_mean``/``null_std`` those of random concepts, ``low``/``high`` its interval
    at the level the correction tests the row at (NaN when the results hold none), and
    ``decimals`` the number of decimals that shows the row's numbers (see
    :func:`statistic_of`).
    """

    name: str
    mean: float
    null_mean: float
    null_std: float
    low: float
    high: float
    decimals: int

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def number(self, value: float) -> str:
        """``value`` with the row's decimals, so that the row's numbers line up; ``–`` when
        missing, never ``-0.0``. An exact zero is ``0``; on a scale below 10^-5 (more than
        5 decimals) every number is written with two significant digits (``4.1e-07``)."""
        if not math.isfinite(value):
            return "–"
        if value == 0:
            return "0"
        if self.decimals > _MAX_DECIMALS:  # the same last digit, in scientific notation
            return format_number(value, max(1, self.decimals + 1 + _magnitude(value)))
        return f"{round(value, self.decimals) + 0.0:.{self.decimals}f}"

    def interval(self, sep: str = ", ") -> str:
        """``low, high`` (empty when there is no interval)."""
        return f"{self.number(self.low)}{sep}{self.number(self.high)}" if self.has_interval else ""

    def with_interval(self) -> str:
        """``15.5 [12.8, 18.2]``: the value and its interval (the value alone without one)."""
        text = self.number(self.mean)
        return f"{text} [{self.interval()}]" if self.has_interval else text

    def null(self) -> str:
        """``0.0 ± 0.7``: random concepts' mean ± sd (the mean alone without an sd). An sd
        that the row's decimals would round to zero keeps two significant digits
        (``0.0 ± 0.0031``): a spread is never shown as ``0.0`` unless it is zero."""
        text = self.number(self.null_mean)
        if not math.isfinite(self.null_std):
            return text
        sd = self.null_std
        rounds_away = sd != 0 and round(sd, self.decimals) == 0
        return f"{text} ± {format_number(sd, 2) if rounds_away else self.number(sd)}"


def statistic_of(row: Mapping[str, Any], decimals: int | None = None) -> ShownStatistic:
    """The :class:`ShownStatistic` of one summary row (a dict or a pandas row).

    ``decimals`` (as from :func:`table_decimals`, so that a table's column is shown alike)
    defaults to two significant digits of the row's size (:func:`_row_size`; 2 decimals for
    the TCAV score); one more is taken as long as rounding would put a bound of the
    interval that excludes the null on the null, so a shown interval never seems to touch
    it.

    Results that lack the ``statistic_*`` columns (written before they existed) tested the
    TCAV score against ``null_mean``: the score is then the tested statistic, shown without
    an interval (the score's ``ci_low``/``ci_high`` are at 95%, not at the level the row was
    tested at, and may cover the null on a significant row).
    """
    if "statistic_mean" in row:
        name = row.get("statistic")
        name = "effect" if is_missing(name) or not str(name).strip() else str(name).strip()
        mean, null_mean = (
            to_float(row.get("statistic_mean")),
            to_float(row.get("statistic_null_mean")),
        )
        null_std = to_float(row.get("statistic_null_std"))
        low, high = to_float(row.get("statistic_low")), to_float(row.get("statistic_high"))
    else:
        name = "tcav_score"
        mean, null_mean = to_float(row.get("mean")), to_float(row.get("null_mean"))
        null_std, low, high = to_float(row.get("null_std")), math.nan, math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        low = high = math.nan
    size = _row_size(mean, low, high, null_std)
    if decimals is None or (size > 0 and round(size, decimals) == 0):
        # a row whose every number the table's decimals would round to zero gets its own
        decimals = 2 if name == "tcav_score" else _significant_decimals([size], max)
    return ShownStatistic(name, mean, null_mean, null_std, low, high,
                  _apart(decimals, low, high, null_mean))  # fmt: skip


def statistics_of(table: pd.DataFrame) -> list[ShownStatistic]:
    """:func:`statistic_of` of every row of ``table``, in order, with :func:`table_decimals`."""
    records = table.to_dict(orient="records")
    decimals = table_decimals(table)
    return [statistic_of(row, decimals) for row in records]


def table_decimals(table: pd.DataFrame) -> int | None:
    """Decimals that show the tested statistic of ``table`` alike in every row: two
    significant digits of a typical row's size (the median over rows of :func:`_row_size`);
    2 for the TCAV score; ``None`` for an empty table."""
    if table.empty:
        return None
    if "statistic_mean" not in table.columns:
        return 2
    names = {str(v) for v in table["statistic"]} if "statistic" in table.columns else set()
    if names == {"tcav_score"}:
        return 2
    columns = ("statistic_mean", "statistic_low", "statistic_high", "statistic_null_std")
    values = [float_column(table, c) for c in columns]
    sizes = [_row_size(*row) for row in zip(*values, strict=True)]
    return _significant_decimals(sizes, np.median)


def _row_size(mean: float, low: float, high: float, null_std: float) -> float:
    """The largest of ``|mean|``, ``|low|``, ``|high|`` and ``null_std`` (NaN when none)."""
    sizes = [abs(v) for v in (mean, low, high, null_std) if math.isfinite(v)]
    return max(sizes) if sizes else math.nan


def _significant_decimals(values: list[float], pick) -> int:
    """Decimals for two significant digits of ``pick(values)`` (2 when all are 0 or NaN)."""
    sizes = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not sizes:
        return 2
    return int(min(12, max(0, 1 - math.floor(math.log10(float(pick(sizes)))))))


def _apart(digits: int, low: float, high: float, null: float) -> int:
    if not math.isfinite(null):
        return digits
    # rounding is monotone: a bound that excludes the null is kept apart from it once shown
    while digits < 12 and (
        (low > null and round(low, digits) <= round(null, digits))
        or (high < null and round(high, digits) >= round(null, digits))
    ):
        digits += 1
    return digits


def as_list(value: Any) -> list[Any]:
    """``None`` → ``[]``, a list/tuple as is, anything else as a one-item list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if is_missing(value) else [value]


def sets_of(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``meta["sets"]`` as name → info dict, whether saved as a dict or a list of records."""
    sets = meta.get("sets")
    if isinstance(sets, list):
        sets = {str(s.get("name", i)): s for i, s in enumerate(sets) if isinstance(s, dict)}
    if not isinstance(sets, dict):
        return {}
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in sets.items()}


def skipped_of(info: dict[str, Any]) -> tuple[int, list[str]]:
    """How many files a set skipped, and their names (a list, a single name or a count)."""
    skipped = info.get("skipped")
    if is_missing(skipped) or skipped is False:
        return 0, []
    if isinstance(skipped, str):
        return 1, [skipped]
    if isinstance(skipped, (int, float)):
        n = to_float(skipped)
        return (0 if math.isnan(n) else int(n)), []
    try:
        files = [str(f) for f in skipped]
    except TypeError:
        return 0, []
    return len(files), files


def ordered_unique(values: Iterable[Any]) -> list[str]:
    """Distinct values as strings, in order of first appearance."""
    return list(dict.fromkeys(str(v) for v in values))


def slug(text: Any, max_len: int = _SLUG_MAX) -> str:
    """Lower-case ASCII ``[a-z0-9-]`` form of ``text`` (``x`` if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-").lower()
    return s[:max_len].strip("-") or "x"


def plot_filename(kind: str, *parts: str | None) -> str:
    """Safe, unique PNG name: ``<kind>-<slug part>...-<8 hex of sha1(kind, parts)>.png``.

    The slugs keep names readable; the hash of the exact strings keeps names that slug
    alike (``a/b`` and ``a b``, ``Fire`` and ``fire``) apart.
    """
    digest = hashlib.sha1(json.dumps([kind, *parts]).encode()).hexdigest()[:8]
    slugs = [slug(p) if p is not None else "all" for p in parts]
    return "-".join([kind, *slugs, digest]) + ".png"


STALE_PLOT_RE = re.compile(r"^(?:{})-[a-z0-9-]*-[0-9a-f]{{8}}\.png$".format("|".join(PLOT_KINDS)))
"""Matches the names :func:`plot_filename` produces."""
