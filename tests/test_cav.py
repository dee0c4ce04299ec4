"""CAV learners: direction, sign convention, accuracy, determinism."""

import numpy as np
import pytest

from tcavkit.cav import balanced_split, train_cav
from tcavkit.errors import ConfigError, DataError
from tcavkit.options import CavOptions

METHODS = ["sgd", "logistic", "mean-difference"]


def separable(seed: int = 0, n_pos: int = 30, n_neg: int = 40, d: int = 20):
    """Concept examples shifted by +3 along axis 0; random ones by -3."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_pos, d)).astype(np.float32)
    neg = rng.normal(size=(n_neg, d)).astype(np.float32)
    pos[:, 0] += 3.0
    neg[:, 0] -= 3.0
    return pos, neg


@pytest.mark.parametrize("method", METHODS)
def test_learners_separate_and_point_toward_the_concept(method):
    pos, neg = separable()
    cav = train_cav(pos, neg, CavOptions(method=method), seed=1)
    assert cav.accuracy == 1.0
    assert np.linalg.norm(cav.direction) == pytest.approx(1.0, abs=1e-6)
    assert cav.direction[0] > 0.7  # the planted axis dominates and points to the concept
    assert np.all(pos @ cav.direction + cav.intercept > 0)
    assert np.all(neg @ cav.direction + cav.intercept < 0)


@pytest.mark.parametrize("method", METHODS)
def test_swapping_classes_flips_the_direction(method):
    # Same examples on both sides (no held-out split), roles swapped.
    pos, neg = separable(n_pos=30, n_neg=30)
    options = CavOptions(method=method, test_fraction=0.0)
    forward = train_cav(pos, neg, options, seed=3)
    backward = train_cav(neg, pos, options, seed=3)
    # Closed form: exactly opposite. Iterative: the same problem visited in another order
    # (SGD's path depends on it), so opposite up to optimisation noise.
    limit = {"mean-difference": -0.999999, "logistic": -0.95, "sgd": -0.7}[method]
    assert float(forward.direction @ backward.direction) < limit
    assert forward.direction[0] > 0 > backward.direction[0]


def test_mean_difference_is_exactly_the_normalised_difference_of_means():
    pos, neg = separable(n_pos=25, n_neg=25)
    cav = train_cav(pos, neg, CavOptions(method="mean-difference", test_fraction=0.0), seed=0)
    expected = pos.astype(np.float64).mean(0) - neg.astype(np.float64).mean(0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(cav.direction, expected, rtol=1e-6, atol=1e-7)
    # The threshold sits half-way between the class means.
    midpoint = (pos.mean(0) + neg.mean(0)) / 2
    assert midpoint @ cav.direction + cav.intercept == pytest.approx(0.0, abs=1e-4)


def test_mean_difference_uses_every_example_and_measures_accuracy_held_out():
    """Unequal sets, the default split: the direction is the difference of the means over
    all the examples (not balanced, not split), the threshold half-way between them; the
    accuracy is that of the split's own mean-difference classifier on held-out rows."""
    pos, neg = separable(n_pos=12, n_neg=30)
    pos[:, 0] -= 2.0  # overlapping classes: held-out accuracy below 1
    neg[:, 0] += 2.0
    cav = train_cav(pos, neg, CavOptions(method="mean-difference"), seed=4)
    expected = pos.astype(np.float64).mean(0) - neg.astype(np.float64).mean(0)
    np.testing.assert_allclose(cav.direction, expected / np.linalg.norm(expected), atol=1e-6)
    assert cav.separation == pytest.approx(np.linalg.norm(expected), rel=1e-5)
    midpoint = (pos.mean(0) + neg.mean(0)) / 2
    assert midpoint @ cav.direction + cav.intercept == pytest.approx(0.0, abs=1e-4)
    # the held-out accuracy, by hand: the balanced split of the same seed
    rng = np.random.default_rng(4)
    p_tr, p_te, n_tr, n_te = balanced_split(12, 30, 0.33, rng)
    w = pos[p_tr].mean(0) - neg[n_tr].mean(0)
    b = -w @ (pos[p_tr].mean(0) + neg[n_tr].mean(0)) / 2
    right = np.r_[pos[p_te] @ w + b > 0, neg[n_te] @ w + b < 0]
    assert cav.accuracy == pytest.approx(right.mean())


def test_sgd_agrees_with_the_exact_linear_svm():
    from sklearn.svm import SVC

    pos, neg = separable(n_pos=30, n_neg=30)
    pos[:, 0] -= 2.5  # overlapping classes: the regularisation matters
    neg[:, 0] += 2.5
    cav = train_cav(pos, neg, CavOptions(method="sgd", test_fraction=0.0), seed=5)
    # Same balanced examples, same objective (alpha/2 |w|^2 + mean hinge = C-SVM, C=1/(alpha n)).
    rng = np.random.default_rng(5)
    p_tr, _, n_tr, _ = balanced_split(30, 30, 0.0, rng)
    x = np.concatenate([pos[p_tr], neg[n_tr]])
    y = np.r_[np.ones(len(p_tr)), np.zeros(len(n_tr))]
    ref = SVC(kernel="linear", C=1.0 / (0.01 * len(y)), tol=1e-8).fit(x, y)
    ref_dir = ref.coef_[0] / np.linalg.norm(ref.coef_[0])
    assert float(cav.direction @ ref_dir) > 0.995
    ref_intercept = ref.intercept_[0] / np.linalg.norm(ref.coef_[0])
    assert cav.intercept == pytest.approx(ref_intercept, abs=0.05)


def test_balanced_stratified_split():
    rng = np.random.default_rng(0)
    p_tr, p_te, n_tr, n_te = balanced_split(30, 90, 1 / 3, rng)
    assert len(p_tr) == len(n_tr) == 20 and len(p_te) == len(n_te) == 10
    assert len(set(p_tr) | set(p_te)) == 30 and set(p_tr).isdisjoint(p_te)
    assert set(n_tr).isdisjoint(n_te) and max(n_te.max(), n_tr.max()) < 90


def test_same_seed_same_cav_and_different_seed_different_cav():
    pos, neg = separable()
    a = train_cav(pos, neg, CavOptions(method="sgd"), seed=7)
    b = train_cav(pos, neg, CavOptions(method="sgd"), seed=7)
    c = train_cav(pos, neg, CavOptions(method="sgd"), seed=8)
    np.testing.assert_array_equal(a.direction, b.direction)
    assert not np.array_equal(a.direction, c.direction)


def test_bad_options_and_degenerate_data():
    with pytest.raises(ConfigError, match="cav.method"):
        CavOptions(method="svm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="test_fraction"):
        CavOptions(test_fraction=1.0)
    same = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(DataError, match="cannot be separated"):
        train_cav(same, same, CavOptions(method="mean-difference"))
