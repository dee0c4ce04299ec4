"""The default test's statistical promises, for every CAV learner, at reduced size.

A small CNN is trained once on generated "starter creatures" (class = body colour). Image
sets are drawn in memory with the library's generators, each from its own seed, and go
through the whole pipeline (activations, CAVs, scores, ``summarize``) as a user's would.
The full-size studies, with binomial intervals, are ``bench/stats_study.py``; here:

- **calibration**: concepts made of random images (truly null) against 10 random sets;
  over 8 independent draws, the share of null rows with p <= alpha, the draws with any
  rejection after Holm, and the far tail p <= alpha/m that Holm relies on;
- **replication and power**: 4 independent samples of the same concept, random (20 sets,
  20 runs) and target distributions for the same model; no (target, concept, layer) cell is
  significant in both directions, the planted colour is found for its class (red for fire,
  blue for water, at both layers) at the issue's power of 95%, and textures (drawn
  independently of the class) almost never are.

The bounds come from the binomial distribution at the nominal rate (see each constant);
they are fixed in advance, not fitted to the observed counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from tcavkit import CavOptions, Experiment, Preprocessing, StatsOptions, TensorSource
from tcavkit.demo.starters import train_starter_cnn
from tcavkit.demo.synthetic import make_images, set_rng
from tcavkit.examples.images import preprocess

SIZE = (32, 32)
LEARNERS = ["hinge", "mean-difference", "logistic"]
LAYERS = ["block2", "block3"]
ALPHA = 0.05
N_DRAWS = 8
N_NULL = 30  # null concepts per draw: x 2 targets x 2 layers = 120 rows (m)
M_ROWS = N_NULL * 2 * len(LAYERS)
TOTAL = N_DRAWS * M_ROWS
# Rows of one draw share their null (the same 10 pseudo-concepts), so their flags move
# together: per-draw rates vary far more than binomially. alpha + 0.03 over 960 rows is
# about two standard errors of the pooled rate under that dependence (per-draw rates of
# 0-12% were seen with the older 20-set test).
RATE_BOUND = ALPHA + 0.03
# Draws (of 8) with any Holm rejection: at most 2 when the family-wise error is 5% fails
# with probability 0.6% (binomial); the test before the tail corrections (43% per family
# with hinge CAVs) would pass it with probability about 0.2.
FWER_DRAWS_BOUND = 2
# p <= alpha/m over 960 rows: at 1.5x nominal the count exceeds this with probability
# <= 0.001 (binomial, ignoring the dependence that only widens it).
TAIL_BOUND = int(st.binom.ppf(0.999, TOTAL, 1.5 * ALPHA / M_ROWS))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    result = train_starter_cnn(size=SIZE, n_per_class=60, epochs=6, seed=0)
    assert result.test_accuracy > 0.9
    return result.model


def tensor_sets(kind: str, names: list[str], n: int, seed: int) -> dict[str, TensorSource]:
    """In-memory image sets of ``kind``, one generator per (seed, name)."""
    prep = Preprocessing(size=SIZE)
    return {
        name: TensorSource(preprocess(make_images(kind, n, SIZE, set_rng(seed, name)), prep))
        for name in names
    }


def run(
    model, method: str, seed: int, concepts: dict, targets: dict, n_random: int = 10, runs: int = 10
):
    """The experiment with ``n_random`` random sets of 20 images and ``runs`` runs."""
    random = tensor_sets("random", [f"random500_{i}" for i in range(n_random)], 20, seed)
    return Experiment(
        model,
        layers=LAYERS,
        targets=targets,
        concepts=concepts,
        random=random,
        labels=["fire", "water", "grass"],
        runs=runs,
        cav=CavOptions(method=method),
        stats=StatsOptions(correction="holm"),
        seed=seed,
        cache_dir=None,
        progress=False,
        device="cpu",
    ).run()


@pytest.mark.filterwarnings("ignore::tcavkit.errors.TcavWarning")
@pytest.mark.parametrize("method", LEARNERS)
def test_null_concepts_are_calibrated(model, method):
    p_values, draws_with_rejection = [], 0
    for seed in range(N_DRAWS):
        concepts = tensor_sets("random", [f"null{i}" for i in range(N_NULL)], 20, 100 + seed)
        targets = {
            **tensor_sets("fire", ["fire"], 20, 100 + seed),
            **tensor_sets("water", ["water"], 20, 100 + seed),
        }
        summary = run(model, method, seed, concepts, targets).summary
        assert len(summary) == M_ROWS
        p_values.append(summary.p_value.to_numpy())
        draws_with_rejection += int(summary.significant.any())
    p = np.concatenate(p_values)
    assert (p <= ALPHA).mean() <= RATE_BOUND, f"{method}: {(p <= ALPHA).mean():.3f} at alpha"
    assert draws_with_rejection <= FWER_DRAWS_BOUND, f"{method}: {draws_with_rejection}/8"
    far = int((p <= ALPHA / M_ROWS).sum())
    assert far <= TAIL_BOUND, f"{method}: {far} of {TOTAL} at alpha/m (bound {TAIL_BOUND})"


PLANTED = {"fire": "red", "water": "blue"}
CONCEPTS = ["red", "green", "blue", "striped", "dotted", "zigzag"]
TEXTURES = ["striped", "dotted", "zigzag"]
N_SAMPLES = 4


@pytest.mark.filterwarnings("ignore::tcavkit.errors.TcavWarning")
@pytest.mark.parametrize("method", LEARNERS)
def test_verdicts_replicate_across_image_samples(model, method):
    directions = []
    for sample in range(N_SAMPLES):
        seed = 200 + sample
        concepts = {c: tensor_sets(c, [c], 20, seed)[c] for c in CONCEPTS}
        targets = {t: tensor_sets(t, [t], 20, seed)[t] for t in ("fire", "water", "grass")}
        # 20 random sets and 20 runs: the setting the power claim (README, power table) is
        # about. With 10 runs hinge CAVs found the planted colour in 48 of 64 checks
        # [0.63, 0.85] on this model, against 64 of 64 [0.94, 1] with 20 (16 samples each).
        summary = run(model, method, sample, concepts, targets, n_random=20, runs=20).summary
        sign = summary.direction.map({"positive": 1, "negative": -1, "none": 0})
        directions.append(summary.assign(sign=sign)[["target", "concept", "layer", "sign"]])
    table = pd.concat(directions)
    cells = table.groupby(["target", "concept", "layer"])["sign"]
    both = cells.max().gt(0) & cells.min().lt(0)
    assert not both.any(), f"{method}: significant both ways in {list(both[both].index)}"
    planted = pd.concat(
        table[(table.target == target) & (table.concept == colour)]
        for target, colour in PLANTED.items()
    )
    assert len(planted) == N_SAMPLES * len(PLANTED) * len(LAYERS)  # 16 checks
    # The bar is power >= 95% at 20 images per set; at that power, 12 or fewer
    # finds of 16 happen with probability 0.7% (binomial).
    found = int((planted.sign > 0).sum())
    assert found >= 13, f"{method}: planted colour found in {found} of 16\n{planted}"
    textures = table[table.concept.isin(TEXTURES)]
    # 72 texture rows; at the nominal per-row rate after Holm (well under 1%) more than 2
    # would be a surprise.
    assert int((textures.sign != 0).sum()) <= 2, textures[textures.sign != 0]
