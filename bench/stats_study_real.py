"""Calibration of tcavkit's concept test on a real pretrained ImageNet network.

The calibration study of ``stats_study.py`` (families of 240 truly null rows: 60 concepts
made of random images x 2 targets x 2 layers, against 20 random sets; the family-wise error
after Holm and the per-test rates at p <= alpha and p <= alpha / 240, with 95%
Clopper-Pearson intervals), on the pools of ``stats_pools_real.py``: EfficientNet-Lite0
with its ImageNet weights, random crops of the photos scikit-image and scikit-learn ship,
targets tabby cat (281) and coffee mug (504), layers block10 and block15 (mean-pooled).

    python bench/stats_study_real.py [--method mean-difference] [--families 100]
                                      [--design current] [--images 20] [--runs 20]

Every family draws its 60 concept sets and 20 random sets without replacement from the
random pool (80 x 20 = 1600 images of 2600), and 20 target images per class from that
class's pool, with the seeds ``stats_study.calibration`` uses (1000 + family). Each test is
run as ``stats_study.tested`` runs it (mean-difference: ``CavOptions(method=
"mean-difference", test_fraction=0.0)`` and ``tcavkit.stats.summarize`` with the
projections table, i.e. the resampled null).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import stats_pools_real
import stats_sim
import torch
from stats_study import interval, tested


def calibration(args, pools) -> None:
    n = args.images
    layers = list(stats_pools_real.LAYERS)
    targets = list(stats_pools_real.TARGETS)
    size = len(pools[f"act/random/{layers[0]}"])
    if 80 * n > size:
        raise SystemExit(f"a family needs {80 * n} random images, the pool has {size}")
    errors = low = tiny = tests = 0
    frames: list[pd.DataFrame] = []
    started = time.perf_counter()
    for f in range(args.first, args.first + args.families):
        rng = np.random.default_rng(1000 + f)
        order = rng.permutation(size)
        concepts = [order[i * n : (i + 1) * n] for i in range(60)]
        random = [order[(60 + i) * n : (61 + i) * n] for i in range(20)]
        chosen = {
            t: rng.choice(len(pools[f"grad/{t}/{t}/{layers[0]}"]), n, replace=False)
            for t in targets
        }
        parts = []
        for name in layers:
            acts = pools[f"act/random/{name}"].astype(np.float64)
            layer = stats_sim.Layer(
                {f"c{i}": acts[c] for i, c in enumerate(concepts)},
                [acts[r] for r in random],
                {
                    t: pools[f"grad/{t}/{t}/{name}"][idx].astype(np.float64)
                    for t, idx in chosen.items()
                },
            )
            out = tested(layer, name, args, f)
            parts.append(out[["target", "concept", "p"]].assign(layer=name))
        family = pd.concat(parts, ignore_index=True).assign(family=f)
        frames.append(family)
        p = family["p"].to_numpy()
        errors += stats_sim.holm_rejects(p) > 0
        low += int((p <= 0.05).sum())
        tiny += int((p <= 0.05 / len(p)).sum())
        tests += len(p)
        done = f - args.first + 1
        if done % args.every == 0 or done == args.families:
            print(
                f"  {done} families: {errors} with a Holm rejection; p <= 0.05 {low}/{tests}, "
                f"p <= 0.05/{len(p)} {tiny}/{tests} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    table = pd.concat(frames, ignore_index=True)
    allp = table["p"].to_numpy()
    m = len(frames[0])
    families = args.families
    print(
        f"calibration (real, EfficientNet-Lite0), {args.design}, {args.method}: "
        f"{families} families of {m} null rows"
    )
    print(f"  family-wise error after Holm: {interval(errors, families)}")
    print(f"  per test, p <= 0.05:        {interval(int((allp <= 0.05).sum()), allp.size)}")
    print(f"  per test, p <= 0.05/{m}:    {interval(int((allp <= 0.05 / m).sum()), allp.size)}")
    for (t, name), g in table.groupby(["target", "layer"]):
        p = g["p"].to_numpy()
        print(
            f"    {t} at {name}: p <= 0.05 {interval(int((p <= 0.05).sum()), p.size)}; "
            f"p <= 0.05/{m} {int((p <= 0.05 / m).sum())}; min p {p.min():.2e}"
        )
    if args.save:
        table.to_csv(args.save, index=False)
        print(f"  p-values: {args.save}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="mean-difference")
    parser.add_argument(
        "--design", default="current", choices=("current", "concept-t", "own", "studentized")
    )
    parser.add_argument("--families", type=int, default=100)
    parser.add_argument("--first", type=int, default=0, help="the first family's index")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--random", type=int, default=2600, help="the pools' random images")
    parser.add_argument("--per-target", type=int, default=200, help="the pools' target images")
    parser.add_argument("--every", type=int, default=10, help="progress every N families")
    parser.add_argument("--save", default="", help="write every p-value to this CSV")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (hinge)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pools = stats_pools_real.load(args.random, args.per_target)
    calibration(args, pools)
    print(f"  took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
