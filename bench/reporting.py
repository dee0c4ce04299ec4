"""What every benchmark script's JSON report shares: the machine it ran on, and printing
the report (and writing it with ``--json FILE``)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    """The machine in one line: architecture, CPU count, platform."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"


def emit(report: dict, path: Path | None = None) -> None:
    """Print ``report`` as indented JSON, and write it to ``path`` when given."""
    text = json.dumps(report, indent=1)
    print(text)
    if path:
        path.write_text(text + "\n", encoding="utf-8")
