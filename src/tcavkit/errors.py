"""Errors that speak to the user.

Every error a user can cause raises a :class:`TcavError` subclass whose message names the
file, concept, layer or key at fault and says what to do. The CLI prints the message on one
line and exits non-zero.
"""

from __future__ import annotations


class TcavError(Exception):
    """Base class of every user-facing tcavkit error."""


class ConfigError(TcavError):
    """The experiment configuration is invalid (unknown key, bad value, missing field)."""


class DataError(TcavError):
    """Data cannot be used or written: an example set (missing folder, unreadable files),
    or a results folder (a file in the way, a full disk, files of different runs)."""


class TooFewExamplesError(DataError):
    """An example set has fewer usable examples than ``min_examples``."""


class LayerError(TcavError):
    """A layer name does not exist in the model, or its output cannot be used."""


class ModelError(TcavError):
    """The model cannot be loaded or its outputs cannot be interpreted."""


class CacheError(TcavError):
    """The activation cache is unreadable or cannot be written."""


class ClusterError(TcavError):
    """A Ray cluster lost a worker, a node or a result during a run (``executor: ray``)."""


class TcavWarning(UserWarning):
    """Warnings about the data or the experiment (skipped files, few random runs)."""


class TcavInternalWarning(UserWarning):
    """Never expected; tests turn it into an error."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut after ``limit`` characters (its type's name
    when it has no message): for wrapping a library's error into a :class:`TcavError`."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text[:limit] + (" …" if len(text) > limit else "")
