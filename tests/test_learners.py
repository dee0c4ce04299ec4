"""Batched CAV learners: optimal for their objectives, and the same CAVs one at a time or
many at once."""

import numpy as np
import pytest
import torch

from tcavkit.cav import learners, train_cav
from tcavkit.cav.batch import CavTask, train_cav_batch
from tcavkit.options import CavOptions


def problem(seed: int, n: int = 24, d: int = 40, shift: float = 1.0):
    """Two overlapping Gaussian classes (n each) in d dims, shifted along axis 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, d))
    x[:n, 0] += shift
    x[n:, 0] -= shift
    x += rng.normal(size=d) * 3  # far from the origin: the intercept matters
    y = np.r_[np.ones(n), -np.ones(n)]
    return x, y


def solve(learner, xs, ys, **kwargs):
    """Run a learner on a batch of problems; return (w (m, d), b (m,)) in feature space."""
    gram = torch.as_tensor(np.stack([x @ x.T for x in xs]))
    y = torch.as_tensor(np.stack(ys))
    mask = torch.ones_like(y, dtype=torch.bool)
    coef, b0 = learner(gram, y, mask, 0.01, **kwargs)
    w = np.stack([c @ x for c, x in zip(coef.numpy(), xs, strict=True)])
    b = b0.numpy() - np.einsum("md,md->m", w, np.stack([x.mean(0) for x in xs]))
    return w, b


def hinge_objective(w, b, x, y, alpha=0.01):
    return alpha / 2 * w @ w + np.mean(np.maximum(0, 1 - y * (x @ w + b)))


def logistic_objective(w, b, x, y, alpha=0.01):
    return alpha / 2 * w @ w + np.mean(np.logaddexp(0, -y * (x @ w + b)))


def test_hinge_svm_reaches_the_optimum_that_sgd_only_approaches():
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import SVC

    problems = [problem(seed) for seed in range(5)]
    w, b = solve(learners.hinge_svm, [p[0] for p in problems], [p[1] for p in problems])
    for k, (x, y) in enumerate(problems):
        ours = hinge_objective(w[k], b[k], x, y)
        svc = SVC(kernel="linear", C=1 / (0.01 * len(y)), tol=1e-10).fit(x, y)
        exact = hinge_objective(svc.coef_[0], svc.intercept_[0], x, y)
        sgd = SGDClassifier(loss="hinge", alpha=0.01, tol=1e-3, random_state=k).fit(x, y)
        stochastic = hinge_objective(sgd.coef_[0], sgd.intercept_[0], x, y)
        # The intercept is regularised only lightly: within 1% of the exact optimum.
        assert exact * 0.999 <= ours <= exact * 1.01
        assert ours < stochastic


def test_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    problems = [problem(seed, shift=0.5) for seed in range(4)]
    w, b = solve(learners.logistic, [p[0] for p in problems], [p[1] for p in problems])
    for k, (x, y) in enumerate(problems):
        ref = LogisticRegression(C=1 / (0.01 * len(y)), tol=1e-12, max_iter=10_000).fit(x, y)
        ours = logistic_objective(w[k], b[k], x, y)
        theirs = logistic_objective(ref.coef_[0], ref.intercept_[0], x, y)
        assert ours == pytest.approx(theirs, rel=1e-6)
        cosine = w[k] @ ref.coef_[0] / np.linalg.norm(w[k]) / np.linalg.norm(ref.coef_[0])
        assert cosine > 0.9999


def test_padding_leaves_each_problem_unchanged():
    # A 20-row problem padded to 24 rows solves like the same problem alone.
    x, y = problem(3, n=10)
    gram = x @ x.T
    padded = np.zeros((24, 24))
    padded[:20, :20] = gram
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, :20] = True
    y_pad = torch.zeros(1, 24, dtype=torch.float64)
    y_pad[0, :20] = torch.as_tensor(y)
    for learner in (learners.hinge_svm, learners.logistic):
        alone = learner(
            torch.as_tensor(gram)[None],
            torch.as_tensor(y)[None],
            torch.ones(1, 20, dtype=torch.bool),
            0.01,
        )
        pad = learner(torch.as_tensor(padded)[None], y_pad, mask, 0.01)
        np.testing.assert_allclose(pad[0][0, :20], alone[0][0], atol=1e-6)
        assert float(pad[0][0, 20:].abs().max()) == 0.0
        assert float(pad[1][0]) == pytest.approx(float(alone[1][0]), abs=1e-6)


@pytest.mark.parametrize("method", ["hinge", "logistic", "mean-difference"])
def test_a_batch_trains_the_same_cavs_as_one_at_a_time(method):
    rng = np.random.default_rng(0)
    sets = {
        name: rng.normal(size=(n, 30)).astype(np.float32) + shift
        for name, n, shift in [("c", 20, 0.5), ("r0", 20, 0.0), ("r1", 26, 0.1), ("r2", 14, -0.2)]
    }
    tasks = [
        CavTask("c", "r0", 1),
        CavTask("c", "r1", 2),
        CavTask("r0", "r2", 3),
        CavTask("r1", "r2", 4),
    ]
    options = CavOptions(method=method)
    tensors = {k: torch.from_numpy(v) for k, v in sets.items()}
    batch = train_cav_batch(
        tasks, tensors.__getitem__, {k: len(v) for k, v in sets.items()}, options
    )
    for i, task in enumerate(tasks):
        single = train_cav(sets[task.positive], sets[task.negative], options, task.seed)
        np.testing.assert_allclose(batch.directions[i].numpy(), single.direction, atol=2e-5)
        assert batch.intercepts[i] == pytest.approx(single.intercept, abs=1e-4)
        assert batch.accuracies[i] == single.accuracy
        assert batch.separations[i] == pytest.approx(single.separation, rel=1e-4)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("d", [40, 3])  # more features than examples, and far fewer
def test_hinge_svm_is_the_exact_optimum_of_its_objective(d, seed):
    # The learner's problem is a linear SVM without intercept on the centred examples with
    # one extra constant feature B (B² = mean squared norm of the centred examples). Its
    # dual is a smooth box-constrained QP that L-BFGS-B solves to high accuracy.
    from scipy.optimize import minimize

    x, y = problem(seed, n=24, d=d, shift=0.6)
    centred = x - x.mean(0)
    bias = np.sqrt(np.mean(np.sum(centred**2, axis=1)))
    augmented = np.c_[centred, np.full(len(x), bias)]
    a = augmented * y[:, None]
    q = a @ a.T
    ref = minimize(
        lambda beta: (0.5 * beta @ q @ beta - beta.sum(), q @ beta - 1),
        np.zeros(len(y)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, 1 / (0.01 * len(y)))] * len(y),
        options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 100_000},
    )
    theirs = ref.x @ a  # v = Σ β_i y_i a_i
    w, b = solve(learners.hinge_svm, [x], [y])
    # Back to the augmented weights: the centred offset b + w·x̄ is v_B B.
    ours = np.r_[w[0], (b[0] + w[0] @ x.mean(0)) / bias]

    def objective(v):
        return 0.005 * v @ v + np.mean(np.maximum(0, 1 - y * (augmented @ v)))

    assert objective(ours) <= objective(theirs) * (1 + 1e-9)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


def test_iterative_learners_solve_in_chunks_as_in_one(monkeypatch):
    import tcavkit.cav.batch as cav_batch

    rng = np.random.default_rng(1)
    sets = {
        f"s{i}": torch.from_numpy(rng.normal(size=(16, 12)).astype(np.float32) + i * 0.1)
        for i in range(4)
    }
    tasks = [CavTask(f"s{i}", f"s{j}", 10 * i + j) for i in range(4) for j in range(4) if i != j]
    sizes = {k: len(v) for k, v in sets.items()}
    options = CavOptions(method="hinge")
    whole = train_cav_batch(tasks, sets.__getitem__, sizes, options)
    monkeypatch.setattr(cav_batch, "LEARNER_CHUNK", 5)
    chunked = train_cav_batch(tasks, sets.__getitem__, sizes, options)
    # The same CAVs up to the float32 rounding of the Gram products (their shift follows
    # the chunk); coefficients may differ where the dual is not unique (12 features).
    np.testing.assert_allclose(chunked.directions, whole.directions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(chunked.intercepts, whole.intercepts, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(chunked.accuracies, whole.accuracies)


def test_sgd_is_the_hinge_learner_under_another_name():
    x, y = problem(3, n=20, d=10)
    pos, neg = x[y > 0].astype(np.float32), x[y < 0].astype(np.float32)
    hinge = train_cav(pos, neg, CavOptions(method="hinge"), seed=4)
    alias = train_cav(pos, neg, CavOptions(method="sgd"), seed=4)
    np.testing.assert_array_equal(alias.direction, hinge.direction)
    assert (alias.intercept, alias.accuracy) == (hinge.intercept, hinge.accuracy)
