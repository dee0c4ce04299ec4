"""What every benchmarked implementation shares: arguments, timing, memory and the result.

Each implementation is a script run in its own process (``python bench/impls/<name>.py
--workload DIR --out FILE [--device cpu|cuda] [--cache DIR] [--method M]``). It loads the
workload's model, then calls :func:`Measure.start`, does the whole TCAV job (reading the
images included) and calls :func:`Measure.stop`; model loading and imports are not timed.
It writes one JSON object (see :func:`write_result`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))


def parse_args(extra: list[tuple[str, dict]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", type=Path, required=True, help="prepared workload folder")
    parser.add_argument("--out", type=Path, required=True, help="result JSON file")
    parser.add_argument("--device", default="cpu")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args()


def warm_up(device: str) -> None:
    """Start the device's runtime (CUDA context, kernels) before the timed region."""
    import torch

    x = torch.ones(64, 64, device=device)
    (x @ x).sum().item()


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Measure:
    """Wall time of the timed region and memory around it."""

    started: float = 0.0
    wall_s: float = 0.0
    rss_before_mb: float = 0.0
    peak_rss_mb: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.rss_before_mb = rss_mb()
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.wall_s = time.perf_counter() - self.started
        self.peak_rss_mb = peak_rss_mb()


def write_result(
    path: Path,
    *,
    impl: str,
    workload: dict,
    measure: Measure,
    scores: list[dict],
    settings: dict | None = None,
    notes: str = "",
    extra: dict | None = None,
) -> None:
    """Write the result: timings, memory and mean scores.

    Args:
        scores: one dict per (target, concept, layer): ``mean``, ``std`` and ``n`` of the
            TCAV score over the random runs.
    """
    result = {
        "impl": impl,
        "workload": workload["name"],
        "n_per_set": workload["n_per_set"],
        "wall_s": measure.wall_s,
        "phases": measure.phases,
        "rss_before_mb": measure.rss_before_mb,
        "peak_rss_mb": measure.peak_rss_mb,
        "peak_above_before_mb": measure.peak_rss_mb - measure.rss_before_mb,
        "settings": settings or {},
        "notes": notes,
        "scores": scores,
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
