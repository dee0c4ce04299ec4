"""The measured null (``stats.test: concept-resample``): concepts against random images
resampled from the pool, on hand-checkable projections."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from tcavkit.errors import ConfigError
from tcavkit.resample import ImagePool, draws_for
from tcavkit.stats import detectable_effects, negative_controls, summarize


def test_draws_reach_far_below_the_bonferroni_level():
    assert draws_for(240, 0.05) == 96_000  # 1 / (B + 1) = alpha / (20 * 240)
    assert draws_for(1, 0.05) == 10_000 and draws_for(10**9, 0.05) == 2_000_000


def test_z_by_hand_and_p_from_the_draws():
    pool = ImagePool(np.array([0.0, 1.0, 2.0, 3.0]), draws=1000, seed=0)
    # pool mean 1.5, sample variance 5/3; concept [3, 3]: own variance 0 < 5/3
    res = pool.test(np.array([3.0, 3.0]))
    scale = math.sqrt((5 / 3) / 2 + (5 / 3) / 4)
    assert res.difference == pytest.approx(1.5)
    assert res.scale == pytest.approx(scale) and res.z == pytest.approx(1.5 / scale)
    assert res.null_scale == pytest.approx(scale)
    # p counts the draws at least as extreme: recount them from the same reference
    ref = pool._reference((2,))
    assert res.p_value == pytest.approx((1 + np.sum(ref >= abs(res.z) * (1 - 1e-12))) / 1001)
    # a concept that spreads more than the pool is studentized by its own spread
    wide = pool.test(np.array([-10.0, 16.0]))
    assert wide.scale == pytest.approx(math.sqrt(338 / 2 + (5 / 3) / 4))


def test_same_seed_same_bits_other_seed_other_draws():
    x = np.random.default_rng(1).gamma(2.0, size=300)
    c = x[:10] + 0.3
    a = ImagePool(x, 5000, seed=3).test(c)
    assert a == ImagePool(x, 5000, seed=3).test(c)
    assert a.p_value != ImagePool(x, 5000, seed=4).test(c).p_value


def test_p_values_are_uniform_under_the_null_and_reach_below_alpha_over_m():
    """A skewed population (gamma, skewness 2), concepts of 10 images drawn like random
    images, each run with its own pool of 400: the p-values are uniform
    (Kolmogorov-Smirnov), and a planted shift reaches below alpha / m.

    (Within one pool the concepts share the pool's error in its mean, so uniformity is
    over runs, as the family-wise error is.)"""
    rng = np.random.default_rng(0)

    def population(n: int) -> np.ndarray:
        return rng.gamma(1.0, size=n)

    p = []
    for run in range(300):
        pool = ImagePool(population(400), draws=4000, seed=run)
        p += [pool.test(population(10)).p_value for _ in range(5)]
    p = np.array(p)
    assert st.kstest(p, "uniform").pvalue > 0.01
    hits = int((p <= 0.01).sum())  # the tail: within its binomial interval
    assert st.binomtest(hits, p.size, 0.01).pvalue > 0.01
    pool = ImagePool(population(400), draws=draws_for(240, 0.05), seed=0)
    strong = pool.test(population(10) + 2.5)  # 2.5 sd of an image
    assert strong.p_value < 0.05 / 240


def _runs_and_projections(shift: float, n: int = 12, sets: int = 6, seed: int = 0):
    """A linear model's runs table: each example's projection is its value, the effect
    of a run is the difference of the two sets' mean projections (mean-difference CAVs)."""
    rng = np.random.default_rng(seed)
    values = {f"r{j}": rng.normal(size=n) for j in range(sets)}
    values["c"] = rng.normal(size=n) + shift
    rows = []
    for run in range(4):
        partner = f"r{run}"
        rows.append(("c", partner, run, False, values["c"].mean() - values[partner].mean()))
    for j in range(sets):
        others = [k for k in range(sets) if k != j][:4]
        for run, k in enumerate(others):
            eff = values[f"r{j}"].mean() - values[f"r{k}"].mean()
            rows.append((f"r{j}", f"r{k}", run, True, eff))
    runs = pd.DataFrame(rows, columns=["concept", "random", "run", "is_null", "effect"])
    runs = runs.assign(target="t", layer="L", tcav_score=0.5, kind="concept")
    runs.loc[runs.is_null, "kind"] = "null"
    projections = pd.concat(
        [
            pd.DataFrame({"target": "t", "layer": "L", "set": k, "projection": v})
            for k, v in values.items()
        ],
        ignore_index=True,
    )
    return runs, projections, values


def test_summary_reads_the_difference_from_the_pool_and_partners_cancel():
    runs, projections, values = _runs_and_projections(shift=3.0)
    summary = summarize(runs, projections=projections, seed=0)
    row = summary.iloc[0]
    pool = np.concatenate([values[f"r{j}"] for j in range(6)])
    assert row.test == "concept-resample"
    # statistic: the mean effect over runs; its null: what a random set scores against
    # the same partners, so that their difference is mean(c) - mean(pool)
    assert row.statistic_mean == pytest.approx(runs[~runs.is_null].effect.mean())
    assert row.statistic_mean - row.statistic_null_mean == pytest.approx(
        values["c"].mean() - pool.mean()
    )
    assert row.significant and row.direction == "positive"
    assert row.statistic_low > row.statistic_null_mean  # the interval agrees with the test
    assert 0 < row.detectable < 3.0
    (record,) = detectable_effects(summary)
    assert record["detectable"] == pytest.approx(row.detectable)
    # without projections, auto falls back to the pseudo-concepts' t-test
    assert summarize(runs).iloc[0].test == "concept-t"


def test_a_concept_like_random_images_is_not_significant_and_says_what_it_could_see():
    runs, projections, _ = _runs_and_projections(shift=0.0, seed=2)
    row = summarize(runs, projections=projections).iloc[0]
    assert not row.significant and row.p_value > 0.05
    assert abs(row.statistic_mean - row.statistic_null_mean) < row.detectable


def test_the_interval_excludes_the_null_exactly_when_significant():
    for shift in np.linspace(0.0, 2.0, 9):
        runs, projections, _ = _runs_and_projections(shift=shift, seed=int(shift * 10))
        row = summarize(runs, projections=projections, correction="none").iloc[0]
        excludes = not (row.statistic_low <= row.statistic_null_mean <= row.statistic_high)
        assert excludes == bool(row.significant), shift


def test_negative_controls_use_the_pool_of_the_other_sets():
    runs, projections, _ = _runs_and_projections(shift=0.0)
    controls = negative_controls(runs, projections=projections)
    assert controls["test"] == "concept-resample" and controls["tested"] == 6
    assert controls["significant"] == 0


def test_resample_needs_a_linear_effect():
    runs, projections, _ = _runs_and_projections(shift=0.0)
    with pytest.raises(ConfigError, match="concept-resample.*mean-difference"):
        summarize(runs, test="concept-resample")
    with pytest.raises(ConfigError, match="concept-resample"):
        summarize(runs, test="concept-resample", statistic="tcav_score", projections=projections)
