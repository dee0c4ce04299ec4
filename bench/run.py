"""Benchmark tcavkit against the floor (the model's own passes) and against its peers.

    python bench/run.py [--workloads W1,W2,W3] [--scale S] [--peers captum,tcav]
                        [--device cpu|cuda] [--repeat N] [--out bench/results.json]

Every implementation runs in its own process (so memory is its own) on the same prepared
workload: the same model weights, images, layers, concepts, random sets and runs (see
``workloads.py``). Times are wall-clock seconds of the whole TCAV job after the model is
loaded; ratios are to the floor measured in the same invocation.

Rows:

- ``floor``: one forward pass over every unique example capturing all layers, one backward
  pass over the targets (``impls/floor.py``).
- ``tcavkit md cold`` / ``warm``: ``cav.method: mean-difference`` with an empty cache, then
  the same experiment again (activations, gradients and CAVs from the cache).
- ``tcavkit sgd cold`` / ``warm``: the same with ``cav.method: sgd`` (hinge-loss SVM).
- ``tcavkit md f16``: mean-difference with ``cache_dtype: float16`` (W1 only): disk use and
  whether any significance changes.
- ``captum``, ``tcav``: the peers, from their own virtual environments (``bench/README.md``).

W3 also runs two smaller variants of the same shape to measure the cost of one more
concept and of one more random run (``W3-c6-r20``, ``W3-c100-r20``, ``W3`` = c100 r50).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import workloads  # noqa: E402

PEER_PYTHON = {
    "captum": BENCH / ".venv-captum" / "bin" / "python",
    "tcav": BENCH / ".venv-tf" / "bin" / "python",
}


def run_impl(
    script: str,
    workload: Path,
    out: Path,
    *,
    python: str = sys.executable,
    args: list[str] = (),
    timeout: float | None = None,
) -> dict | None:
    """Run one implementation in its own process; its result, or ``None`` if it failed."""
    command = [python, str(BENCH / "impls" / script), "--workload", str(workload)]
    command += ["--out", str(out), *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"    {script}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        print(f"    {script} failed ({done.returncode}): " + " | ".join(tail), file=sys.stderr)
        return None
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - started
    return result


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def bench_workload(
    name: str,
    root: Path,
    scale: float,
    device: str,
    peers: list[str],
    work: Path,
    timeout: float,
    repeat: int = 1,
) -> dict:
    """All rows of one workload; with ``repeat`` > 1 every row but the peers' runs that
    many times, interleaved (so load on the machine hits every row alike), and the run
    with the median time is kept (all times in ``wall_s_all``)."""
    folder = workloads.prepare(name, root, scale)
    print(f"== {name} ({folder})", file=sys.stderr)
    runs: dict[str, list[dict]] = {}
    for attempt in range(repeat):
        if repeat > 1:
            print(f"  -- repeat {attempt + 1}/{repeat}", file=sys.stderr)
        _bench_rows(name, folder, device, peers if attempt == 0 else [], work, timeout, runs)
    rows = {}
    for label, found in runs.items():
        ordered = sorted(found, key=lambda r: r["wall_s"])
        rows[label] = {
            **ordered[(len(ordered) - 1) // 2],
            "wall_s_all": [r["wall_s"] for r in found],
        }
    return {"folder": str(folder), "rows": rows, "repeat": repeat}


def _bench_rows(
    name: str,
    folder: Path,
    device: str,
    peers: list[str],
    work: Path,
    timeout: float,
    runs: dict[str, list[dict]],
) -> None:
    """One run of every row of a workload, appended to ``runs``."""
    rows: dict[str, dict] = {}

    def row(label: str, script: str, **kwargs) -> None:
        print(f"  {label} ...", file=sys.stderr)
        result = run_impl(script, folder, work / f"{name}-{label.replace(' ', '_')}.json", **kwargs)
        if result is not None:
            rows[label] = result
            runs.setdefault(label, []).append(result)
            print(f"    {result['wall_s']:.2f} s", file=sys.stderr)

    dev = ["--device", device]
    row("floor", "floor.py", args=dev)
    variants = [("md", "mean-difference"), ("sgd", "sgd")]
    if name.startswith("W3"):
        variants = variants[:1]
    for short, method in variants:
        cache = work / f"cache-{name}-{short}"
        shutil.rmtree(cache, ignore_errors=True)
        args = [*dev, "--method", method, "--cache", str(cache)]
        row(f"tcavkit {short} cold", "tcavkit_run.py", args=args)
        row(f"tcavkit {short} warm", "tcavkit_run.py", args=args)
        if f"tcavkit {short} cold" in rows:
            rows[f"tcavkit {short} cold"]["cache_mb"] = disk_mb(cache)
        shutil.rmtree(cache, ignore_errors=True)
    if name == "W1":
        cache = work / "cache-W1-f16"
        shutil.rmtree(cache, ignore_errors=True)
        args = [*dev, "--method", "mean-difference", "--cache", str(cache)]
        row("tcavkit md f16", "tcavkit_run.py", args=[*args, "--cache-dtype", "float16"])
        if "tcavkit md f16" in rows:
            rows["tcavkit md f16"]["cache_mb"] = disk_mb(cache)
        shutil.rmtree(cache, ignore_errors=True)
        for peer in peers:
            python = PEER_PYTHON[peer]
            if not python.exists():
                print(f"  {peer}: no {python}; see bench/README.md", file=sys.stderr)
                continue
            # tcav's default differentiates the log-softmax; the paper's TCAV (and tcavkit's,
            # and captum's) differentiates the logit, with the same SGD alpha as the others.
            extra = ["--loss", "logit", "--alpha", "0.01"] if peer == "tcav" else []
            row(peer, f"{peer}_run.py", python=str(python), args=[*dev, *extra], timeout=timeout)


def ratio_table(results: dict) -> list[dict]:
    table = []
    for name, found in results.items():
        rows = found["rows"]
        floor = rows.get("floor", {}).get("wall_s")
        for label, r in rows.items():
            table.append(
                {
                    "workload": name,
                    "implementation": label,
                    "n_per_set": r["n_per_set"],
                    "wall_s": round(r["wall_s"], 2),
                    "x_floor": round(r["wall_s"] / floor, 2) if floor else None,
                    "peak_rss_above_model_mb": round(r["peak_above_before_mb"]),
                    "cache_mb": round(r["cache_mb"]) if "cache_mb" in r else None,
                }
            )
    return table


def scaling(results: dict) -> dict | None:
    """Cost of one more concept and one more random run (W3 variants), as a share of W1's
    floor, for the whole run and for tcavkit's time beyond the floor."""
    needed = ["W3-c6-r20", "W3-c100-r20", "W3", "W1"]
    if not all(n in results for n in needed):
        return None

    def wall(n: str, label: str) -> float:
        return results[n]["rows"][label]["wall_s"]

    try:
        extra = {n: wall(n, "tcavkit md cold") - wall(n, "floor") for n in needed}
        total = {n: wall(n, "tcavkit md cold") for n in needed}
        w1_floor = wall("W1", "floor")
    except KeyError:
        return None
    per_concept_total = (total["W3-c100-r20"] - total["W3-c6-r20"]) / 94
    per_concept_extra = (extra["W3-c100-r20"] - extra["W3-c6-r20"]) / 94
    per_run = (total["W3"] - total["W3-c100-r20"]) / 30  # same sets, same forward passes

    def after_model(n: str) -> float:
        """tcavkit's time outside its model passes (the passes are the same work in W3
        and W3-c100-r20, so their run-to-run noise is left out of the per-run cost)."""
        phases = results[n]["rows"]["tcavkit md cold"]["phases"]
        return phases["total"] - phases["activations"] - phases["gradients"]

    per_run_after_model = (after_model("W3") - after_model("W3-c100-r20")) / 30
    return {
        "per_extra_concept_s": per_concept_total,
        "per_extra_concept_beyond_floor_s": per_concept_extra,
        "per_extra_run_s": per_run,
        "per_extra_run_outside_model_passes_s": per_run_after_model,
        "per_extra_concept_pct_of_W1_floor": 100 * per_concept_total / w1_floor,
        "per_extra_concept_beyond_floor_pct_of_W1_floor": 100 * per_concept_extra / w1_floor,
        "per_extra_run_pct_of_W1_floor": 100 * per_run / w1_floor,
        "per_extra_run_outside_model_passes_pct_of_W1_floor": 100 * per_run_after_model / w1_floor,
        "W3_peak_over_W1_peak": results["W3"]["rows"]["tcavkit md cold"]["peak_above_before_mb"]
        / results["W1"]["rows"]["tcavkit md cold"]["peak_above_before_mb"],
    }


def agreement(results: dict) -> list[dict]:
    """Mean TCAV score per (target, concept, layer) on W1 for tcavkit (sgd) and each peer."""
    rows = results.get("W1", {}).get("rows", {})
    ours = rows.get("tcavkit sgd cold")
    if ours is None:
        return []
    table = {}
    for label, r in rows.items():
        if label not in ("tcavkit sgd cold", "captum", "tcav"):
            continue
        for s in r["scores"]:
            key = (s["target"], s["concept"], s["layer"])
            table.setdefault(key, {})[label] = (s["mean"], s["std"])
    out = []
    for (target, concept, layer), found in sorted(table.items()):
        entry = {"target": target, "concept": concept, "layer": layer}
        for label, (mean, std) in found.items():
            entry[label] = f"{mean:.2f} ± {std:.2f}"
        out.append(entry)
    return out


def significance_changes(results: dict) -> int | None:
    rows = results.get("W1", {}).get("rows", {})
    if "tcavkit md f16" not in rows or "tcavkit md cold" not in rows:
        return None
    a = {
        (s["target"], s["concept"], s["layer"]): s["significant"]
        for s in rows["tcavkit md cold"]["summary"]
    }
    b = {
        (s["target"], s["concept"], s["layer"]): s["significant"]
        for s in rows["tcavkit md f16"]["summary"]
    }
    return sum(a[k] != b.get(k) for k in a)


def print_table(table: list[dict]) -> None:
    if not table:
        return
    columns = list(table[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in table:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the images per set (50)"
    )
    parser.add_argument("--peers", default="", help="comma-separated: captum,tcav")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--root",
        type=Path,
        default=BENCH / ".data",
        help="where workloads are generated (reused between runs)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.json")
    parser.add_argument("--peer-timeout", type=float, default=3600)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per row (peers: one); the median is kept"
    )
    args = parser.parse_args()
    names = [n for n in args.workloads.split(",") if n]
    if "W3" in names:
        names = [n for n in names if n != "W3"] + ["W3-c6-r20", "W3-c100-r20", "W3"]
    peers = [p for p in args.peers.split(",") if p]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="tcavbench-") as tmp:
        for name in names:
            results[name] = bench_workload(
                name,
                args.root,
                args.scale,
                args.device,
                peers,
                Path(tmp),
                args.peer_timeout,
                args.repeat,
            )
            report = make_report(results, args)  # written after each workload
            args.out.write_text(json.dumps(report, indent=1))
    print_table(report["table"])
    if report["scaling"]:
        print(json.dumps(report["scaling"], indent=1))
    if report["float16_significance_changes"] is not None:
        print(f"float16 cache: {report['float16_significance_changes']} significance changes")
    print_table(report["agreement"])
    print(f"written to {args.out}")


def make_report(results: dict, args: argparse.Namespace) -> dict:
    import torch

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "scale": args.scale,
        "table": ratio_table(results),
        "scaling": scaling(results),
        "float16_significance_changes": significance_changes(results),
        "agreement": agreement(results),
        "results": results,
    }


if __name__ == "__main__":
    main()
