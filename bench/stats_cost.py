"""What the measured null costs: the whole cold W1 run of tcavkit at two source trees,
interleaved in one invocation (the default learner, an empty cache each time).

    python bench/stats_cost.py --baseline /path/to/old/checkout [--repeat 3] [--workload W1]

``--baseline`` is a checkout of the tree to compare with (e.g. a ``git worktree`` of the
commit before the change); the other side is this checkout. Each run is that tree's own
``bench/impls/tcavkit_run.py`` (which imports its tree's ``src``) in its own process; the
phases come from the run's own timings. Prints the median wall time of each tree, their
ratio, and the median of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import workloads  # noqa: E402


def cold_run(tree: Path, workload: Path, scratch: Path) -> dict:
    """One cold run of the tcavkit of checkout ``tree``: its result JSON."""
    cache = Path(tempfile.mkdtemp(dir=scratch))
    out = scratch / f"{cache.name}.json"
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, str(tree / "bench" / "impls" / "tcavkit_run.py")]
    command += ["--workload", str(workload), "--out", str(out), "--cache", str(cache)]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workload", default="W1")
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "current": BENCH.parent.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        workload = workloads.prepare(args.workload, BENCH / ".data" / "workloads")
        times: dict[str, list[float]] = {name: [] for name in trees}
        phases: dict[str, list[dict]] = {name: [] for name in trees}
        for rep in range(args.repeat):
            for name, tree in trees.items():
                result = cold_run(tree, workload, scratch)
                times[name].append(result["wall_s"])
                phases[name].append(result.get("phases", {}))
                print(f"rep {rep} {name}: {result['wall_s']:.2f} s", flush=True)
    for name in trees:
        median = statistics.median(times[name])
        keys = sorted({k for p in phases[name] for k in p})
        parts = ", ".join(
            f"{k} {statistics.median(p.get(k, 0.0) for p in phases[name]):.2f}" for k in keys
        )
        print(f"{name}: median {median:.2f} s ({parts})")
    ratio = statistics.median(times["current"]) / statistics.median(times["baseline"])
    print(f"current / baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
