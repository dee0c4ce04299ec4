"""Atomic file writes: readers see the old file or the new one, never a part.

Every file tcavkit writes (cache entries, result tables, the report, the digest memo) goes
through :func:`atomic_write`: the content is written to a temporary file with a unique name
in the same folder, then renamed over the target. Two processes writing the same file at
once cannot collide, and a write that fails leaves no temporary file behind. A process
killed mid-write does leave its temporary file (``.tmp-<name>.<8 characters>.tmp``,
:data:`TEMPORARY_NAME`); :func:`remove_temporaries` removes those of a folder that no other
process is writing into (a results folder, under its lock).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_PREFIX, _SUFFIX = ".tmp-", ".tmp"

TEMPORARY_NAME = re.compile(r"\.tmp-.+\.[a-z0-9_]{8}\.tmp")
"""The names of :func:`atomic_write`'s temporary files (``tempfile.mkstemp``'s 8 random
characters between its prefix and suffix), and only those."""


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes to a binary file
    handle) to ``path`` atomically. The new file gets the permissions of a plain ``open``.

    Raises:
        OSError: the folder cannot be written; the temporary file is removed.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_PREFIX}{path.name}.", suffix=_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(content):
                content(stream)
            else:
                stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left directly in ``folder``
    (a process killed mid-write); nothing else is touched, links included, and nothing
    when ``folder`` is itself a link. Call it only where no other process may be writing
    (under the folder's lock).

    Returns:
        the files removed (none when the folder does not exist).
    """
    removed: list[Path] = []
    if os.path.islink(folder):
        return removed  # never through a link
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
