"""Simulated TCAV experiments on the activation pools (bench/stats_pools.py).

An experiment is index selections into the pools: concept sets, random sets, target sets.
Two designs are compared:

- ``current``: each concept's CAV against each random set on all its images, tested with
  ``tcavkit.stats.summarize`` (pseudo-concepts as the null);
- ``split``: each run splits the concept images, the random set's images and the target
  images into two disjoint halves and trains one CAV per half; each half's effect is its
  magnitude on its own target half times its separation measured on the *other* half's
  images (cross-fitted). The run's statistic is the mean of its two halves; the
  difference of the halves measures the sampling variance of the images, and the spread
  over runs that of the random sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from tcavkit.cav.batch import CavTask, train_cav_batch
from tcavkit.options import CavOptions
from tcavkit.stats import summarize


@dataclass
class Layer:
    """One layer's data of one simulated experiment."""

    concepts: dict[str, np.ndarray]  # name -> (n, d)
    random: list[np.ndarray]  # each (n_r, d)
    grads: dict[str, np.ndarray]  # target -> (n_t, d)


def _train(tasks, arrays, options):
    if options.method == "mean-difference":
        return _mean_differences(tasks, arrays)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()
    }
    sizes = {k: len(v) for k, v in tensors.items()}
    batch = train_cav_batch(tasks, tensors.__getitem__, sizes, options)
    return batch.directions.numpy().astype(np.float64), batch.separations, batch.accuracies


def _mean_differences(tasks, arrays):
    """Mean-difference CAVs in closed form (what ``train_cav_batch`` computes for them:
    the unit difference of the two sets' means over all their examples, and its length as
    the separation; ``tests/test_learners.py`` checks the library against this), without
    the held-out accuracy, which no test reads (NaN). Hundreds of studies' families then
    take minutes instead of an hour."""
    means = {k: np.asarray(v, dtype=np.float64).mean(axis=0) for k, v in arrays.items()}
    diffs = np.stack([means[t.positive] - means[t.negative] for t in tasks])
    norms = np.linalg.norm(diffs, axis=1)
    return diffs / norms[:, None], norms, np.full(len(tasks), np.nan)


def split_rows(layer: Layer, runs: int, options: CavOptions, seed: int, null: bool = True):
    """Per (target, concept): run statistics of the split design.

    Returns a DataFrame with columns target, concept, is_null, run, effect_a, effect_b,
    score_a, score_b.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    tasks: list[CavTask] = []
    meta = []  # (concept, is_null, run, half, other_pos, other_neg, target rows per target)
    subjects = [(name, x, False, list(range(runs))) for name, x in layer.concepts.items()]
    if null:
        for j, x in enumerate(layer.random):
            others = [k for k in range(len(layer.random)) if k != j][:runs]
            subjects.append((f"random#{j}", x, True, others))
    for name, x, is_null, negatives in subjects:
        for run, q in enumerate(negatives):
            neg = layer.random[q]
            p = rng.permutation(len(x))
            n_ = rng.permutation(len(neg))
            halves_pos = (p[: len(p) // 2], p[len(p) // 2 :])
            halves_neg = (n_[: len(n_) // 2], n_[len(n_) // 2 :])
            target_halves = {}
            for t, g in layer.grads.items():
                perm = rng.permutation(len(g))
                target_halves[t] = (perm[: len(g) // 2], perm[len(g) // 2 :])
            for h in (0, 1):
                pos_name, neg_name = f"{name}|{run}|{h}|p", f"{name}|{run}|{h}|n"
                arrays[pos_name] = x[halves_pos[h]]
                arrays[neg_name] = neg[halves_neg[h]]
                tasks.append(CavTask(pos_name, neg_name, int(rng.integers(2**31))))
                meta.append(
                    (
                        name,
                        is_null,
                        run,
                        h,
                        x[halves_pos[1 - h]],
                        neg[halves_neg[1 - h]],
                        {t: rows[h] for t, rows in target_halves.items()},
                    )
                )
    directions, _, _ = _train(tasks, arrays, options)
    records = []
    for i, (name, is_null, run, h, other_pos, other_neg, target_rows) in enumerate(meta):
        v = directions[i]
        separation = float((other_pos @ v).mean() - (other_neg @ v).mean())
        for t, g in layer.grads.items():
            derivs = g[target_rows[t]] @ v
            records.append(
                (
                    t,
                    name,
                    is_null,
                    run,
                    h,
                    float(derivs.mean()) * separation,
                    float((derivs > 0).mean()),
                )
            )
    frame = pd.DataFrame(
        records, columns=["target", "concept", "is_null", "run", "half", "effect", "score"]
    )
    wide = frame.pivot_table(
        index=["target", "concept", "is_null", "run"], columns="half", values=["effect", "score"]
    )
    wide.columns = [f"{a}_{'ab'[b]}" for a, b in wide.columns]
    return wide.reset_index()


def split_test(wide: pd.DataFrame) -> pd.DataFrame:
    """The split design's test per (target, concept): t = mean / SE, Satterthwaite df."""
    rows = []
    for (t, c, is_null), g in wide.groupby(["target", "concept", "is_null"], sort=False):
        e = ((g.effect_a + g.effect_b) / 2).to_numpy()
        d = (g.effect_a - g.effect_b).to_numpy()
        r = len(e)
        a = float(np.mean(d**2)) / 4  # variance of the images' sample (concept, random, target)
        b = float(np.var(e, ddof=1)) / r  # variance over random sets, per mean
        se2 = a + b
        df = se2**2 / (a**2 / r + b**2 / (r - 1)) if se2 > 0 else r - 1
        mean = float(e.mean())
        tstat = mean / np.sqrt(se2) if se2 > 0 else 0.0
        p = float(2 * st.t.sf(abs(tstat), df))
        score = float(((g.score_a + g.score_b) / 2).mean())
        rows.append((t, c, is_null, mean, np.sqrt(se2), df, tstat, p, score))
    return pd.DataFrame(
        rows, columns=["target", "concept", "is_null", "effect", "se", "df", "t", "p", "score"]
    )


def current_rows(
    layer: Layer,
    runs: int,
    options: CavOptions,
    seed: int,
    layer_name: str,
    relative: tuple[tuple[str, str], ...] = (),
):
    """Runs table of the current design (full sets), for tcavkit.stats.summarize; the
    concepts of ``relative`` pairs are scored as pairs only."""
    rng = np.random.default_rng(seed)
    arrays = {f"r{j}": x for j, x in enumerate(layer.random)}
    arrays.update(layer.concepts)
    tasks, rows = [], []  # rows: (concept, random, run, is_null, sign, task index)
    paired = {name for pair in relative for name in pair}
    for name in layer.concepts:
        if name in paired:
            continue
        for run in range(runs):
            rows.append((name, f"r{run}", run, False, 1.0, len(tasks)))
            tasks.append(CavTask(name, f"r{run}", int(rng.integers(2**31))))
    for a, b in relative:
        for run in range(runs):
            rows.append((f"{a} vs {b}", b, run, False, 1.0, len(tasks)))
            tasks.append(CavTask(a, b, int(rng.integers(2**31))))
    n = len(layer.random)
    pair_index: dict[tuple[int, int], int] = {}
    for j in range(n):
        others = [k for k in range(n) if k != j][:runs]
        for run, k in enumerate(others):
            a, b = min(j, k), max(j, k)
            if (a, b) not in pair_index:
                pair_index[(a, b)] = len(tasks)
                tasks.append(CavTask(f"r{a}", f"r{b}", int(rng.integers(2**31))))
            rows.append((f"r{j}", f"r{k}", run, True, 1.0 if j < k else -1.0, pair_index[(a, b)]))
    directions, separations, accuracies = _train(tasks, arrays, options)
    records = []
    for concept, random, run, is_null, sign, i in rows:
        v = sign * directions[i]
        for t, g in layer.grads.items():
            derivs = g @ v
            mag = float(derivs.mean())
            records.append(
                dict(
                    target=t,
                    concept=concept,
                    layer=layer_name,
                    random=random,
                    run=run,
                    tcav_score=float((derivs > 0).mean()),
                    magnitude=mag,
                    cav_accuracy=float(accuracies[i]),
                    is_null=is_null,
                    kind="null" if is_null else ("relative" if " vs " in concept else "concept"),
                    separation=float(separations[i]),
                    effect=mag * float(separations[i]),
                )
            )
    return pd.DataFrame(records)


def projections(layer: Layer, layer_name: str) -> pd.DataFrame:
    """The projections table of a simulated layer (as the pipeline computes it): every
    concept and random example projected on each target's mean gradient."""
    sets = {**layer.concepts, **{f"r{j}": x for j, x in enumerate(layer.random)}}
    frames = []
    for t, g in layer.grads.items():
        mean_grad = np.asarray(g, dtype=np.float64).mean(axis=0)
        for name, x in sets.items():
            values = np.asarray(x, dtype=np.float64) @ mean_grad
            frames.append(
                pd.DataFrame({"target": t, "layer": layer_name, "set": name, "projection": values})
            )
    return pd.concat(frames, ignore_index=True)


def current_test(
    runs_table: pd.DataFrame,
    correction: str = "none",
    statistic: str = "effect",
    test="auto",
    projections: pd.DataFrame | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """tcavkit's summary of a simulated runs table (``projections`` given: the measured
    null of mean-difference CAVs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return summarize(
            runs_table,
            correction=correction,
            statistic=statistic,
            test=test,
            projections=projections,
            seed=seed,
        )


def holm_rejects(p: np.ndarray, alpha: float = 0.05) -> int:
    order = np.sort(p)
    m = len(order)
    for i, value in enumerate(order):
        if value > alpha / (m - i):
            return i
    return m


def boot_rows(layer: Layer, runs: int, options: CavOptions, seed: int, resample: bool = True):
    """Runs of the resampled design: in each run the positive set's images and the target
    images are a bootstrap resample (index selection); pseudo-concepts (each random set
    against the others) are processed the same way. Columns: target, concept, is_null,
    run, effect, score, magnitude, separation."""
    rng = np.random.default_rng(seed)
    arrays = {f"r{j}": x for j, x in enumerate(layer.random)}
    tasks, rows = [], []
    subjects = [(name, x, False, list(range(runs))) for name, x in layer.concepts.items()]
    for j, x in enumerate(layer.random):
        subjects.append((f"r{j}", x, True, [k for k in range(len(layer.random)) if k != j][:runs]))
    for name, x, is_null, negatives in subjects:
        for run, q in enumerate(negatives):
            pick = rng.integers(len(x), size=len(x)) if resample else np.arange(len(x))
            pos = f"{name}|b{run}"
            arrays[pos] = x[pick]
            targets = {
                t: (rng.integers(len(g), size=len(g)) if resample else np.arange(len(g)))
                for t, g in layer.grads.items()
            }
            rows.append((name, is_null, run, len(tasks), targets))
            tasks.append(CavTask(pos, f"r{q}", int(rng.integers(2**31))))
    directions, separations, _ = _train(tasks, arrays, options)
    records = []
    for name, is_null, run, i, targets in rows:
        v = directions[i]
        for t, g in layer.grads.items():
            derivs = g[targets[t]] @ v
            mag = float(derivs.mean())
            records.append(
                (
                    t,
                    name,
                    is_null,
                    run,
                    mag * separations[i],
                    float((derivs > 0).mean()),
                    mag,
                    separations[i],
                )
            )
    return pd.DataFrame(
        records,
        columns=[
            "target",
            "concept",
            "is_null",
            "run",
            "effect",
            "score",
            "magnitude",
            "separation",
        ],
    )


def boot_test(rows: pd.DataFrame, statistic: str = "effect", excess: bool = True) -> pd.DataFrame:
    """Per (target, concept): the concept's mean statistic against the pseudo-concepts',
    with the concept's own excess run variance added to the null variance."""
    out = []
    for t, g in rows.groupby("target", sort=False):
        per = g.groupby(["concept", "is_null"], sort=False)[statistic].agg(["mean", "var", "count"])
        per = per.reset_index()
        null = per[per.is_null]
        m = len(null)
        null_mean, null_var = null["mean"].mean(), null["mean"].var(ddof=1)
        run_var_null = null["var"].mean()
        for row in per[~per.is_null].itertuples():
            extra = max(0.0, row.var - run_var_null) if excess else 0.0
            scale = np.sqrt(null_var * (1 + 1 / m) + extra)
            tstat = (row.mean - null_mean) / scale if scale > 0 else 0.0
            p = float(2 * st.t.sf(abs(tstat), m - 1))
            out.append((t, row.concept, row.mean, null_mean, scale, tstat, p))
    return pd.DataFrame(out, columns=["target", "concept", "mean", "null_mean", "scale", "t", "p"])


def paired_rows(
    layer: Layer,
    runs: int,
    options: CavOptions,
    seed: int,
    null_boot: bool = False,
    drop: float | None = None,
):
    """Runs with a bootstrap twin: in each run the positive set's CAV is trained on all its
    images and once more on a bootstrap resample of them (same random set); the twin is
    scored on a bootstrap resample of the targets. Columns: target, concept, is_null, run,
    effect, effect_boot, score."""
    rng = np.random.default_rng(seed)
    arrays = {f"r{j}": x for j, x in enumerate(layer.random)}
    arrays.update(layer.concepts)
    tasks, rows = [], []
    subjects = [(name, x, False, list(range(runs))) for name, x in layer.concepts.items()]
    for j, x in enumerate(layer.random):
        subjects.append((f"r{j}", x, True, [k for k in range(len(layer.random)) if k != j][:runs]))
    for name, x, is_null, negatives in subjects:
        for run, q in enumerate(negatives):
            full = len(tasks)
            tasks.append(CavTask(name, f"r{q}", int(rng.integers(2**31))))
            twin = None
            if not is_null or null_boot:
                pos = f"{name}|b{run}"
                if drop is None:
                    arrays[pos] = x[rng.integers(len(x), size=len(x))]
                else:
                    keep = len(x) - max(1, round(drop * len(x)))
                    arrays[pos] = x[np.sort(rng.permutation(len(x))[:keep])]
                twin = len(tasks)
                tasks.append(CavTask(pos, f"r{q}", int(rng.integers(2**31))))
            if drop is None:
                targets = {t: rng.integers(len(g), size=len(g)) for t, g in layer.grads.items()}
            else:
                targets = {
                    t: np.sort(rng.permutation(len(g))[: len(g) - max(1, round(drop * len(g)))])
                    for t, g in layer.grads.items()
                }
            rows.append((name, is_null, run, full, twin, targets))
    directions, separations, _ = _train(tasks, arrays, options)
    records = []
    for name, is_null, run, full, twin, targets in rows:
        for t, g in layer.grads.items():
            derivs = g @ directions[full]
            effect = float(derivs.mean()) * separations[full]
            boot = np.nan
            if twin is not None:
                boot = float((g[targets[t]] @ directions[twin]).mean()) * separations[twin]
            records.append((t, name, is_null, run, effect, boot, float((derivs > 0).mean())))
    return pd.DataFrame(
        records, columns=["target", "concept", "is_null", "run", "effect", "effect_boot", "score"]
    )


def paired_test(rows: pd.DataFrame, inflation: float = 1.0) -> pd.DataFrame:
    """t = (T_C - null mean) / sqrt(v_C + S_C^2 / R + var_null / M), Satterthwaite df:
    v_C is the mean squared bootstrap deviation (the variance of the concept's and the
    targets' image samples), S_C^2 the variance over random sets."""
    out = []
    for t, g in rows.groupby("target", sort=False):
        null_means = g[g.is_null].groupby("concept")["effect"].mean()
        m = len(null_means)
        null_mean, null_var = float(null_means.mean()), float(null_means.var(ddof=1))
        for c, h in g[~g.is_null].groupby("concept", sort=False):
            e = h.effect.to_numpy()
            r = len(e)
            v = inflation * float(np.mean((h.effect_boot.to_numpy() - e) ** 2))
            s2 = float(np.var(e, ddof=1)) / r
            nv = null_var / m
            total = v + s2 + nv
            df = total**2 / (v**2 / r + s2**2 / (r - 1) + nv**2 / (m - 1)) if total > 0 else r - 1
            tstat = (e.mean() - null_mean) / np.sqrt(total) if total > 0 else 0.0
            p = float(2 * st.t.sf(abs(tstat), df))
            out.append((t, c, float(e.mean()), null_mean, np.sqrt(total), df, tstat, p))
    return pd.DataFrame(
        out, columns=["target", "concept", "mean", "null_mean", "se", "df", "t", "p"]
    )


def own_variance_test(runs_table: pd.DataFrame, statistic: str = "effect") -> pd.DataFrame:
    """The concept-level t-test with the concept's own run variance added:
    t = (T_C - mean T_j) / sqrt(sd(T_j)^2 (1 + 1/M) + S_C^2 / R), Satterthwaite df."""
    out = []
    for (t, layer), g in runs_table.groupby(["target", "layer"], sort=False):
        nulls = g[g.is_null]
        null_means = nulls.groupby("concept")[statistic].mean()
        m = len(null_means)
        mu, var0 = float(null_means.mean()), float(null_means.var(ddof=1)) * (1 + 1 / m)
        for c, h in g[~g.is_null].groupby("concept", sort=False):
            e = h[statistic].to_numpy()
            r = len(e)
            own = float(np.var(e, ddof=1)) / r if r > 1 else 0.0
            total = var0 + own
            df = total**2 / (var0**2 / (m - 1) + (own**2 / (r - 1) if r > 1 else 0.0))
            tstat = (e.mean() - mu) / np.sqrt(total) if total > 0 else 0.0
            p = float(2 * st.t.sf(abs(tstat), df))
            out.append((t, c, layer, float(e.mean()), mu, np.sqrt(total), df, tstat, p))
    return pd.DataFrame(
        out, columns=["target", "concept", "layer", "mean", "null_mean", "se", "df", "t", "p"]
    )


def studentized_test(runs_table: pd.DataFrame, statistic: str = "effect") -> pd.DataFrame:
    """Each set's mean statistic studentized by its own spread over runs,
    ``z = (T - m0) / (S / sqrt(R))``, then the concept's ``z`` against the pseudo-concepts'
    by the prediction-interval t-test (df M - 1)."""
    out = []
    for (t, layer), g in runs_table.groupby(["target", "layer"], sort=False):
        per = g.groupby(["concept", "is_null"], sort=False)[statistic].agg(["mean", "std", "count"])
        per = per.reset_index()
        null = per[per.is_null]
        m0 = float(null["mean"].mean())
        z = (per["mean"] - m0) / (per["std"] / np.sqrt(per["count"]))
        per["z"] = z.replace([np.inf, -np.inf], np.nan).fillna(0.0)
        zn = per.loc[per.is_null, "z"].to_numpy()
        m = len(zn)
        scale = float(np.std(zn, ddof=1)) * np.sqrt(1 + 1 / m)
        for row in per[~per.is_null].itertuples():
            tstat = (row.z - float(zn.mean())) / scale if scale > 0 else 0.0
            p = float(2 * st.t.sf(abs(tstat), m - 1))
            out.append((t, row.concept, layer, row.mean, m0, tstat, p))
    return pd.DataFrame(out, columns=["target", "concept", "layer", "mean", "null_mean", "t", "p"])
