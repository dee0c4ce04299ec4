"""The on-disk activation/gradient cache: content-addressed, checksummed, atomic,
memory-mapped.

A cache entry is a ``.npy`` array whose file name is the SHA-256 of a canonical JSON of
its key parts (model fingerprint, layer, example-set fingerprint, preprocessing, and what
was computed), and a ``.json`` of metadata beside it. Nothing is ever looked up by name
only, so a change of weights, files or preprocessing misses the cache. The metadata holds
the entry's own key (under ``"key"``), and an entry is used only under that key: an entry
moved or copied under another name (both files swapped with another entry's) is damaged.

An entry is valid only when both parts are: the metadata holds the CRC-32 checksum, shape
and dtype of the array (under ``"array"``), and is written first; the array is written
after it. A read checks that the metadata parses, that the array's header matches it, that
the checksum of the array's bytes matches, and that a float array holds only finite
values (the store never keeps a non-finite float array). A damaged entry (flipped bytes,
a rescaled array, lost or unreadable metadata) is reported in one
:class:`~tcavkit.errors.TcavWarning` naming the file, deleted, and read as missing, so
that it is recomputed and rewritten; metadata without its array (a write interrupted
between the two files) is a plain miss. Verifying reads the whole file once: each
:class:`ArrayStore` remembers the entries it verified (or wrote), by the files' identity,
size and modification time, and does not hash them again.

Each file is written to a temporary file in the same folder and renamed into place
(:func:`tcavkit.atomic.atomic_write`); a failed write leaves no temporary file and no
partial entry.

Arrays may be stored at half precision (:func:`to_half`): the entry's metadata then holds
the power-of-two scale, and :meth:`ArrayStore.get_float32` gives back float32 values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tcavkit.atomic import atomic_write
from tcavkit.errors import CacheError, TcavWarning

FORMAT_VERSION = 3

INTEGRITY = "array"
"""The metadata field that ties an entry's metadata to its array: ``{"checksum", "shape",
"dtype"}``."""

KEY = "key"
"""The metadata field that ties an entry to its key: the key it was written under."""

_CHUNK_BYTES = 8 * 2**20  # scanned at a time: the hash and the finiteness test share a pass

_Signature = tuple[int, ...]
"""Identity, size and modification time of an entry's two files."""


def cache_key(**parts: Any) -> str:
    """SHA-256 hex digest of the key parts (JSON-serialisable values)."""
    canonical = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scan(array: np.ndarray) -> tuple[str, bool]:
    """``(checksum, finite)`` of ``array``: the CRC-32 of its bytes in C order (as
    ``"crc32:<8 hex digits>"``), and whether every value is finite (``True`` for arrays
    that are not floats). One pass, in chunks, so that a memory map is read once."""
    flat = array.reshape(-1)
    floating = np.issubdtype(array.dtype, np.inexact)
    step = max(1, _CHUNK_BYTES // max(1, array.itemsize))
    crc = 0
    finite = True
    for start in range(0, flat.size, step):
        chunk = np.ascontiguousarray(flat[start : start + step])
        crc = zlib.crc32(memoryview(chunk).cast("B"), crc)
        if floating and finite:
            finite = bool(np.isfinite(chunk).all())
    return f"crc32:{crc:08x}", finite


class ArrayStore:
    """A folder of content-addressed, checksummed arrays.

    Args:
        root: the cache folder (created on first write). ``None`` disables caching.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self._verified: dict[Path, tuple[_Signature, dict[str, Any]]] = {}

    def path(self, key: str) -> Path:
        """The array file of the entry ``key`` (its metadata is the same path, ``.json``)."""
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, *, writable_copy: bool = False) -> np.ndarray | None:
        """The array stored under ``key`` (memory-mapped), or ``None`` when there is no
        valid entry (a damaged one is reported, deleted and read as missing).

        The map is read-only, or copy-on-write with ``writable_copy`` (the file never
        changes; frameworks that refuse read-only buffers accept it without a copy).

        Raises:
            CacheError: the cache file exists but cannot be read (permissions).
        """
        entry = self._load(key, "c" if writable_copy else "r")
        return None if entry is None else entry[0]

    def get_meta(self, key: str) -> dict[str, Any]:
        """The metadata of the valid entry ``key`` (empty if there is none)."""
        entry = self._load(key, "r")
        return {} if entry is None else entry[1]

    def get_float32(self, key: str) -> np.ndarray | None:
        """The array under ``key`` as float32 (a half-precision entry is scaled back; a
        float32 one is a copy-on-write map), or ``None``."""
        entry = self._load(key, "c")
        if entry is None:
            return None
        array, meta = entry
        if array.dtype != np.float16:
            return array
        return array.astype(np.float32) * np.float32(float(meta.get("scale", 1.0)))

    def put(
        self,
        key: str,
        array: np.ndarray,
        meta: dict[str, Any] | None = None,
        *,
        dtype: str = "float32",
    ) -> None:
        """Store ``array`` under ``key`` atomically, and ``meta`` beside it with the
        array's checksum, shape and dtype, and ``key`` itself. With ``dtype="float16"``
        the array is stored at half precision (:func:`to_half`). A float array with
        non-finite values is not stored (it would be refused when read).

        Raises:
            CacheError: the cache folder cannot be written (nothing of the entry is left).
        """
        if self.root is None:
            return
        meta = dict(meta or {})
        if dtype == "float16":
            array, meta["scale"] = to_half(array)
        contiguous = np.ascontiguousarray(array)
        checksum, finite = scan(contiguous)
        if not finite:
            return
        meta[INTEGRITY] = {
            "checksum": checksum,
            "shape": list(contiguous.shape),
            "dtype": contiguous.dtype.str,
        }
        meta[KEY] = key
        path = self.path(key)
        meta_path = path.with_suffix(".json")
        self._verified.pop(path, None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Metadata first: an array without its metadata is never valid, so a crash
            # between the two writes leaves a miss, not an entry without metadata.
            atomic_write(meta_path, json.dumps(meta, sort_keys=True, default=str))
            atomic_write(path, lambda handle: np.save(handle, contiguous, allow_pickle=False))
        except OSError as exc:
            with contextlib.suppress(OSError):
                meta_path.unlink(missing_ok=True)
            raise CacheError(
                f"cannot write to the cache folder {self.root}: {exc}. "
                "Choose another folder with `cache:` or free some disk space"
            ) from exc
        with contextlib.suppress(OSError):  # written: no need to verify it in this process
            self._verified[path] = (_signature(path.stat(), meta_path.stat()), meta)

    def _load(self, key: str, mmap_mode: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The valid entry ``key`` (array memory-mapped with ``mmap_mode``, metadata), or
        ``None``; verified once per unchanged pair of files."""
        if self.root is None:
            return None
        path = self.path(key)
        meta_path = path.with_suffix(".json")
        try:
            array_stat = path.stat()
        except FileNotFoundError:
            return None
        try:
            meta_stat = meta_path.stat()
        except FileNotFoundError:
            return self._damaged(path, "its metadata file is missing")
        signature = _signature(array_stat, meta_stat)
        try:
            array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except PermissionError as exc:
            raise CacheError(f"cannot read cache file {path}: {exc}") from exc
        except (ValueError, OSError, EOFError):
            return self._damaged(path, "not a readable .npy file")
        known = self._verified.get(path)
        if known is not None and known[0] == signature:
            return array, known[1]
        try:
            meta = json.loads(meta_path.read_text())
            integrity = meta[INTEGRITY]
            checksum = integrity["checksum"]
            shape, dtype = tuple(integrity["shape"]), np.dtype(integrity["dtype"])
        except PermissionError as exc:
            raise CacheError(f"cannot read cache file {meta_path}: {exc}") from exc
        except (OSError, ValueError, TypeError, KeyError):
            return self._damaged(path, "its metadata is unreadable or holds no checksum")
        if meta.get(KEY) != key:
            return self._damaged(path, "it was written under another key (a moved entry)")
        if array.shape != shape or array.dtype != dtype:
            return self._damaged(path, "its shape or type differs from its metadata")
        found, finite = scan(array)
        if found != checksum:
            return self._damaged(path, "checksum mismatch")
        if not finite:
            return self._damaged(path, "non-finite values")
        self._verified[path] = (signature, meta)
        return array, meta

    def _damaged(self, path: Path, reason: str) -> None:
        """Report the damaged entry at ``path`` in one warning and delete it (a miss)."""
        self._verified.pop(path, None)
        warnings.warn(
            f"cache file {path} is damaged ({reason}); it is deleted and recomputed",
            TcavWarning,
            stacklevel=4,
        )
        for part in (path, path.with_suffix(".json")):
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)


def _signature(*stats: os.stat_result) -> _Signature:
    """Identity, size and modification time of an entry's files."""
    return tuple(
        value
        for stat in stats
        for value in (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    )


def to_half(array: np.ndarray) -> tuple[np.ndarray, float]:
    """``array`` as float16 divided by a power of two that puts its largest magnitude near
    2**14 (no overflow; small gradients keep their precision); returns (half, scale)."""
    peak = float(np.abs(array).max(initial=0.0))
    scale = 2.0 ** (np.ceil(np.log2(peak)) - 14) if peak > 0 else 1.0
    return (array / np.float32(scale)).astype(np.float16), scale
