"""CAV learners in the example space, many problems at once.

Every learner sees, for each of ``m`` CAV problems, only the Gram matrix of that problem's
training examples (``K = X Xᵀ``, ``(m, n, n)``) and the labels, and returns coefficients
``c`` ``(m, n)`` and an offset ``b0`` ``(m,)`` such that the classifier is::

    f(x) = w · x + b,  w = Σ_i c_i x_i,  b = b0 - w · x̄

with ``x̄`` the mean of the training examples. Because the CAV's direction is a
combination of its training examples, a learner never touches the features (``d`` can be
in the hundreds of thousands while ``n`` is a few dozen), and thousands of problems are
solved together with batched tensor operations on the model's device.

Problems of different sizes are padded: ``mask`` ``(m, n)`` is ``False`` on padding, whose
coefficients stay exactly 0. Labels ``y`` are +1 (concept) and -1 (negative set).

Learners (all on centred data, ``K̃ = H K H`` with ``H`` the centring matrix):

- :func:`mean_difference`: ``w = mean(concept) - mean(negative)``, threshold half-way.
- :func:`hinge_svm`: the linear SVM objective of tensorflow/tcav's default CAV
  (scikit-learn's ``SGDClassifier(loss="hinge", alpha)``),
  ``alpha/2 |w|² + 1/n Σ max(0, 1 - y_i f(x_i))``, solved to optimality in its dual by
  projected Newton steps instead of stochastic passes. The intercept is an extra feature
  of the size of the data (so it is regularised only lightly) on centred data.
- :func:`logistic`: ``alpha/2 |w|² + 1/n Σ log(1 + exp(-y_i f(x_i)))`` with an
  unregularised intercept (scikit-learn's ``LogisticRegression(C=1/(alpha n))``), solved by
  Newton's method in the ``n``-dimensional span of the examples.
"""

from __future__ import annotations

import torch

VERSION = 2  # part of the CAV cache key: bump when a learner's result changes
_EPS = 1e-12


def centred_gram(gram: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``H K H`` over the unmasked rows (padding rows and columns become 0).

    Args:
        gram: ``(m, n, n)``; mask: ``(m, n)`` bool.
    """
    w = mask.to(gram.dtype)
    count = w.sum(dim=1, keepdim=True).clamp_min(1)
    k = gram * w[:, :, None] * w[:, None, :]
    row_mean = k.sum(dim=2) / count  # (m, n)
    total_mean = row_mean.sum(dim=1, keepdim=True) / count  # (m, 1)
    centred = k - row_mean[:, :, None] - row_mean[:, None, :] + total_mean[:, :, None]
    return centred * w[:, :, None] * w[:, None, :]


def _uncentre(coef: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Coefficients on centred examples → coefficients on the raw examples (they sum to 0)."""
    w = mask.to(coef.dtype)
    mean = (coef * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1)
    return (coef - mean) * w


def mean_difference(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed form: ``c_i = 1/n₊`` on concept rows, ``-1/n₋`` on negative rows; ``b0 = 0``.

    With balanced classes ``x̄`` is the midpoint of the class means, so ``b = -w · x̄``
    puts the threshold half-way between them.
    """
    w = mask.to(torch.float64)
    pos = (y > 0).to(torch.float64) * w
    neg = (y < 0).to(torch.float64) * w
    coef = pos / pos.sum(dim=1, keepdim=True).clamp_min(1) - neg / neg.sum(
        dim=1, keepdim=True
    ).clamp_min(1)
    return coef, torch.zeros(len(y), dtype=torch.float64, device=y.device)


def hinge_svm(
    gram: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    gap: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised hinge loss, all problems at once, through its dual.

    Dual: ``min ½ βᵀQβ - Σβ_i`` with ``0 ≤ β_i ≤ C = 1/(alpha n)``, ``Q = (K̃ + B²) ∘ yyᵀ``
    where ``B²`` (the intercept feature) is the mean of ``diag K̃``. Each iteration is one
    sweep of dual coordinate descent (Hsieh et al. 2008), which always descends and finds
    which coordinates sit at a bound, then one Newton step on the others, kept where it
    lowers the objective (it lands on the optimum once the bound set is right). A problem
    stops when its largest projected gradient is below ``tol``, when the duality gap is
    below ``gap`` times the primal objective, when its primal objective has not improved
    (by 1e-7, relatively) for 200 iterations (a degenerate dual, with fewer features than
    examples, otherwise crawls without changing the CAV), or after ``max_iter``
    iterations; it returns its best iterate and never moves after stopping, so a batch
    solves each problem exactly as it would be solved alone.

    Args:
        gram: ``(m, n, n)`` Gram matrices of the training rows; y: ``(m, n)`` ±1;
        mask: ``(m, n)`` bool; alpha: regularisation strength.

    Returns:
        coefficients ``(m, n)`` on the raw examples and ``b0`` ``(m,)``.
    """
    gram = gram.to(torch.float64)
    y = y.to(torch.float64)
    m, n = y.shape
    valid = mask.to(torch.float64)
    k = centred_gram(gram, mask)
    n_rows = valid.sum(dim=1)
    bias_sq = torch.diagonal(k, dim1=1, dim2=2).sum(dim=1) / n_rows.clamp_min(1)
    bias_sq = bias_sq.clamp_min(_EPS)
    q = (k + bias_sq[:, None, None] * valid[:, :, None] * valid[:, None, :]) * (
        y[:, :, None] * y[:, None, :]
    )
    upper = (1.0 / (alpha * n_rows.clamp_min(1)))[:, None] * valid  # C, 0 on padding
    ridge = 1e-10 * bias_sq  # keeps the Newton system positive definite
    eye = torch.eye(n, dtype=q.dtype, device=q.device)
    beta = torch.zeros_like(y)
    active = torch.ones(m, dtype=torch.bool, device=y.device)

    def objective(b: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("mi,mij,mj->m", b, q, b) - (b * valid).sum(dim=1)

    diag = torch.diagonal(q, dim1=1, dim2=2).clone()
    diag[diag <= 0] = 1.0  # padding, or an all-zero example (its β only meets the box)

    # The primal objective (times 1/alpha n) of the CAV that β stands for: the margins are
    # Qβ = grad + 1. With fewer features than examples the dual is degenerate and crawls
    # along directions that leave the CAV unchanged: a problem whose best primal value has
    # not improved for `patience` iterations stops too, and the best β is returned.
    def margins_and_primal(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dual gradient ``Qβ - 1``, the quadratic term ``βᵀQβ`` and the primal value."""
        g = torch.einsum("mij,mj->mi", q, b) - valid
        quad = ((g + valid) * b).sum(dim=1)
        return g, quad, 0.5 * quad + (upper * torch.clamp(-g, min=0)).sum(dim=1)

    best = torch.full((m,), float("inf"), dtype=q.dtype, device=q.device)
    best_beta = beta.clone()
    stale = torch.zeros(m, dtype=torch.long, device=q.device)
    patience = 200
    for _ in range(max_iter):
        grad, quad, primal = margins_and_primal(beta)
        dual = (beta * valid).sum(dim=1) - 0.5 * quad
        improved = primal < best * (1 - 1e-7)
        best_beta = torch.where((improved & active)[:, None], beta, best_beta)
        best = torch.where(improved & active, primal, best)
        stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
        at_lower = (beta <= 0) & (grad > 0)
        at_upper = (beta >= upper) & (grad < 0)
        projected = torch.where(at_lower | at_upper, torch.zeros_like(grad), grad) * valid
        gap_closed = primal - dual <= gap * primal.abs()
        active &= (projected.abs().amax(dim=1) > tol) & (stale < patience) & ~gap_closed
        if not bool(active.any()):
            break
        moving = active.to(q.dtype)
        # One sweep of coordinate descent: always descends and finds the bound set.
        for i in range(n):
            g = grad[:, i]
            new = torch.minimum(torch.clamp(beta[:, i] - g / diag[:, i], min=0), upper[:, i])
            delta = (new - beta[:, i]) * moving
            beta[:, i] += delta
            grad += delta[:, None] * q[:, i]  # Q is symmetric: row i is column i
        # Then a Newton step on the coordinates off their bounds, kept if it descends.
        free = ((beta > 0) & (beta < upper)).to(q.dtype)
        system = q * free[:, :, None] * free[:, None, :] + eye * (1 - free[:, :, None])
        system = system + ridge[:, None, None] * eye
        step = torch.linalg.solve(system, (-grad * free).unsqueeze(-1)).squeeze(-1)
        current = objective(beta)
        size = torch.ones(m, 1, dtype=q.dtype, device=q.device)
        for _ in range(3):  # halve the step where the clipped step does not descend
            trial = torch.minimum(torch.clamp(beta + size * step, min=0), upper)
            # Values within rounding of a bound sit on it (else they never count as bound).
            trial = torch.where(trial < 1e-9 * upper, torch.zeros_like(trial), trial)
            trial = torch.where(trial > (1 - 1e-9) * upper, upper, trial)
            better = (objective(trial) < current) & active
            beta = torch.where(better[:, None], trial, beta)
            if bool((better | ~active).all()):
                break
            current = torch.where(better, objective(beta), current)
            size = torch.where(better[:, None], torch.zeros_like(size), size / 2)
    _, _, primal = margins_and_primal(beta)  # the last iterate may be the best
    best_beta = torch.where((primal < best)[:, None], beta, best_beta)
    signed = best_beta * y
    coef = _uncentre(signed, mask)
    return coef, bias_sq * signed.sum(dim=1)


def logistic(
    gram: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
    *,
    max_iter: int = 100,
    tol: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression (unregularised intercept) by Newton's method.

    Unknowns are the coefficients ``a`` on the centred examples and the intercept ``b``
    (``f = K̃a + b``). Dividing the Newton system's first block row by ``K̃`` leaves the
    well-conditioned ``(n+1)``-dimensional system ``[[αI + SK̃, S1], [1ᵀSK̃, 1ᵀS1]]`` (``S``
    the loss curvatures), solved for all problems at once; steps are halved until the
    objective decreases.

    Returns:
        coefficients ``(m, n)`` on the raw examples and ``b0`` ``(m,)``.
    """
    k = centred_gram(gram.to(torch.float64), mask)
    y = y.to(torch.float64)
    valid = mask.to(torch.float64)
    m, n = y.shape
    n_rows = valid.sum(dim=1, keepdim=True).clamp_min(1)
    eye = torch.eye(n, dtype=k.dtype, device=k.device)
    a = torch.zeros_like(y)
    b = torch.zeros(m, 1, dtype=k.dtype, device=k.device)

    def objective(a_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        f = torch.einsum("mij,mj->mi", k, a_)
        loss = (torch.nn.functional.softplus(-y * (f + b_)) * valid).sum(dim=1) / n_rows[:, 0]
        return 0.5 * alpha * (a_ * f).sum(dim=1) + loss

    current = objective(a, b)
    for _ in range(max_iter):
        f = torch.einsum("mij,mj->mi", k, a) + b
        p = torch.sigmoid(-y * f)
        u = -y * p * valid / n_rows  # d loss / d f
        s = p * (1 - p) * valid / n_rows  # d² loss / d f²
        system = torch.zeros(m, n + 1, n + 1, dtype=k.dtype, device=k.device)
        system[:, :n, :n] = alpha * eye + s[:, :, None] * k
        system[:, :n, n] = s
        system[:, n, :n] = torch.einsum("mi,mij->mj", s, k)
        system[:, n, n] = s.sum(dim=1) + 1e-12
        rhs = torch.cat([alpha * a + u, u.sum(dim=1, keepdim=True)], dim=1)
        step = torch.linalg.solve(system, rhs)
        size = torch.ones(m, 1, dtype=k.dtype, device=k.device)
        for _ in range(40):  # halve the step of each problem until its objective decreases
            trial_a, trial_b = a - size * step[:, :n], b - size * step[:, n:]
            value = objective(trial_a, trial_b)
            worse = value > current
            if not bool(worse.any()):
                break
            size = torch.where(worse[:, None], size / 2, size)
        keep = (value <= current)[:, None]
        a = torch.where(keep, trial_a, a)
        b = torch.where(keep, trial_b, b)
        improvement = float((current - torch.minimum(value, current)).max())
        current = torch.minimum(value, current)
        if improvement <= tol * float(current.abs().max().clamp_min(1e-300)):
            break
    return _uncentre(a * valid, mask), b[:, 0]
