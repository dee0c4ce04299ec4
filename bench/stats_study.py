"""Calibration, replication and power of tcavkit's concept test on the starter CNN.

Every experiment is simulated by index selection into the activation pools of
``stats_pools.py`` (no forward pass), so hundreds of them take minutes.

    python bench/stats_study.py calibration [--method hinge] [--families 100] [--design current]
    python bench/stats_study.py relative    [--method hinge] [--families 100]
    python bench/stats_study.py replication [--method hinge] [--images 20] [--samples 12]
    python bench/stats_study.py power       [--method hinge] [--samples 20]

``--model-seed S`` runs any study on the starter CNN trained from seed ``S`` (its own pools).

- ``calibration``: families of 240 truly null rows (60 concepts made of random images x 2
  targets x 2 layers) against 20 random sets; the family-wise error after Holm, and the
  per-test rates at p <= alpha and p <= alpha / 240, with 95% Clopper-Pearson intervals.
- ``relative``: families of 30 null relative pairs (pairs of random-image concepts).
- ``replication``: independent samples of the concept, random and target images for a fixed
  model; cells (target, concept, layer) significant in both directions across samples, the
  planted colour's power per (target, layer), textures significant.
- ``power``: the planted colour's power per (target, layer) at 10, 20 and 50 images per
  set, at full strength and with 25% and 50% of every concept's images replaced by random
  ones (images in no random set), and the rate at which textures come out significant.

``--design``: ``current`` (tcavkit.stats.summarize: the concept-level t-test on the effect),
``own`` (the same with the concept's own run variance added to the null variance) or
``studentized`` (each set's mean divided by its own spread over runs, then compared with the
pseudo-concepts'); see stats_sim.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import stats_pools
import stats_sim
from scipy import stats as st

from tcavkit.options import CavOptions
from tcavkit.stats import adjust_pvalues

TARGETS = ("fire", "water", "grass")
CONCEPTS = ("red", "green", "blue", "yellow", "black", "white", "striped", "dotted", "zigzag")
PLANTED = {"fire": "red", "water": "blue", "grass": "green"}
TEXTURES = ("striped", "dotted", "zigzag")


def interval(k: int, n: int) -> str:
    """``k/n`` with its 95% Clopper-Pearson interval."""
    low = st.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    high = st.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{k}/{n} = {k / n:.4f} [{low:.4f}, {high:.4f}]"


def tested(layer: stats_sim.Layer, name: str, args, seed: int, relative=()) -> pd.DataFrame:
    """p-values (column ``p``) and the tested statistic of one simulated layer."""
    # Mean-difference directions come from all the examples whatever test_fraction is;
    # the split only measures the held-out accuracy, which no test reads: skip it here.
    whole = CavOptions(method=args.method).method == "mean-difference"
    options = CavOptions(method=args.method, test_fraction=0.0 if whole else 0.33)
    rows = stats_sim.current_rows(layer, args.runs, options, seed, name, relative=relative)
    if args.design in ("current", "concept-t"):
        linear = options.method == "mean-difference" and args.design == "current"
        out = stats_sim.current_test(
            rows,
            test="auto" if args.design == "current" else "concept-t",
            projections=stats_sim.projections(layer, name) if linear else None,
            seed=seed,
        )
        return out.rename(columns={"p_value": "p", "statistic_mean": "stat"}).assign(
            null=out["statistic_null_mean"]
        )
    test = stats_sim.own_variance_test if args.design == "own" else stats_sim.studentized_test
    return test(rows).rename(columns={"mean": "stat", "null_mean": "null"})


def calibration(args, pools) -> None:
    n = args.images
    families = errors = 0
    pooled: list[np.ndarray] = []
    for f in range(args.families):
        rng = np.random.default_rng(1000 + f)
        order = rng.permutation(len(pools["act/random/block2"]))
        concepts = [order[i * n : (i + 1) * n] for i in range(60)]
        random = [order[(60 + i) * n : (61 + i) * n] for i in range(20)]
        targets = {t: rng.choice(400, n, replace=False) for t in ("fire", "water")}
        p = []
        for name in stats_pools.LAYERS:
            acts = pools[f"act/random/{name}"]
            layer = stats_sim.Layer(
                {f"c{i}": acts[c] for i, c in enumerate(concepts)},
                [acts[r] for r in random],
                {t: pools[f"grad/{t}/{t}/{name}"][idx] for t, idx in targets.items()},
            )
            p.append(tested(layer, name, args, f)["p"].to_numpy())
        family = np.concatenate(p)
        pooled.append(family)
        families += 1
        errors += stats_sim.holm_rejects(family) > 0
    allp = np.concatenate(pooled)
    m = len(pooled[0])
    print(f"calibration, {args.design}, {args.method}: {families} families of {m} null rows")
    print(f"  family-wise error after Holm: {interval(errors, families)}")
    print(f"  per test, p <= 0.05:        {interval(int((allp <= 0.05).sum()), allp.size)}")
    print(f"  per test, p <= 0.05/{m}:    {interval(int((allp <= 0.05 / m).sum()), allp.size)}")


def relative(args, pools) -> None:
    n = args.images
    errors = 0
    pooled = []
    for f in range(args.families):
        rng = np.random.default_rng(3000 + f)
        order = rng.permutation(len(pools["act/random/block2"]))
        concepts = [order[i * n : (i + 1) * n] for i in range(30)]
        random = [order[(60 + i) * n : (61 + i) * n] for i in range(20)]
        target = rng.choice(400, n, replace=False)
        pairs = tuple((f"c{2 * i}", f"c{2 * i + 1}") for i in range(15))
        p = []
        for name in stats_pools.LAYERS:
            acts = pools[f"act/random/{name}"]
            layer = stats_sim.Layer(
                {f"c{i}": acts[c] for i, c in enumerate(concepts)},
                [acts[r] for r in random],
                {"fire": pools[f"grad/fire/fire/{name}"][target]},
            )
            p.append(tested(layer, name, args, f, relative=pairs)["p"].to_numpy())
        family = np.concatenate(p)
        pooled.append(family)
        errors += stats_sim.holm_rejects(family) > 0
    allp = np.concatenate(pooled)
    m = len(pooled[0])
    print(f"relative pairs, {args.design}, {args.method}: {args.families} families of {m}")
    print(f"  family-wise error after Holm: {interval(errors, args.families)}")
    print(f"  per test, p <= 0.05:        {interval(int((allp <= 0.05).sum()), allp.size)}")
    print(f"  per test, p <= 0.05/{m}:     {interval(int((allp <= 0.05 / m).sum()), allp.size)}")


def samples_table(args, pools, n: int, dilution: float = 0.0) -> pd.DataFrame:
    """Verdicts over ``args.samples`` independent image samples of the starter setting.

    Each sample draws the concept, random and target images afresh for the same model;
    ``dilution`` replaces that fraction of every concept's images by random images (not in
    any random set). Returns one row per (sample, target, concept, layer) with ``direction``:
    +1 significant positive, -1 significant negative, 0 not significant (Holm over the
    sample's 54 rows).
    """
    frames = []
    k = round(dilution * n)
    for sample in range(args.samples):
        rng = np.random.default_rng(500 + sample)
        order = rng.permutation(len(pools["act/random/block2"]))
        random = [order[i * n : (i + 1) * n] for i in range(20)]
        spare = order[20 * n :]
        chosen = {c: rng.choice(400, n - k, replace=False) for c in CONCEPTS}
        fillers = {c: spare[i * k : (i + 1) * k] for i, c in enumerate(CONCEPTS)}
        targets = {t: rng.choice(400, n, replace=False) for t in TARGETS}
        parts = []
        for name in stats_pools.LAYERS:
            rand = pools[f"act/random/{name}"]
            layer = stats_sim.Layer(
                {
                    c: np.concatenate([pools[f"act/{c}/{name}"][idx], rand[fillers[c]]])
                    for c, idx in chosen.items()
                },
                [rand[r] for r in random],
                {t: pools[f"grad/{t}/{t}/{name}"][idx] for t, idx in targets.items()},
            )
            parts.append(tested(layer, name, args, sample).assign(layer=name))
        table = pd.concat(parts, ignore_index=True)
        significant = adjust_pvalues(table["p"].to_numpy(), "holm") <= 0.05
        table["direction"] = np.sign(table["stat"] - table["null"]) * significant
        frames.append(table.assign(sample=sample))
    return pd.concat(frames)


def replication(args, pools) -> None:
    n = args.images
    runs = samples_table(args, pools, n)
    cells = runs.groupby(["target", "concept", "layer"])["direction"]
    both = int(((cells.max() > 0) & (cells.min() < 0)).sum())
    print(f"replication, {args.design}, {args.method}, {n} images per set, {args.samples} samples")
    print(f"  cells significant in both directions: {both} of {cells.ngroups}")
    for (target, name), d in runs.groupby(["target", "layer"]):
        planted = d[d.concept == PLANTED[target]]["direction"]
        k = int((planted > 0).sum())
        print(f"  {PLANTED[target]} for {target} at {name}: {interval(k, len(planted))}")
    textures = runs[runs.concept.isin(TEXTURES)]["direction"]
    print(f"  textures significant: {interval(int((textures != 0).sum()), len(textures))}")


def power(args, pools) -> None:
    """Power for the planted colour at 10, 20 and 50 images per set, full strength and
    diluted (25% and 50% of the concept images replaced by random ones)."""
    print(f"power, {args.design}, {args.method}, {args.samples} samples per cell")
    print(
        "| images | dilution | "
        + " | ".join(f"{PLANTED[t]}/{t} {name}" for t in TARGETS for name in stats_pools.LAYERS)
        + " | textures significant |"
    )
    for n in (10, 20, 50):
        for dilution in (0.0, 0.25, 0.5):
            runs = samples_table(args, pools, n, dilution)
            cells = []
            for t in TARGETS:
                for name in stats_pools.LAYERS:
                    d = runs[(runs.target == t) & (runs.layer == name)]
                    k = int((d[d.concept == PLANTED[t]]["direction"] > 0).sum())
                    cells.append(f"{k}/{args.samples}")
            textures = runs[runs.concept.isin(TEXTURES)]["direction"]
            tex = interval(int((textures != 0).sum()), len(textures))
            print(f"| {n} | {dilution:.0%} | " + " | ".join(cells) + f" | {tex} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("study", choices=("calibration", "relative", "replication", "power"))
    parser.add_argument("--method", default="hinge")
    parser.add_argument(
        "--design", default="current", choices=("current", "concept-t", "own", "studentized")
    )
    parser.add_argument("--families", type=int, default=100)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--model-seed", type=int, default=0, help="the starter CNN's seed (its own pools)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    pools = stats_pools.load(seed=args.model_seed)
    {
        "calibration": calibration,
        "relative": relative,
        "replication": replication,
        "power": power,
    }[args.study](args, pools)
    print(f"  took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
