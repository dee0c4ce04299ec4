"""Constants, number formatting and safe file names shared by plots and the HTML report."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

PLOT_KINDS = ("tcav", "heatmap", "cav-accuracy")
"""File-name prefixes of the plots this package writes (used to clean stale files)."""

_SLUG_MAX = 32


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


def format_float(value: Any, digits: int = 3) -> str:
    """A float rounded to ``digits`` decimals; ``–`` when missing."""
    v = to_float(value)
    if math.isnan(v):
        return "–"
    return f"{v:.{digits}f}"


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
    get :func:`direction_of` of their ``direction``, ``mean`` and ``null_mean`` values.
    """
    sig = significant_mask(table)
    out = np.full(len(table), "none", dtype="<U8")
    if not sig.any():
        return out

    def column(name: str) -> list[Any]:
        return list(table[name]) if name in table.columns else [None] * len(table)

    given, mean, null = column("direction"), column("mean"), column("null_mean")
    for i in np.flatnonzero(sig):
        out[i] = direction_of(given[i], mean[i], null[i])
    return out


def float_column(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float array ``(n_rows,)``; all NaN when absent."""
    if name not in table.columns:
        return np.full(len(table), np.nan)
    return np.array([to_float(v) for v in table[name]], dtype=float)


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
