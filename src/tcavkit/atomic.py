"""Atomic file writes: readers see the old file or the new one, never a part.

Every file tcavkit writes (cache entries, result tables, the report, the digest memo) goes
through :func:`atomic_write`: the content is written to a temporary file with a unique name
in the same folder, then renamed over the target. Two processes writing the same file at
once cannot collide, and a write that fails leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=".tmp")
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
