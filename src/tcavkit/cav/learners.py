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
- :func:`hinge_svm` (``cav.method: hinge``, also accepted as ``sgd``): the linear SVM
  objective of tensorflow/tcav's default CAV (scikit-learn's
  ``SGDClassifier(loss="hinge", alpha)``), ``alpha/2 |w|² + 1/n Σ max(0, 1 - y_i f(x_i))``,
  solved exactly in its dual by an interior-point method. It is not stochastic gradient
  descent: ``SGDClassifier`` stops after a few stochastic passes, short of this optimum,
  so tensorflow/tcav's CAVs differ from these by its optimiser's noise (and follow it where
  a score is sensitive to the direction; bench/README.md, "Agreement"). The intercept is
  an extra feature of the size of the data (so it is regularised only lightly) on centred
  data.
- :func:`logistic`: ``alpha/2 |w|² + 1/n Σ log(1 + exp(-y_i f(x_i)))`` with an
  unregularised intercept (scikit-learn's ``LogisticRegression(C=1/(alpha n))``), solved by
  Newton's method in the ``n``-dimensional span of the examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in each learner: reading VERSION (a cache key) needs no torch
    import torch

VERSION = 4  # part of the CAV cache key: bump when a learner's result changes
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
    import torch

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
    max_iter: int = 100,
    gap: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised hinge loss, all problems at once, through its dual.

    Dual: ``min ½ βᵀQβ - Σβ_i`` with ``0 ≤ β_i ≤ C = 1/(alpha n)``, ``Q = (K̃ + B²) ∘ yyᵀ``
    where ``B²`` (the intercept feature) is the mean of ``diag K̃``. Solved by a
    primal-dual interior-point method (Mehrotra's predictor-corrector): each iteration is
    one batched Cholesky factorisation of ``Q + D`` and two solves, and about 10-20
    iterations reach the optimum whatever the conditioning. Every iterate is strictly
    inside the box, so the CAV it stands for has a primal objective and ``β`` a dual one:
    a problem stops once that certified duality gap is below ``gap`` times the primal
    objective (or after ``max_iter`` iterations). Converged problems are frozen and
    padding takes no part in any step, so a batch solves each problem exactly as it would
    be solved alone.

    Args:
        gram: ``(m, n, n)`` Gram matrices of the training rows; y: ``(m, n)`` ±1;
        mask: ``(m, n)`` bool; alpha: regularisation strength.

    Returns:
        coefficients ``(m, n)`` on the raw examples and ``b0`` ``(m,)``.
    """
    import torch

    gram = gram.to(torch.float64)
    y = y.to(torch.float64)
    m, n = y.shape
    valid = mask.to(torch.float64)
    k = centred_gram(gram, mask)
    n_rows = valid.sum(dim=1).clamp_min(1)
    bias_sq = (torch.diagonal(k, dim1=1, dim2=2).sum(dim=1) / n_rows).clamp_min(_EPS)
    q = (k + bias_sq[:, None, None] * valid[:, :, None] * valid[:, None, :]) * (
        y[:, :, None] * y[:, None, :]
    )
    upper = (1.0 / (alpha * n_rows))[:, None] * valid  # C, 0 on padding
    # Solve in units where Q has a unit mean diagonal (β = β' / scale); padding rows get
    # an identity block, a box of 1 and a linear term that makes β' = 1 stationary there.
    scale = (torch.diagonal(q, dim1=1, dim2=2).sum(dim=1) / n_rows).clamp_min(_EPS)
    eye = torch.eye(n, dtype=q.dtype, device=q.device)
    padding = 1 - valid
    q_s = q / scale[:, None, None] + eye * padding[:, None, :]
    box = upper * scale[:, None] + padding
    state = torch.stack([box / 2, box / 2, torch.ones_like(box), torch.ones_like(box)])
    # state: β', the slack box - β', and the multipliers of β' ≥ 0 and of β' ≤ box.
    running = torch.arange(m, device=q.device)
    for _ in range(max_iter):
        beta = state[0, running] / scale[running, None] * valid[running]
        primal, dual = _hinge_objectives(beta, q[running], upper[running], valid[running])
        running = running[primal - dual > gap * primal.abs()]
        if len(running) == 0:
            break
        state[:, running] = _interior_point_step(state[:, running], q_s[running], valid[running])
    signed = state[0] / scale[:, None] * valid * y
    return _uncentre(signed, mask), bias_sq * signed.sum(dim=1)


def _hinge_objectives(
    beta: torch.Tensor, q: torch.Tensor, upper: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal objective of the CAV that a feasible ``β`` ``(m, n)`` stands for, and the
    dual objective of ``β`` (both times ``1/(alpha n)``); the primal is never below the
    dual, and they meet at the optimum."""
    import torch

    margins = torch.einsum("mij,mj->mi", q, beta)  # y_i f(x_i)
    quad = (margins * beta).sum(dim=1)
    primal = 0.5 * quad + (upper * torch.clamp(valid - margins, min=0)).sum(dim=1)
    return primal, beta.sum(dim=1) - 0.5 * quad


def _interior_point_step(state: torch.Tensor, q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """One Mehrotra predictor-corrector step for ``min ½βᵀQβ - Σ_valid β`` in a box.

    Args:
        state: ``(4, m, n)``: β, slack, multipliers z (of β ≥ 0) and w (of slack ≥ 0),
            all positive; padding entries stay as they are.
        q: ``(m, n, n)``, identity on padding.

    Returns:
        the next state ``(4, m, n)``.
    """
    import torch

    beta, slack, z, w = state
    count = 2 * valid.sum(dim=1)
    residual = torch.einsum("mij,mj->mi", q, beta) - valid - z + w  # dual feasibility
    mu = ((beta * z + slack * w) * valid).sum(dim=1) / count
    system = q + torch.diag_embed(z / beta + w / slack)
    factor, _ = torch.linalg.cholesky_ex(system)

    def direction(r_low: torch.Tensor, r_high: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Newton direction for complementarity targets ``r_low``, ``r_high``."""
        rhs = (-residual + r_low / beta - r_high / slack) * valid
        d_beta = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1) * valid
        return d_beta, (r_low - z * d_beta) / beta * valid, (r_high + w * d_beta) / slack * valid

    def longest(d_beta: torch.Tensor, d_z: torch.Tensor, d_w: torch.Tensor) -> torch.Tensor:
        """Largest step in [0, 1] keeping everything non-negative, ``(m, 1)``."""
        steps = torch.ones(len(beta), 1, dtype=beta.dtype, device=beta.device)
        for x, dx in ((beta, d_beta), (slack, -d_beta), (z, d_z), (w, d_w)):
            ratio = torch.where(dx < 0, -x / dx.clamp(max=-1e-300), torch.ones_like(x))
            steps = torch.minimum(steps, ratio.amin(dim=1, keepdim=True))
        return steps

    # Predictor (pure Newton, no centring), then the corrector with Mehrotra's centring.
    a_beta, a_z, a_w = direction(-beta * z, -slack * w)
    step = longest(a_beta, a_z, a_w)
    mu_aff = (
        ((beta + step * a_beta) * (z + step * a_z) + (slack - step * a_beta) * (w + step * a_w))
        * valid
    ).sum(dim=1) / count
    target = ((mu_aff / mu) ** 3 * mu)[:, None]
    d_beta, d_z, d_w = direction(
        target - beta * z - a_beta * a_z, target - slack * w + a_beta * a_w
    )
    step = 0.995 * longest(d_beta, d_z, d_w)
    return torch.stack(
        [beta + step * d_beta, slack - step * d_beta, z + step * d_z, w + step * d_w]
    )


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
    import torch

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
