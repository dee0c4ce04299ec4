"""File content digests, remembered between runs.

An example set's fingerprint holds the SHA-256 of every file it may use, so a warm run
still reads every image once just to hash it (1-2 s for W3's 7650 images). With a
:class:`FileDigests` memo (:func:`remembered_digests`), a digest is reused while the
file's size, modification and status-change times and inode are unchanged (any write
changes the status-change time, which cannot be set back), and is recomputed otherwise.
As in git, a file changed in the last ``RACY_SECONDS`` is not remembered: file times are
coarse, so a write in the same tick as the hashing could otherwise go unseen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tcavkit.atomic import atomic_write

_CHUNK = 1 << 20
MEMO_NAME = "file-digests.json"
RACY_SECONDS = 2.0


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FileDigests:
    """Digests by absolute path, valid while the file's stat signature is unchanged.

    Args:
        memo: the JSON file the digests are kept in (read now, written by :meth:`save`).
    """

    def __init__(self, memo: Path) -> None:
        self.memo = memo
        self._known: dict[str, tuple[list[int], str]] = {}
        self._changed = False
        try:
            loaded = json.loads(memo.read_text())
            if isinstance(loaded, dict):
                self._known = {k: (list(v[0]), str(v[1])) for k, v in loaded.items()}
        except (OSError, ValueError, TypeError, IndexError, KeyError):
            self._known = {}  # missing or damaged: start afresh

    def remembered(self, path: Path) -> str | None:
        """The file's digest if the memo holds it for the file as it is now."""
        key = os.path.abspath(path)
        known = self._known.get(key)
        if known is None or known[0] != _signature(os.stat(key)):
            return None
        return known[1]

    def sha256(self, path: Path) -> str:
        """The file's digest (from the memo when its signature matches). Thread-safe."""
        found = self.remembered(path)
        if found is not None:
            return found
        key = os.path.abspath(path)
        stat = os.stat(key)
        digest = file_sha256(Path(key))
        if max(stat.st_mtime_ns, stat.st_ctime_ns) < time.time_ns() - RACY_SECONDS * 1e9:
            self._known[key] = (_signature(stat), digest)
            self._changed = True
        return digest

    def save(self) -> None:
        """Write the memo atomically if anything was added (errors are ignored: the memo
        only saves time)."""
        if not self._changed:
            return
        try:
            self.memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.memo, json.dumps(self._known))
            self._changed = False
        except OSError:
            pass


def _signature(stat: os.stat_result) -> list[int]:
    """What must be unchanged for a remembered digest to hold (any write moves ctime)."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


@contextlib.contextmanager
def remembered_digests(folder: Path | None) -> Iterator[FileDigests | None]:
    """A memo of file digests kept in ``folder`` (the cache folder), saved when the block
    ends; ``None`` without a folder. Pass it to :meth:`ExampleSource.resolve`."""
    if folder is None:
        yield None
        return
    memo = FileDigests(folder / MEMO_NAME)
    try:
        yield memo
    finally:
        memo.save()
