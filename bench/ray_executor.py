"""Local run against ``executor: ray`` with 2 workers, on the demo's planted experiment.

    python bench/ray_executor.py [--size 64] [--per-set 30] [--out DIR] [--json FILE]

Writes the demo's data (starter creatures: 3 targets, 6 concepts, 20 random sets, 20 runs)
and trains its CNN, then runs the experiment cold (empty cache) three ways: locally, on a
Ray instance started on this machine (``ray.init(num_cpus=2)``; the start is timed apart)
with 2 model workers, and locally again on the Ray run's cache. Prints the seconds of each
run and phase, the counts, and whether the Ray run's runs.csv and summary.csv are the
local run's bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from reporting import emit, machine

from tcavkit.demo.run import write_experiment_file
from tcavkit.demo.starters import train_starter_cnn
from tcavkit.demo.synthetic import DEFAULT_CONCEPTS, make_dataset
from tcavkit.workflow import run_experiment_file


def timed_run(experiment: Path, name: str, cache: str, executor: str) -> dict:
    out = experiment.parent / name
    began = time.perf_counter()
    outcome = run_experiment_file(
        experiment,
        out=out,
        overrides=[
            f"cache={experiment.parent / cache}",
            f"executor={executor}",
            "ray.workers=2",
        ],
        progress=False,
    )
    seconds = time.perf_counter() - began
    meta = outcome.result.meta
    return {
        "total_s": round(seconds, 2),
        "phases_s": {k: round(v, 2) for k, v in meta["timings"].items()},
        "counts": meta["counts"],
        "tables": {n: (out / n).read_bytes() for n in ("runs.csv", "summary.csv")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (demo: 64)")
    parser.add_argument("--per-set", type=int, default=30, help="images per set (demo: 30)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tcavkit-ray-bench-"))
    size = (args.size, args.size)
    make_dataset(out / "data", size=size, n_per_set=args.per_set, concepts=DEFAULT_CONCEPTS)
    trained = train_starter_cnn(size=size, n_per_class=60, epochs=4, seed=0)
    (out / "models").mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(trained.model), str(out / "models/starters.pt"))
    experiment = write_experiment_file(out / "experiment.yaml", size=args.size, runs=20)

    local = timed_run(experiment, "local", "cache-local", "local")
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - began
    on_ray = timed_run(experiment, "ray", "cache-ray", "ray")
    again = timed_run(experiment, "ray-again", "cache-ray", "ray")
    ray.shutdown()
    after = timed_run(experiment, "local-after-ray", "cache-ray", "local")
    report = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "images": f"{args.size}x{args.size}, {args.per_set} per set",
        "ray_init_s": round(ray_start, 2),
        "same_tables": on_ray["tables"] == local["tables"] == after["tables"],
    }
    for name, run in (
        ("local", local),
        ("ray_2_workers", on_ray),
        ("ray_2_workers_warm", again),
        ("local_on_ray_cache", after),
    ):
        run.pop("tables")
        report[name] = run
    emit(report, args.json)


if __name__ == "__main__":
    main()
