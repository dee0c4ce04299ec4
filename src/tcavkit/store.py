"""The on-disk activation/gradient cache: content-addressed, atomic, memory-mapped.

A cache entry is a ``.npy`` array whose file name is the SHA-256 of a canonical JSON of
its key parts (model fingerprint, layer, example-set fingerprint, preprocessing, and what
was computed). Nothing is ever looked up by name only, so a change of weights, files or
preprocessing misses the cache. Writes go to a temporary file in the same folder and are
renamed into place (:func:`tcavkit.atomic.atomic_write`), so an interrupted run never
leaves a half-written entry.

Arrays may be stored at half precision (:func:`to_half`): the entry's metadata then holds
the power-of-two scale, and :meth:`ArrayStore.get_float32` gives back float32 values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tcavkit.atomic import atomic_write
from tcavkit.errors import CacheError

FORMAT_VERSION = 1


def cache_key(**parts: Any) -> str:
    """SHA-256 hex digest of the key parts (JSON-serialisable values)."""
    canonical = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ArrayStore:
    """A folder of content-addressed arrays.

    Args:
        root: the cache folder (created on first write). ``None`` disables caching.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, *, writable_copy: bool = False) -> np.ndarray | None:
        """The array stored under ``key`` (memory-mapped), or ``None``.

        The map is read-only, or copy-on-write with ``writable_copy`` (the file never
        changes; frameworks that refuse read-only buffers accept it without a copy).
        """
        if self.root is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, mmap_mode="c" if writable_copy else "r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            # A damaged entry is a miss: drop it so that it is recomputed and rewritten.
            path.unlink(missing_ok=True)
            if isinstance(exc, PermissionError):
                raise CacheError(f"cannot read cache file {path}: {exc}") from exc
            return None

    def get_meta(self, key: str) -> dict[str, Any]:
        """The metadata stored beside ``key`` (empty if none or unreadable)."""
        if self.root is None:
            return {}
        try:
            return json.loads(self._path(key).with_suffix(".json").read_text())
        except (OSError, ValueError):
            return {}

    def get_float32(self, key: str) -> np.ndarray | None:
        """The array under ``key`` as float32 (a half-precision entry is scaled back; a
        float32 one is a copy-on-write map), or ``None``."""
        array = self.get(key, writable_copy=True)
        if array is None or array.dtype != np.float16:
            return array
        scale = float(self.get_meta(key).get("scale", 1.0))
        return array.astype(np.float32) * np.float32(scale)

    def put(
        self,
        key: str,
        array: np.ndarray,
        meta: dict[str, Any] | None = None,
        *,
        dtype: str = "float32",
    ) -> None:
        """Store ``array`` under ``key`` atomically, and ``meta`` beside it. With
        ``dtype="float16"`` the array is stored at half precision (:func:`to_half`)."""
        if self.root is None:
            return
        if dtype == "float16":
            array, scale = to_half(array)
            meta = {**(meta or {}), "scale": scale}
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            contiguous = np.ascontiguousarray(array)
            atomic_write(path, lambda handle: np.save(handle, contiguous, allow_pickle=False))
            if meta is not None:
                text = json.dumps(meta, sort_keys=True, default=str)
                atomic_write(path.with_suffix(".json"), text)
        except OSError as exc:
            raise CacheError(
                f"cannot write to the cache folder {self.root}: {exc}. "
                "Choose another folder with `cache:` or free some disk space"
            ) from exc


def to_half(array: np.ndarray) -> tuple[np.ndarray, float]:
    """``array`` as float16 divided by a power of two that puts its largest magnitude near
    2**14 (no overflow; small gradients keep their precision); returns (half, scale)."""
    peak = float(np.abs(array).max(initial=0.0))
    scale = 2.0 ** (np.ceil(np.log2(peak)) - 14) if peak > 0 else 1.0
    return (array / np.float32(scale)).astype(np.float16), scale
