"""The ``tcavkit`` console script: Ctrl-C is one line and exit 130 from its first line on.

Importing the command line (typer, click, rich) takes a few tenths of a second; a Ctrl-C in
that time used to end in a traceback from inside ``import typer``. Until a command's body
starts, nothing needs cleaning up, so a Ctrl-C there prints ``interrupted`` and exits at
once; inside a command (:func:`tcavkit.cli.interruptible`) it unwinds as a
``KeyboardInterrupt``, so that ``finally`` blocks run, and is reported in one line too.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED_EXIT = 130
"""The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def exit_interrupted(signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
    """SIGINT outside a command's body: say so in one line and exit 130 at once."""
    try:
        os.write(2, b"interrupted\n")
    finally:
        os._exit(INTERRUPTED_EXIT)


def main() -> None:
    """Run the ``tcavkit`` command line (``sys.argv``)."""
    signal.signal(signal.SIGINT, exit_interrupted)
    from tcavkit.cli import app  # typer, click, rich: the slow part of starting

    sys.exit(app())
