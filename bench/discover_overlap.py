"""Concept discovery's cold patch pass with and without the background thread, interleaved.

    cd bench && python discover_overlap.py [--workload demo|resnet] [--images N]
        [--segments 15,50] [--repeats 5] [--before DIR] [--out DIR] [--json FILE]

Prepares the workload (``demo``: the discovery demo's creatures and trained starter CNN,
64x64; ``resnet``: ``discover_resnet.py``'s ResNet-18 at 224x224 with ``--images`` and
``--segments``) and runs ``tcavkit discover`` once to fill the experiment's own cache and
write the reference ``concepts.json``. Then, ``--repeats`` times, in rotating order, each
variant runs discovery in a process of its own on a fresh copy of that cache without the
discovery's entries (so every image is segmented and every patch runs; the concepts' test
is warm alike):

- ``serial``: this tree with ``discover.run.OVERLAP = False``: each image segmented and each
  batch built in the main thread, between the model's batches;
- ``overlap``: this tree as it is: both in one background thread while the model runs;
- ``before`` (with ``--before DIR``, a tree exported by
  ``git archive <commit> src | tar -x -C DIR``): the code before the overlap, which
  segmented every image first, then built each batch in the main thread between the
  model's batches.

Prints each run's discovery phases as it ends, then the medians, every run, and one warm run
(everything cached), as JSON. ``patch pass`` is the wall time from decoding to the last
patch activation (``decode`` + ``segment`` + ``activations`` of whichever the code records),
comparable across the variants. Every run must write the reference ``concepts.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from reporting import emit, machine

WALL_PHASES = ("decode", "segment", "activations")
"""The discovery phases before clustering that the new and the old code record (the new
code's ``activations, <step>`` entries are parts of its ``activations``)."""


def prepare(workload: str, out: Path, images: int, segments: str) -> tuple[Path, Path]:
    """The workload's experiment file (its data and model written under ``out``) and its
    cache folder."""
    if workload == "demo":
        from tcavkit.demo.run import run_discover_demo

        path = run_discover_demo(out, progress=False, echo=lambda _t: None).experiment_file
        return path, path.parent / ".tcavkit-cache"
    from discover_resnet import prepare as prepare_resnet  # bench/, on the working directory

    path = prepare_resnet(out, images, segments)
    return path, path.parent / "cache"


def without_discovery(cache: Path, into: Path) -> None:
    """Copy ``cache`` to ``into`` leaving out the discovery's entries (segments, patch
    activations, of this tree and of the code before it)."""
    shutil.copytree(cache, into)
    for meta in into.rglob("*.json"):
        fields = json.loads(meta.read_text())
        old = set(fields) - {"array"} in ({"target"}, {"target", "layer"})
        if old or str(fields.get("kind", "")).startswith("discover-"):
            meta.with_suffix(".npy").unlink()
            meta.unlink()


def run_variant(path: Path, out: Path, variant: str, src: Path) -> dict:
    """One discovery in a fresh process with ``src`` first on the path: its phases and the
    digest of its concepts.json."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path.cwd())])}
    command = [sys.executable, __file__, "--one", str(path), str(out), variant]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_run(path: Path, out: Path, variant: str) -> None:
    """(In the child process.) Run discovery and print its phases as one JSON line."""
    import torch

    from tcavkit.discover import discover
    from tcavkit.discover import run as discover_run

    if variant == "serial":
        discover_run.OVERLAP = False
    found = discover(path, out=out, progress=False)
    timings = found.result.meta["timings"]
    phases = {k.split(": ", 1)[1]: round(v, 3) for k, v in timings.items() if k[:9] == "discover "}
    phases["patch pass"] = round(sum(phases.get(k, 0.0) for k in WALL_PHASES), 3)
    phases["discover total"] = round(found.seconds, 3)
    digest = hashlib.sha256(found.concepts_file.read_bytes()).hexdigest()
    line = {"phases": phases, "concepts": digest, "torch_threads": torch.get_num_threads()}
    print(json.dumps(line), flush=True)


def experiment_on(path: Path, cache: Path, name: str) -> Path:
    """A copy of the experiment file ``path`` (beside it) that uses ``cache``."""
    raw = yaml.safe_load(path.read_text())
    raw["cache"] = str(cache)
    copy = path.with_name(f"{name}.yaml")
    copy.write_text(yaml.safe_dump(raw))
    return copy


def medians(runs: list[dict]) -> dict[str, float]:
    keys = dict.fromkeys(k for r in runs for k in r)
    return {k: round(statistics.median(r[k] for r in runs if k in r), 3) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("demo", "resnet"), default="demo")
    parser.add_argument("--images", type=int, default=10, help="resnet: target images")
    parser.add_argument("--segments", default="15,50", help="resnet: SLIC segment counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None, help="the code before, exported")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(Path(args.one[0]), Path(args.one[1]), args.one[2])
        return
    import tcavkit

    here = Path(tcavkit.__file__).resolve().parents[1]
    sources = {"serial": here, "overlap": here}
    if args.before is not None:
        sources["before"] = (args.before / "src").resolve()
    out = args.out or Path(tempfile.mkdtemp(prefix="tcavkit-discover-overlap-"))
    path, cache = prepare(args.workload, out, args.images, args.segments)
    first = run_variant(path, out / "first", "overlap", here)
    base = out / "base-cache"
    without_discovery(cache, base)
    runs: dict[str, list[dict]] = {variant: [] for variant in sources}
    names = list(sources)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for variant in order:
            run_cache = out / f"cache-{variant}-{repeat}"
            without_discovery(base, run_cache)
            experiment = experiment_on(path, run_cache, f"run-{variant}-{repeat}")
            result = run_variant(experiment, out / f"{variant}-{repeat}", variant, sources[variant])
            shutil.rmtree(run_cache)
            assert result["concepts"] == first["concepts"], f"{variant} wrote other concepts"
            runs[variant].append(result["phases"])
            print(json.dumps({variant: result["phases"]}), flush=True)
    warm = run_variant(path, out / "warm", "overlap", here)
    assert warm["concepts"] == first["concepts"]
    report = {
        "machine": machine(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": first["torch_threads"],
        "workload": args.workload,
        "settings": {"images": args.images, "segments": args.segments}
        if args.workload == "resnet"
        else "the discovery demo's",
        "repeats": args.repeats,
        "first_run_s": first["phases"],
        "median_s": {variant: medians(rs) for variant, rs in runs.items()},
        "runs_s": runs,
        "warm_s": warm["phases"],
        "same_concepts_json": True,
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
