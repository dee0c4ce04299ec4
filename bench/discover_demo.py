"""Time of the concept-discovery demo (``tcavkit demo --discover``) and where it goes.

    python bench/discover_demo.py [--out DIR] [--json FILE]

Runs the demo as the command does (64x64 starter creatures, 30 fire images segmented at 15
and 50 segments, 12 clusters per layer at block2 and block3, 12 random sets), cold (empty
cache), then ``tcavkit discover`` on the same file again, warm (segmentations and patch
activations from the cache), and prints the seconds of each phase of both: the discovery's
own phases (decoding; the patch pass, ``activations``, with its steps: segmenting and
building patches in the background thread, the model's forward passes, and the time the
model waited for a batch; k-means; writing the concept folders) and the experiment that
tests the concepts (its usual phases). The demo's data generation and model training are
reported apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reporting import emit, machine

from tcavkit.demo.run import run_discover_demo
from tcavkit.discover import discover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tcavkit-discover-bench-"))
    started = time.perf_counter()
    demo = run_discover_demo(out, progress=False, echo=lambda _text: None)
    cold_total = time.perf_counter() - started
    cold = demo.discovery
    warm = discover(demo.experiment_file, out=out / "warm", progress=False)
    n_patches = sum(len(c.patches) for c in cold.concepts)
    report = {
        "machine": machine(),
        "demo_total_s": round(cold_total, 2),
        "generate_and_train_s": round(cold_total - cold.seconds, 2),
        "cold_discover_s": round(cold.seconds, 2),
        "warm_discover_s": round(warm.seconds, 2),
        "concepts": len(cold.concepts),
        "patches_kept": n_patches,
        "cold_phases_s": {k: round(v, 2) for k, v in cold.result.meta["timings"].items()},
        "warm_phases_s": {k: round(v, 2) for k, v in warm.result.meta["timings"].items()},
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
