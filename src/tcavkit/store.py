"""The on-disk activation/gradient cache: content-addressed, atomic, memory-mapped.

A cache entry is a ``.npy`` array whose file name is the SHA-256 of a canonical JSON of
its key parts (model fingerprint, layer, example-set fingerprint, preprocessing, and what
was computed). Nothing is ever looked up by name only, so a change of weights, files or
preprocessing misses the cache. Writes go to a temporary file in the same folder and are
renamed into place, so an interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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

    def put(self, key: str, array: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Store ``array`` under ``key`` atomically (temp file + rename); ``meta`` beside it."""
        if self.root is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=path.parent, prefix=".tmp-", suffix=".npy", delete=False
            ) as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                tmp_name = handle.name
            os.replace(tmp_name, path)
            self._write_meta(path, meta)
        except OSError as exc:
            raise self._write_error(exc) from exc

    @staticmethod
    def _write_meta(path: Path, meta: dict[str, Any] | None) -> None:
        if meta is None:
            return
        meta_path = path.with_suffix(".json")
        tmp_meta = meta_path.with_name(f".tmp-{meta_path.name}")
        tmp_meta.write_text(json.dumps(meta, sort_keys=True, default=str))
        os.replace(tmp_meta, meta_path)

    def _write_error(self, exc: OSError) -> CacheError:
        return CacheError(
            f"cannot write to the cache folder {self.root}: {exc}. "
            "Choose another folder with `cache:` or free some disk space"
        )
