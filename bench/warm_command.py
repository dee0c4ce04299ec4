"""A warm ``tcavkit run`` of W1 as a whole command, against the floor.

    python bench/warm_command.py [--repeat N] [--methods mean-difference,hinge]
                                 [--workload W1] [--scale S] [--out FILE] [--keep DIR]

``bench/run.py`` times tcavkit's Python API after the model is loaded. This script times
what a user waits for: ``tcavkit run exp.yaml --quiet --out DIR`` in a fresh process,
with the cache of an earlier run (activations, gradients and CAV coefficients) in place:
interpreter start, imports, reading the file and the model, resolving the sets, reading
the cache, rebuilding the CAVs, statistics, saving the tables, building ``report.html``
and printing the summary. The reference is the floor of ``bench/run.py``
(``impls/floor.py``: one forward pass over every example and one backward pass over the
targets, its timed region, as in every ratio of ``bench/run.py``). The project's target
is a warm whole command of at most 0.3x the floor.

The workload's model (a state_dict) is scripted with ``torch.jit.script`` into a
temporary folder and given to the experiment file as ``model.path``; layers, labels,
input size, data folder, targets, concepts, random sets and runs are those of the
workload's spec, ``examples.max: null`` (every image) and ``batch_size: 64`` as in
``impls/tcavkit_run.py``. One experiment file per CAV method, each with its own cache.

Each method is run once cold (not timed). Then, ``--repeat`` times, interleaved so a
busy spell of a shared machine hits every row alike: the floor (``run.run_impl``), and
per method the warm command, ``tcavkit report DIR`` alone (the report build, imports
included), the same steps as ``tcavkit run`` inside one process with a clock around each
(``--steps``: imports, model and config, engine, save, report, summary), and
``python -c "import tcavkit.cli"`` / ``"import tcavkit.workflow"`` / ``"import torch"``.
Medians are printed and written, with every time, the engine's own phases (``timings`` in
the run's ``results.json``) and a per-package split of the import time
(``python -X importtime``, once), to ``--out`` (default
``bench/results/warm-command-<date>.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

ENV = {**os.environ, "PYTHONHASHSEED": "0"}
TARGET_X_FLOOR = 0.3


# -- one warm run, step by step, in this process (``--steps``) ----------------------------
def steps(experiment: Path, out: Path) -> dict[str, float]:
    """The steps of ``tcavkit run`` (``workflow.run_experiment_file`` and the summary the
    command prints), each timed; imports are timed as the command makes them. A module a
    step imports late (torch, matplotlib on a cache miss) counts in that step."""
    clock = time.perf_counter
    times: dict[str, float] = {}
    began = clock()
    import tcavkit.cli as cli

    times["import tcavkit.cli"] = clock() - began
    began = clock()
    from tcavkit.pipeline.experiment import Experiment

    times["import engine (pandas, scipy.special; torch on a miss)"] = clock() - began
    began = clock()
    from tcavkit.report import build_report
    from tcavkit.report.build import discard_report
    from tcavkit.results import check_output_folder

    times["import report (jinja2; matplotlib to draw)"] = clock() - began
    began = clock()
    experiment_ = Experiment.from_config(experiment, progress=False)
    check_output_folder(out)
    times["config and model file"] = clock() - began
    began = clock()
    result = experiment_.run()
    times["engine (Experiment.run)"] = clock() - began
    began = clock()
    result.save(out)
    times["save tables"] = clock() - began
    began = clock()
    discard_report(out)
    build_report(out, plot_cache=experiment_.store.root)
    times["report (plots, html)"] = clock() - began
    began = clock()
    cli.print_summary(result.summary, echo=lambda _text: None)
    times["summary table"] = clock() - began
    return times


# -- measuring ------------------------------------------------------------------------------
def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, all threads) of one run, and its stdout; it
    must succeed."""
    cpu, start = child_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, check=False)
    wall, cpu = time.perf_counter() - start, child_cpu() - cpu
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}: {tail}")
    return wall, cpu, done.stdout


def import_split(python: str) -> dict[str, float]:
    """Seconds of ``import tcavkit.cli, tcavkit.workflow`` per top-level package (the
    self times of ``python -X importtime``, which add up to the whole)."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import tcavkit.cli, tcavkit.workflow"],
        capture_output=True, text=True, env=ENV, check=True,
    )  # fmt: skip
    split: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _cumulative, name = line[len("import time:") :].split("|")
        split[name.strip().split(".")[0]] += int(own) / 1e6
    return dict(split.most_common())


def profile_report(cli: list[str], results: Path, prof: Path, lines: int = 40) -> str:
    """The top of ``python -m cProfile -s cumtime tcavkit report DIR`` (one run)."""
    import io
    import pstats

    program = [cli[0]] if len(cli) == 1 else ["-m", "tcavkit.cli"]  # the console script
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), *program, "report", str(results)],
        capture_output=True, env=ENV, check=True,
    )  # fmt: skip
    text = io.StringIO()
    pstats.Stats(str(prof), stream=text).sort_stats("cumtime").print_stats(lines)
    return text.getvalue()


def source_state() -> dict:
    """The commit measured and the files of ``src/`` that differ from it (read-only git)."""

    def git(*words: str) -> str:
        done = subprocess.run(
            ["git", *words], capture_output=True, text=True, cwd=BENCH.parent, check=False
        )
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "src").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "src_changes": changed}


def write_experiment(path: Path, spec: dict, data: Path, model: Path, method: str) -> None:
    """The workload as an experiment file (JSON is YAML)."""
    size = spec["image_size"]
    config = {
        "model": {
            "path": str(model),
            "layers": spec["layers"],
            "labels": spec["labels"],
            "input": {"size": [size, size]},
        },
        "data": str(data),
        "targets": spec["targets"],
        "concepts": spec["concepts"],
        "random": {"sets": spec["random"], "runs": spec["runs"]},
        "examples": {"max": None},
        "cav": {"method": method},
        "batch_size": 64,
        "device": "cpu",
        "cache": str(path.parent / f"cache-{method}"),
        "output": str(path.parent / f"out-{method}"),
    }
    path.write_text(json.dumps(config, indent=1))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def against_cold(cold: dict, warm: dict) -> dict:
    """How a warm run's results differ from the cold run's (both ``results.json``): rows of
    the summary whose significance differs, the largest difference of a p-value and of a
    run's TCAV score."""

    def rows(found: dict, table: str, fields: tuple[str, ...]) -> dict:
        return {tuple(r.get(f) for f in fields): r for r in found[table]}

    keys = ("target", "concept", "layer")
    a, b = rows(cold, "summary", keys), rows(warm, "summary", keys)
    flips = sum(a[k]["significant"] != b.get(k, {}).get("significant") for k in a)
    dp = max((abs(a[k]["p_value"] - b[k]["p_value"]) for k in a if k in b), default=0.0)
    score = 0.0
    for x, y in zip(cold["runs"], warm["runs"], strict=False):
        if x.get("tcav_score") is not None and y.get("tcav_score") is not None:
            score = max(score, abs(x["tcav_score"] - y["tcav_score"]))
    return {
        "significance_changes": int(flips),
        "max_abs_p_value_diff": float(dp),
        "max_abs_tcav_score_diff": float(score),
        "identical_summary": a == b,
    }


# -- the table -------------------------------------------------------------------------------
def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        print("  ".join(cells))


def report_table(found: dict) -> None:
    floor = found["floor"]["wall_s"]
    print(
        f"machine: {found['machine']['cpus']} cores, shared with other work while this ran "
        f"(load average {found['machine']['load_before']:.1f} before, "
        f"{found['machine']['load_after']:.1f} after); rows interleaved, "
        f"{found['repeat']} runs each, medians; torch threads "
        f"{found['machine']['torch_threads']}"
    )
    print(
        "steps: the same work as `tcavkit run` in one process (not the command's), a clock "
        "around each step; results.json timings: the command's engine phases"
    )
    rows = [("row", "wall s", "cpu s", "x floor")]
    rows.append(("floor (timed region)", f"{floor:.2f}", "", "1.00"))
    rows.append(
        (
            "floor (whole process)",
            f"{found['floor']['process_s']:.2f}",
            "",
            f"{found['floor']['process_s'] / floor:.2f}",
        )
    )
    for label, row in found["imports"].items():
        rows.append((label, f"{row['wall_s']:.2f}", f"{row['cpu_s']:.2f}",
                     f"{row['wall_s'] / floor:.2f}"))  # fmt: skip
    for method, m in found["methods"].items():
        row = m["command"]
        rows.append((f"tcavkit run, warm ({method})", f"{row['wall_s']:.2f}",
                     f"{row['cpu_s']:.2f}", f"{row['wall_s'] / floor:.2f}"))  # fmt: skip
        total = sum(m["steps"].values())
        rows.append(("  steps in one process, total", f"{total:.2f}", "", f"{total / floor:.2f}"))
        for label, value in m["steps"].items():
            rows.append((f"  step: {label}", f"{value:.2f}", "", f"{value / floor:.2f}"))
            if label.startswith("engine"):
                for phase, value in m["phases"].items():
                    rows.append((f"    results.json timings.{phase}", f"{value:.2f}", "",
                                 f"{value / floor:.2f}"))  # fmt: skip
        row = m["report_command"]
        rows.append((f"tcavkit report DIR alone ({method})", f"{row['wall_s']:.2f}",
                     f"{row['cpu_s']:.2f}", f"{row['wall_s'] / floor:.2f}"))  # fmt: skip
    print_rows(rows)
    for method, m in found["methods"].items():
        ratio = m["command"]["wall_s"] / floor
        verdict = "meets" if ratio <= TARGET_X_FLOOR else "misses"
        print(
            f"{method}: warm whole command {ratio:.2f}x the floor ({verdict} the target "
            f"{TARGET_X_FLOOR}x = {TARGET_X_FLOOR * floor:.2f} s); cold run "
            f"{m['cold_wall_s']:.1f} s; warm runs vs cold: "
            f"{m['vs_cold']['significance_changes']} significance changes, "
            f"max |dp| {m['vs_cold']['max_abs_p_value_diff']:.2g}, max |d score| "
            f"{m['vs_cold']['max_abs_tcav_score_diff']:.2g}"
        )
    split = found["import_split_s"]
    shown = ", ".join(f"{k} {v:.2f}" for k, v in list(split.items())[:8])
    print(f"import time by package (python -X importtime, one run, s): {shown}")


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="W1")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--root", type=Path, default=BENCH / ".data")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument("--methods", default="mean-difference,hinge", help="cav.method values")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for every process (floor too)"
    )
    parser.add_argument("--steps", nargs=2, metavar=("EXPERIMENT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps:  # the in-process step timing, run as a child of the measurement below
        print(json.dumps(steps(Path(args.steps[0]), Path(args.steps[1]))))
        return

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = ENV["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    import workloads
    from run import run_impl
    from startup import tcavkit_command

    code_before = source_state()
    folder = workloads.prepare(args.workload, args.root, args.scale)
    spec = workloads.read_spec(folder)
    methods = [m for m in args.methods.split(",") if m]
    cli = tcavkit_command()
    py = sys.executable
    out = args.out or BENCH / "results" / f"warm-command-{datetime.date.today()}.json"
    work = Path(args.keep or tempfile.mkdtemp(prefix="tcav-warm-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{os.cpu_count()} cores, shared with other work: timings are noisy, rows are "
        "interleaved so load hits every row alike",
        file=sys.stderr,
    )
    try:
        model = work / "model.ts"
        torch.jit.save(torch.jit.script(workloads.load_model(folder)), str(model))
        experiments = {}
        cold: dict[str, float] = {}
        for method in methods:
            path = work / f"exp-{method}.yaml"
            write_experiment(path, spec, folder / "data", model, method)
            shutil.rmtree(work / f"cache-{method}", ignore_errors=True)
            experiments[method] = path
            print(f"cold run ({method}, not timed) ...", file=sys.stderr)
            wall, _, _ = timed(
                [*cli, "run", str(path), "--quiet", "--out", str(work / f"out-{method}")]
            )
            cold[method] = wall
            shutil.copy(work / f"out-{method}" / "results.json", work / f"cold-{method}.json")
        imports = {
            'python -c "import tcavkit.cli"': [py, "-c", "import tcavkit.cli"],
            'python -c "import tcavkit.workflow"': [py, "-c", "import tcavkit.workflow"],
            'python -c "import torch"': [py, "-c", "import torch"],
        }
        for command in imports.values():  # untimed: the file cache
            timed(command)
        floors: list[dict] = []
        walls: dict[str, list[tuple[float, float]]] = {}
        step_runs: dict[str, list[dict]] = {m: [] for m in methods}
        phase_runs: dict[str, list[dict]] = {m: [] for m in methods}
        counts: dict[str, list[dict]] = {m: [] for m in methods}
        compared: dict[str, list[dict]] = {m: [] for m in methods}
        colds = {m: json.loads((work / f"cold-{m}.json").read_text()) for m in methods}
        load_before = os.getloadavg()[0]
        for attempt in range(args.repeat):
            print(f"-- repeat {attempt + 1}/{args.repeat}", file=sys.stderr)
            floor = run_impl("floor.py", folder, work / "floor.json", args=["--device", "cpu"])
            if floor is None:
                raise SystemExit("the floor failed")
            floors.append(floor)
            print(f"  floor {floor['wall_s']:.2f} s", file=sys.stderr)
            for method, path in experiments.items():
                results = work / f"out-{method}"
                run_cmd = [*cli, "run", str(path), "--quiet", "--out", str(results)]
                wall, cpu, _ = timed(run_cmd)
                walls.setdefault(f"command {method}", []).append((wall, cpu))
                found = json.loads((results / "results.json").read_text())
                phase_runs[method].append(found["timings"])
                compared[method].append(against_cold(colds[method], found))
                counts[method].append(found["counts"])
                print(f"  tcavkit run ({method}) {wall:.2f} s", file=sys.stderr)
                wall, cpu, _ = timed([*cli, "report", str(results)])
                walls.setdefault(f"report {method}", []).append((wall, cpu))
                print(f"  tcavkit report ({method}) {wall:.2f} s", file=sys.stderr)
                wall, _, text = timed([py, __file__, "--steps", str(path), str(results)])
                found = json.loads(text.strip().splitlines()[-1])
                # the rest of that process: interpreter start and exit, argument parsing
                found["rest: interpreter start/exit"] = wall - sum(found.values())
                step_runs[method].append(found)
                written = json.loads((results / "results.json").read_text())
                compared[method].append(against_cold(colds[method], written))
            for label, command in imports.items():
                walls.setdefault(label, []).append(timed(command)[:2])
        load_after = os.getloadavg()[0]
        split = import_split(py)
        profile = profile_report(cli, work / f"out-{methods[0]}", work / "report.prof")

        def med(label: str) -> dict:
            found = walls[label]
            return {
                "wall_s": median([w for w, _ in found]),
                "cpu_s": median([c for _, c in found]),
                "wall_s_all": [w for w, _ in found],
            }

        per_method = {}
        for method in methods:
            step_names = list(step_runs[method][0])
            phase_names = list(phase_runs[method][0])
            per_method[method] = {
                "experiment": json.loads(experiments[method].read_text()),
                "cold_wall_s": cold[method],
                "command": med(f"command {method}"),
                "report_command": med(f"report {method}"),
                "steps": {k: median([s[k] for s in step_runs[method]]) for k in step_names},
                "steps_all": step_runs[method],
                "phases": {k: median([p[k] for p in phase_runs[method]]) for k in phase_names},
                "phases_all": phase_runs[method],
                "counts": counts[method],
                "vs_cold_all": compared[method],
                "vs_cold": {
                    k: (all if k == "identical_summary" else max)(c[k] for c in compared[method])
                    for k in compared[method][0]
                },
            }
            warm_counts = counts[method]
            if any(c["forward_batches"] or c["cavs_trained"] for c in warm_counts):
                print(f"warning: a warm {method} run computed something", file=sys.stderr)
        floor_walls = [f["wall_s"] for f in floors]
        floor_row = sorted(floors, key=lambda f: f["wall_s"])[(len(floors) - 1) // 2]
        report = {
            "what": "warm `tcavkit run` as a whole command vs the floor (bench/warm_command.py)",
            "date": str(datetime.date.today()),
            "machine": {
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "shared": True,
                "load_before": load_before,
                "load_after": load_after,
            },
            "code": {"before": code_before, "after": source_state()},
            "workload": spec["name"],
            "folder": str(folder),
            "repeat": args.repeat,
            "target_x_floor": TARGET_X_FLOOR,
            "floor": {
                "wall_s": median(floor_walls),
                "wall_s_all": floor_walls,
                "process_s": median([f["process_s"] for f in floors]),
                "notes": floor_row.get("notes", ""),
            },
            "imports": {label: med(label) for label in imports},
            "import_split_s": split,
            "report_profile": profile,
            "methods": per_method,
            "x_floor": {
                m: per_method[m]["command"]["wall_s"] / median(floor_walls) for m in methods
            },
        }
        if report["code"]["before"] != report["code"]["after"]:
            print("warning: the code changed while this ran (see code in the JSON)")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        report_table(report)
        print(f"written to {out}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
