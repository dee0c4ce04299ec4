"""Statistics for TCAV: tests against the random null, multiple-testing correction, intervals.

Pure math: arrays and DataFrames in, DataFrames out. Nothing here touches files or models.

The input of :func:`summarize` is the *runs* table, one row per CAV scored for a target::

    target, concept, layer, random, run, tcav_score, magnitude, cav_accuracy, is_null

Rows with ``is_null=False`` are real concepts (or relative pairs such as ``"striped vs
dotted"``, handled exactly like concepts): CAV ``concept`` vs random set ``random``, run
index ``run``. Rows with ``is_null=True`` form the null of their (target, layer): a random
set taken as a *pseudo-concept* (``concept`` = that random set's name) trained against
another random set (``random``). Each pseudo-concept normally has several runs. Extra
columns are ignored; ``random``, ``run``, ``magnitude`` and ``cav_accuracy`` are optional
(``run`` orders a pseudo-concept's runs; the two means are NaN when absent).

Per-concept summaries
---------------------
Let ``s_1..s_n`` be the concept's run scores (one per random set it was trained against).

* ``mean``, ``std``: mean and sample standard deviation (ddof=1; 0 for a single run).
* ``ci_low``, ``ci_high``: Student-t interval of the mean at ``confidence``,
  ``mean ± t_{(1+confidence)/2, n-1} · std / sqrt(n)``, clipped to [0, 1]; ``[mean, mean]``
  for a single run. It assumes the runs are independent draws, and it reflects **only the
  variation over random sets** (the concept's images are the same in every run), not what
  another sample of concept images would give. Do not read it as a significance test.
* ``cav_accuracy_mean``, ``magnitude_mean``: means over the concept's runs.

Null distribution and the default test (concept level)
------------------------------------------------------
The runs of one concept reuse the same concept images, so their scores are strongly
correlated, and random-vs-random scores are bimodal (near 0 or 1). A test that treats runs
as independent samples (tensorflow/tcav's per-run t-test) is anti-conservative: it flags a
large share of concepts that are in truth no different from random sets. The default test
is therefore calibrated at the level of the concept.

For a (target, layer) let pseudo-concept ``j = 1..M`` have run scores ``r_j``; its
statistic is ``T_j = mean(r_j)``. The concept's statistic is ``T_C = mean(s)``.

*Like-for-like run counts.* ``T_C`` from ``n`` runs must be compared with ``T_j`` from about
as many runs: a mean over fewer runs varies more, so comparing a 1-run concept with
19-run pseudo-concepts would flag half of all null concepts. When a pseudo-concept has more
runs than the concept, ``T_j`` is the mean of its first ``n`` runs (in ``run`` order; runs
are exchangeable, so this is unbiased). When it has fewer, all its runs are used; the
test is then conservative (``T_C`` varies less than the ``T_j``), never liberal.

``null_mean`` and ``null_std`` are the mean and sample sd (ddof=1) of the ``T_j``.

``"concept-resample"`` (what the default ``"auto"`` runs with mean-difference CAVs)
    The measured null of :mod:`tcavkit.resample`. A mean-difference CAV is fitted on all
    the examples of its two sets, so a run's effect is exactly ``gbar · (mu_C - mu_R)``
    (``gbar``: the target's mean gradient at the layer): linear in the examples. The
    concept's mean effect over its runs then differs from a random set's against the same
    partners by ``mean(c) - mean(x)``, ``c`` the concept's and ``x`` every random image's
    projection on ``gbar`` (the ``projections`` table). That difference is studentized
    by ``sqrt(max(var(x), var(c)) / n + var(x) / N)`` and compared with the same quantity
    for ``B`` pseudo-concepts of ``n`` images resampled from the random images:
    ``p = (1 + #{|z_b| >= |z|}) / (B + 1)``, with ``B`` large enough to reach twenty
    times below Bonferroni's level (:func:`tcavkit.resample.draws_for`). The null's spread
    comes from hundreds or thousands of images instead of about 20 pseudo-concepts, and its
    tail is read from draws, not from a model of it: calibration and power measured on
    three starter CNNs are in the README's statistics section. ``statistic_null_mean`` is
    what a random set scores against the concept's partners; ``statistic_null_std`` the
    standard error of a random set's difference. Relative pairs: ``mean(a) - mean(b)``
    against pairs of pseudo-concepts. Reproducible: the draws are seeded by ``seed`` and
    the set sizes.
``"concept-t"`` (the default for hinge and logistic CAVs, and without projections)
    Null hypothesis: the concept's images are drawn like a random set's, so ``T_C`` is
    exchangeable with the ``T_j``. Prediction-interval t-test, with the concept's own
    spread over its ``n`` runs (``s_C``, sd of its run statistics) added::

        V = sd(T)^2 * (1 + 1/M) + s_C^2 / n
        t = (T_C - mean(T)) / sqrt(V),  two-sided p,
        df = V^2 / ((sd(T)^2 (1 + 1/M))^2 / d_null + (s_C^2 / n)^2 / (n - 1))  (Satterthwaite)
        d_null = 1 / (1/(M - 1) + k/(2M)),  df <= 4 + 6/k when k > 0        (tails, below)

    *Tails.* ``k`` is the sample excess kurtosis (bias-corrected G2) of the ``T_j``,
    clipped at 0 (0 for ``M < 4``). For normal ``T_j`` (``k = 0``) this is the plain
    t-test with ``M - 1`` degrees of freedom. The pseudo-concepts' statistics are often a
    little heavy-tailed, and Holm needs p-values that are right far out in the tail (near
    ``alpha/m``): a normal-theory t then rejects several times too often there. Two
    textbook corrections follow from ``k``: the variance of a sample variance is
    ``sigma^4 (2/(M-1) + k/M)``, so ``sd(T)`` is worth ``d_null`` degrees of freedom
    instead of ``M - 1`` (Box's correction); and a new draw from a distribution with that
    kurtosis has the tails of a t with ``4 + 6/k`` degrees of freedom (the t whose kurtosis
    it is), so ``df`` is capped there. Both only lower ``df``: the interval widens and
    p grows, never the reverse.

    Under the null the concept's own term repeats part of the null's variance, which makes
    the test a little conservative. It is there for concepts that are easy to tell from
    random images: their CAVs separate far more than random sets do, so their effect varies
    far more from run to run (and from one sample of their images to the next) than the
    pseudo-concepts' does; without it, the sign of a significant verdict on such a concept
    could flip between image samples. Measured on simulated starter-CNN experiments
    (``bench/stats_study.py``; 20 images per set, 20 random sets, 100 families of 240 null
    rows, hinge CAVs): the family-wise error after Holm fell from 43/100 to 8/100 with it,
    and to 5/100 with the tail corrections below (3/100 with mean-difference CAVs, 4/100
    with logistic ones); no (target, concept, layer) cell was significant in both
    directions across 12 samples of the images. (Those numbers are of the creatures before
    their texture overlays became class-neutral. Calibration varies with the model: with
    mean-difference CAVs, 400 families on three starter CNNs gave 15, 19 and 30 of 400, and
    1.9-3.4x nominal at alpha/240; see the README's statistics section.)
``"concept-rank"``
    The same ``T``'s, exact and distribution-free::

        p = (1 + #{j : |T_j - mean(T)| >= |T_C - mean(T)|}) / (M + 1).

    Assumes only exchangeability, but ``p >= 1/(M+1)``: with ``M`` pseudo-concepts no
    concept can reach a smaller p (a :class:`~tcavkit.errors.TcavWarning` says so when
    ``1/(M+1) > alpha``).

Which statistic the concept-level tests compare (``statistic``)
-------------------------------------------------------------------
``T_C`` and ``T_j`` above are means over runs of one column of the runs table:

``"effect"`` (default)
    ``magnitude * separation`` per run: the mean directional derivative of the class logit
    along the CAV times the distance between the concept's and the random set's mean
    activations along the CAV, i.e. the first-order change of the logit when an example
    moves from the random mean to the concept mean along the CAV (logit units). For a
    mean-difference CAV it is exactly ``mean_i grad_i · (mu_concept - mu_random)``.
    The separation is measured on all the examples of the two sets, including those
    that trained the CAV, so it carries the CAV's overfit; but a pseudo-concept's CAV
    overfits in the same way, so under the null the comparison stays like for like.
    Measuring it on the held-out examples only (a third of each set) was tried and
    rejected: with 20 images per set that leaves about 7 per side, the effect becomes
    noisier and heavier-tailed, and the far-tail rate at ``alpha/240`` rose from 1.2x to
    2.8x nominal (mean-difference, 100 null families; ``bench/stats_study.py``).
``"tcav_score"``
    The sign fraction itself.
``"magnitude"``
    The mean directional derivative along the unit CAV.

Why ``effect`` is the default: the test is calibrated whatever the statistic (under the
null the concept is exchangeable with the pseudo-concepts), but the sign fraction has
almost no power where the target gradients agree in direction (often the case at late
layers: every CAV then scores 0 or 1). A random set's own quirks then push its ``T_j`` to
0 or 1 just as often as a real concept: the ``T_j`` spread like a uniform variable, and a
concept with score 1.0 gets ``p ≈ 0.09`` at best with 20 random sets. Measured on the
planted starter-creatures CNN (sets of 20 images, 20 random sets): the class colour gets
``p ≈ 0.06–0.10`` with ``tcav_score``, ``0.002–0.1`` with ``magnitude``, and ``1e-15–1e-8``
with ``effect``, while textures stay above 0.05 with all three. The reported ``mean``,
``std`` and interval are always of the TCAV score; ``null_mean``/``null_std`` describe the
``T_j`` of the TCAV score, and ``statistic_*`` columns show the tested statistic.

*Relative pairs* (``kind == "relative"``; concept A against concept B): the runs of a pair
reuse one fixed pair of sets, so its statistic is compared with single random pairs (each
null run taken alone) rather than with pseudo-concept means, which average over many
partners and would make the test liberal. The single random pairs of ``M`` random sets
share those sets (each set takes part in many pairs), so they carry about ``M``
independent units, not one per pair: the t-test uses ``M`` for its prediction factor and
``M - 1`` degrees of freedom.

Classic per-run tests (anti-conservative; for comparison with published numbers)
--------------------------------------------------------------------------------
These treat the concept's runs, and the null runs, as **independent** samples, which
they are not; they flag far more than ``alpha`` of null concepts.

``"ttest"``
    tensorflow/tcav's test: ``scipy.stats.ttest_ind(s, all null run scores)`` with equal
    variances. ``null_mean``/``null_std`` are the mean/sd of the null run scores.
``"welch"``
    The same with ``equal_var=False``.
``"one-sample"``
    The paper's ``scipy.stats.ttest_1samp(s, 0.5)``. ``null_mean = 0.5``; ``null_std`` is
    the sd of the null run scores if there are any, else 0. Needs no null runs.

Degenerate cases (never NaN; NaN is never significant)
-----------------------------------------------------
* Concept tests with ``M < 2`` pseudo-concepts, and ``ttest``/``welch`` with no null run:
  ``p = 1.0`` and a :class:`~tcavkit.errors.TcavWarning` naming the target and layer
  (fix: add random sets so that each can be scored against the others).
* Concept tests with ``sd(T) = 0`` (all pseudo-concepts score the same): ``p = 1.0`` if
  ``T_C`` equals that value, else ``p = 1/(M+1)``, the strongest evidence ``M`` null draws
  can give (the rank test's bound).
* SciPy tests: if SciPy returns NaN (every value identical, so the t statistic is 0/0, or
  too few values, e.g. Welch or one-sample with a single run), ``p = 1.0``; if it returns
  ``p = 0`` or an infinite t (zero variance, different means), SciPy's value is kept.
* ``null_mean``/``null_std`` with no null: 0.5 and 0.0; any sd of fewer than 2 values: 0.

The detectable effect
---------------------
``detectable``: the smallest distance between the tested statistic and its null mean that
the row's test could have called significant at the correction's first level
(``alpha / m`` for Holm, Bonferroni and BH over ``m`` rows; ``alpha`` without correction),
for a concept whose runs (``concept-t``) or images (``concept-resample``) spread like the
null's. A row that is not significant then reads "smaller than about ``detectable``"
rather than "absent". NaN for ``concept-rank`` and the classic tests.

Multiple testing
----------------
The correction runs over **every row of the summary** (all targets, concepts and layers
together): ``"holm"`` (default; family-wise error, any dependence), ``"bonferroni"``,
``"bh"`` (Benjamini-Hochberg false discovery rate; assumes independence or positive
dependence) or ``"none"``. ``significant = p_adjusted <= alpha``, a plain boolean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from scipy import special as _sp

from tcavkit.errors import ConfigError, DataError, TcavWarning
from tcavkit.options import (
    CORRECTIONS,
    STATISTICS,
    TESTS,
    StatsOptions,
    check_choice,
    check_open_unit,
)
from tcavkit.resample import MIN_DRAWS, ImagePool, draws_for
from tcavkit.tables import CORE_SUMMARY_COLUMNS, SUMMARY_COLUMNS

__all__ = [
    "CORE_SUMMARY_COLUMNS",
    "CORRECTIONS",
    "STATISTICS",
    "SUMMARY_COLUMNS",
    "TESTS",
    "ConceptTestResult",
    "adjust_pvalues",
    "chosen_test",
    "concept_test",
    "confidence_interval",
    "detectable_effects",
    "negative_controls",
    "summarize",
]

_CONCEPT_TESTS = ("concept-resample", "concept-t", "concept-rank")
_REQUIRED = ("target", "concept", "layer", "tcav_score", "is_null")
# Scores are fractions in [0, 1]; differences below this are floating-point noise.
_TOL = 1e-12


@dataclass(frozen=True)
class ConceptTestResult:
    """Outcome of one concept's test against its null.

    Attributes:
        p_value: two-sided p-value in [0, 1]; never NaN (see the module's degenerate cases).
        null_mean: mean of the null statistic (``T_j`` for concept tests, null run scores
            for ``ttest``/``welch``, 0.5 for ``one-sample``).
        null_std: its sample sd (ddof=1), 0 for fewer than two values.
        n_null: number of pseudo-concepts ``M``.
        n_null_runs: number of null runs.
        problem: ``None``, or why the test could not be run (``p_value`` is then 1.0).
        scale: the t-test's standard error of the difference to ``null_mean`` (``concept-t``
            only; NaN otherwise), and ``df`` its degrees of freedom: the interval of the
            tested statistic at level ``1 - a`` is ``mean ± t_{1-a/2, df} · scale``.
    """

    p_value: float
    null_mean: float
    null_std: float
    n_null: int
    n_null_runs: int
    problem: str | None = None
    scale: float = math.nan
    df: float = math.nan
    null_scale: float = math.nan
    null_df: float = math.nan

    def __iter__(self):
        """Unpack as ``(p_value, null_mean, null_std)``."""
        return iter((self.p_value, self.null_mean, self.null_std))


# --------------------------------------------------------------------------- helpers


def _sd(x: np.ndarray) -> float:
    """Sample sd (ddof=1); 0 for fewer than two values."""
    return float(np.std(x, ddof=1)) if x.size >= 2 else 0.0


def _excess_kurtosis(x: np.ndarray) -> float:
    """Bias-corrected sample excess kurtosis G2 of ``(k,)`` values (as
    ``scipy.stats.kurtosis(x, bias=False)``), clipped at 0; 0 for fewer than 4 values or
    no spread."""
    k = x.size
    if k < 4:
        return 0.0
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    if m2 <= _TOL**2:
        return 0.0
    g2 = float(np.mean(d**4)) / m2**2 - 3.0
    return max(((k + 1) * g2 + 6.0) * (k - 1) / ((k - 2) * (k - 3)), 0.0)


def _as_scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------- public math


def adjust_pvalues(p: np.ndarray, method: str) -> np.ndarray:
    """Adjust p-values for multiple testing.

    Args:
        p: ``(m,)`` p-values in [0, 1] (no NaN).
        method: ``"holm"`` (step-down, family-wise error), ``"bonferroni"``, ``"bh"``
            (Benjamini-Hochberg) or ``"none"``.

    Returns:
        ``(m,)`` adjusted p-values in the input order: ``>= p``, ``<= 1``, and monotone
        (``p_i <= p_k`` implies ``adjusted_i <= adjusted_k``).

    Raises:
        ConfigError: unknown ``method``.
        ValueError: ``p`` is not 1-D or has values outside [0, 1] or NaN.
    """
    check_choice(method, CORRECTIONS, "correction")
    p = np.asarray(p, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p must be 1-D, got shape {p.shape}")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1] and not be NaN")
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "bh":
        return np.minimum(benjamini_hochberg(p), 1.0)
    # Holm: the k-th smallest (k = 0..m-1) is multiplied by m - k; a running maximum keeps
    # the step-down monotone.
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def confidence_interval(scores: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean run score, clipped to [0, 1].

    Args:
        scores: ``(n,)`` run scores of one concept, n >= 1.
        confidence: coverage in (0, 1).

    Returns:
        ``(low, high)``; ``(mean, mean)`` for one run or zero spread. It reflects variation
        over random sets only, not over concept images.
    """
    check_open_unit(confidence, "confidence")
    s = _as_scores(scores, "scores")
    if s.size == 0:
        raise ValueError("scores is empty")
    return _interval(s, confidence)


def _interval(s: np.ndarray, confidence: float) -> tuple[float, float]:
    mean = float(s.mean())
    sd = _sd(s)
    if s.size < 2 or sd <= _TOL:
        return mean, mean
    half = float(_sp.stdtrit(s.size - 1, 0.5 + confidence / 2)) * sd / math.sqrt(s.size)
    return max(0.0, mean - half), min(1.0, mean + half)


def concept_test(
    concept_scores: np.ndarray,
    null_scores_by_pseudo: Sequence[np.ndarray],
    test: str = "concept-t",
) -> ConceptTestResult:
    """Test one concept's run scores against the random null of its (target, layer).

    Args:
        concept_scores: ``(n,)`` the concept's run scores, n >= 1.
        null_scores_by_pseudo: one ``(n_j,)`` array per pseudo-concept (random set taken as
            a concept) with its run scores, in ``run`` order; may be empty.
        test: one of :data:`TESTS` (see the module docstring for each).

    Returns:
        A :class:`ConceptTestResult`; it unpacks as ``(p_value, null_mean, null_std)``.
        When the null is too small, ``p_value`` is 1.0, ``problem`` says why and a
        :class:`~tcavkit.errors.TcavWarning` is issued.

    Raises:
        ConfigError: unknown ``test``.
        ValueError: empty ``concept_scores``, or NaN/infinite scores.
    """
    check_choice(test, TESTS, "test")
    s = _as_scores(concept_scores, "concept_scores")
    if s.size == 0:
        raise ValueError("concept_scores is empty")
    res = _test_core(s, _Null([_as_scores(r, "null scores") for r in null_scores_by_pseudo]), test)
    if res.problem is not None:
        warnings.warn(
            f"{res.problem}; p-value set to 1.0. Add random sets so that each can be "
            "scored as a pseudo-concept against the others.",
            TcavWarning,
            stacklevel=2,
        )
    return res


class _Null:
    """The null of one (target, layer), with per-run-count statistics cached.

    ``independent``: how many independent units the null rests on, when fewer than its
    entries (single random pairs of ``M`` random sets share those sets: ``M``); it sets
    the t-test's degrees of freedom and prediction factor.
    """

    def __init__(self, by_pseudo: list[np.ndarray], independent: int | None = None):
        self.by_pseudo = [r for r in by_pseudo if r.size > 0]
        self.m = len(self.by_pseudo)
        self.independent = min(independent, self.m) if independent is not None else self.m
        self.all_runs = np.concatenate(self.by_pseudo) if self.by_pseudo else np.empty(0)
        self._csum = [np.cumsum(r) for r in self.by_pseudo]
        self._t_cache: dict[int, np.ndarray] = {}
        self._kurtosis_cache: dict[int, float] = {}
        self._run_stats: tuple[float, float] | None = None

    def t_stats(self, n: int) -> np.ndarray:
        """``(M,)`` the ``T_j``, each the mean of the pseudo-concept's first ``n`` runs."""
        if n not in self._t_cache:
            self._t_cache[n] = np.array(
                [c[min(n, c.size) - 1] / min(n, c.size) for c in self._csum], dtype=float
            )
        return self._t_cache[n]

    def excess_kurtosis(self, n: int) -> float:
        """Sample excess kurtosis (bias-corrected G2) of the ``T_j``, clipped at 0; 0 when
        there are fewer than 4 of them (too few to say anything about the tails)."""
        if n not in self._kurtosis_cache:
            self._kurtosis_cache[n] = _excess_kurtosis(self.t_stats(n))
        return self._kurtosis_cache[n]

    def run_stats(self) -> tuple[float, float]:
        """Mean (0.5 if none) and sd of all null run scores."""
        if self._run_stats is None:
            r = self.all_runs
            self._run_stats = (float(r.mean()) if r.size else 0.5, _sd(r))
        return self._run_stats


def _test_core(s: np.ndarray, null: _Null, test: str) -> ConceptTestResult:
    m, n_null_runs = null.m, int(null.all_runs.size)
    if test in _CONCEPT_TESTS:
        t_null = null.t_stats(s.size)
        null_mean = float(t_null.mean()) if m else 0.5
        null_std = _sd(t_null)
        if m < 2:
            problem = f"only {m} random pseudo-concept(s) in the null (at least 2 needed)"
            return ConceptTestResult(1.0, null_mean, null_std, m, n_null_runs, problem)
        dev = abs(float(s.mean()) - null_mean)
        if test == "concept-rank":
            extreme = np.abs(t_null - null_mean) >= dev - _TOL
            p = (1.0 + float(extreme.sum())) / (m + 1)
        elif null_std <= _TOL:
            p = 1.0 if dev <= _TOL else 1.0 / (m + 1)
        else:
            # The null's spread, plus the spread of the concept's own runs: a concept unlike
            # random images can vary far more from run to run than pseudo-concepts do.
            k = max(null.independent, 2)
            from_null = null_std**2 * (1.0 + 1.0 / k)
            own = float(np.var(s, ddof=1)) / s.size if s.size > 1 else 0.0
            scale = math.sqrt(from_null + own)
            # Heavy tails (see "Tails" in the module docstring): the null's spread is then
            # estimated from fewer effective values, and a new draw lands far out more often.
            kappa = null.excess_kurtosis(s.size)
            null_df = 1.0 / (1.0 / (k - 1) + kappa / (2.0 * k))
            df = (from_null + own) ** 2 / (
                from_null**2 / null_df + (own**2 / (s.size - 1) if s.size > 1 else 0.0)
            )
            null_only_df = null_df
            if kappa > 0:
                df = min(df, 4.0 + 6.0 / kappa)
                null_only_df = min(null_df, 4.0 + 6.0 / kappa)
            p = float(2.0 * _sp.stdtr(df, -dev / scale))
            return ConceptTestResult(
                min(p, 1.0),
                null_mean,
                null_std,
                m,
                n_null_runs,
                scale=scale,
                df=df,
                null_scale=math.sqrt(from_null),
                null_df=null_only_df,
            )
        return ConceptTestResult(min(p, 1.0), null_mean, null_std, m, n_null_runs)

    run_mean, run_sd = null.run_stats()
    if test == "one-sample":
        from scipy import stats as _st  # heavy to import: only for the classic tests

        p = _scipy_p(lambda: _st.ttest_1samp(s, 0.5))
        return ConceptTestResult(p, 0.5, run_sd, m, n_null_runs)
    if n_null_runs == 0:
        return ConceptTestResult(1.0, run_mean, run_sd, m, 0, "no random-vs-random null runs")
    equal_var = test == "ttest"
    from scipy import stats as _st

    p = _scipy_p(lambda: _st.ttest_ind(s, null.all_runs, equal_var=equal_var))
    return ConceptTestResult(p, run_mean, run_sd, m, n_null_runs)


def _scipy_p(run) -> float:
    """p-value of a SciPy t-test; NaN (0/0: identical values, or too few) becomes 1.0."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(run().pvalue)
    return 1.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


# --------------------------------------------------------------------------- summary


def summarize(
    runs: pd.DataFrame,
    *,
    test: str = "auto",
    alpha: float = 0.05,
    correction: str = "holm",
    confidence: float = 0.95,
    statistic: str = "effect",
    projections: pd.DataFrame | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per non-null (target, concept, layer): scores, interval, test, correction.

    Args:
        runs: the runs table (see the module docstring); one row per CAV scored.
        test: one of :data:`TESTS`; default ``"auto"`` (``concept-resample`` with
            ``projections`` and the effect, else ``concept-t``; see :func:`chosen_test`).
        alpha: significance level in (0, 1), applied to the adjusted p-values.
        correction: one of :data:`CORRECTIONS`, applied over all rows of the summary.
        confidence: coverage of the interval of the mean, in (0, 1).
        statistic: the run column the concept-level tests compare (see "Which statistic"
            in the module docstring); the classic tests always use ``tcav_score``.
        projections: every example's projection on its target's mean gradient (columns
            ``target, layer, set, projection``, one row per example, sets in their example
            order): what ``concept-resample`` tests (:mod:`tcavkit.resample`). Give it only
            when each run's ``effect`` is linear in the examples (mean-difference CAVs);
            ``auto`` then chooses ``concept-resample`` for ``statistic="effect"``.
        seed: seeds ``concept-resample``'s draws.

    Returns:
        A DataFrame with columns :data:`SUMMARY_COLUMNS`, rows in order of first
        appearance in ``runs``. ``n_null`` is the number of pseudo-concepts and
        ``n_null_runs`` the number of null runs of the row's (target, layer). No statistic
        column is NaN; ``significant`` is boolean.

    Raises:
        ConfigError: unknown test or correction, or alpha/confidence out of range.
        DataError: the table lacks a required column, or has NaN scores or ``is_null``.
    """
    StatsOptions(test, alpha, correction, confidence, statistic)  # validates the settings
    test = chosen_test(test, statistic, projections is not None)
    if test not in _CONCEPT_TESTS:
        statistic = "tcav_score"
    missing = [c for c in (*_REQUIRED, statistic) if c not in runs.columns]
    if missing:
        raise DataError(
            f"the runs table lacks column(s) {', '.join(missing)}; it has: "
            f"{', '.join(map(str, runs.columns))}"
        )
    is_null = runs["is_null"]
    if is_null.dtype != bool and not is_null.isin([True, False]).all():
        raise DataError(
            "column 'is_null' of the runs table must hold only True/False (or 1/0); found "
            f"{sorted(map(repr, set(is_null[~is_null.isin([True, False])])))[:5]}"
        )
    score = pd.to_numeric(runs["tcav_score"], errors="coerce")
    if not np.all(np.isfinite(score.to_numpy(dtype=float))):
        bad = runs.loc[~np.isfinite(score.to_numpy(dtype=float))].iloc[0]
        raise DataError(
            f"tcav_score is missing or not finite for target {bad['target']!r}, concept "
            f"{bad['concept']!r}, layer {bad['layer']!r}; rerun or drop those runs"
        )

    df = pd.DataFrame(
        {
            "target": runs["target"].to_numpy(),
            "concept": runs["concept"].to_numpy(),
            "layer": runs["layer"].to_numpy(),
            "tcav_score": score.to_numpy(dtype=float),
            "is_null": runs["is_null"].astype(bool).to_numpy(),
            "run": runs["run"].to_numpy() if "run" in runs.columns else np.zeros(len(runs)),
            "cav_accuracy": _optional(runs, "cav_accuracy"),
            "magnitude": _optional(runs, "magnitude"),
            "stat": pd.to_numeric(runs[statistic], errors="coerce").to_numpy(dtype=float),
            "kind": runs["kind"].to_numpy() if "kind" in runs.columns else "concept",
            "random": runs["random"].to_numpy() if "random" in runs.columns else "",
        }
    )
    if not np.all(np.isfinite(df["stat"].to_numpy())):
        raise DataError(f"column {statistic!r} of the runs table has missing or non-finite values")
    real = df[~df["is_null"]]
    null = df[df["is_null"]].sort_values("run", kind="stable")

    # The null of each (target, layer): one score array per pseudo-concept.
    # Scores describe the null (null_mean, null_std); the statistic column is tested. A
    # relative pair is one fixed pair of sets, so its null is single random pairs.
    null_by_tl: dict[tuple, tuple[_Null, _Null, _Null]] = {}
    for (t, layer), g in null.groupby(["target", "layer"], sort=False, dropna=False):
        by_concept = g.groupby("concept", sort=False, dropna=False)
        n_sets = by_concept.ngroups
        null_by_tl[(t, layer)] = (
            _Null([sc.to_numpy() for _, sc in by_concept["tcav_score"]]),
            _Null([sc.to_numpy() for _, sc in by_concept["stat"]]),
            _Null([np.array([v]) for v in g["stat"].to_numpy()], independent=n_sets),
        )
    no_null = (_Null([]), _Null([]), _Null([]))
    n_rows = real.groupby(["target", "concept", "layer"], sort=False, dropna=False).ngroups
    first_level = alpha / n_rows if correction != "none" and n_rows else alpha
    measured = (
        _measured_nulls(projections, null, draws_for(n_rows, alpha), seed)
        if test == "concept-resample"
        else {}
    )

    rows = []
    halves = []  # per row: level -> half-width of the tested statistic's interval
    warned: set[tuple] = set()
    all_or_nothing: list[str] = []
    for (t, c, layer), g in real.groupby(["target", "concept", "layer"], sort=False, dropna=False):
        s = g["tcav_score"].to_numpy()
        score_null, stat_null, pair_null = null_by_tl.get((t, layer), no_null)
        relative = bool((g["kind"] == "relative").any())
        if test == "concept-resample":
            res, half, detectable = _resampled_row(
                measured, t, c, layer, g, relative, stat_null, first_level
            )
        else:
            res = _test_core(g["stat"].to_numpy(), pair_null if relative else stat_null, test)
            half = partial(_t_half, res)
            detectable = _t_half(res, first_level, null_only=True)
        halves.append(half)
        described = _test_core(s, score_null, "concept-t" if test in _CONCEPT_TESTS else test)
        if (t, layer) not in warned:
            warned.add((t, layer))
            _warn_null(res, t, layer, test, alpha)
            share = _all_or_nothing_share(score_null.all_runs)
            if share >= ALL_OR_NOTHING:
                all_or_nothing.append(f"{t!r} at {layer!r} ({share:.0%})")
        lo, hi = _interval(s, confidence)
        rows.append(
            {
                "target": t,
                "concept": c,
                "layer": layer,
                "n_runs": int(s.size),
                "mean": float(s.mean()),
                "std": _sd(s),
                "ci_low": lo,
                "ci_high": hi,
                "null_mean": described.null_mean,
                "null_std": described.null_std,
                "p_value": res.p_value,
                "cav_accuracy_mean": _mean_or_nan(g["cav_accuracy"]),
                "magnitude_mean": _mean_or_nan(g["magnitude"]),
                "n_null": res.n_null,
                "n_null_runs": res.n_null_runs,
                "test": test,
                "statistic": statistic,
                "statistic_mean": float(g["stat"].mean()),
                "statistic_null_mean": res.null_mean,
                "statistic_null_std": res.null_std,
                "detectable": detectable,
            }
        )

    _warn_all_or_nothing(all_or_nothing, statistic)
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    p = out["p_value"].to_numpy(dtype=float)
    out["p_adjusted"] = adjust_pvalues(p, correction)
    out["significant"] = (out["p_adjusted"].to_numpy(dtype=float) <= alpha).astype(bool)
    low, high = _adjusted_interval(out, halves, alpha)
    out["statistic_low"], out["statistic_high"] = low, high
    out["detectable"] = out["detectable"].astype(float)
    above = out["statistic_mean"].to_numpy(float) >= out["statistic_null_mean"].to_numpy(float)
    out["direction"] = np.where(out["significant"], np.where(above, "positive", "negative"), "none")
    out["n_runs"] = out["n_runs"].astype(int)
    out["n_null"] = out["n_null"].astype(int)
    out["n_null_runs"] = out["n_null_runs"].astype(int)
    for col in ("mean", "std", "ci_low", "ci_high", "null_mean", "null_std", "p_value"):
        out[col] = out[col].astype(float)
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def negative_controls(
    runs: pd.DataFrame,
    *,
    test: str = "auto",
    alpha: float = 0.05,
    correction: str = "holm",
    confidence: float = 0.95,
    statistic: str = "effect",
    projections: pd.DataFrame | None = None,
    seed: int = 0,
) -> dict[str, object] | None:
    """Built-in negative controls: every random set, tested as if it were a concept with
    the same test against the pseudo-concepts of the *other* random sets (leave one out),
    per (target, layer), and corrected over all controls together. Random sets are not
    concepts, so about ``alpha`` of them at p <= alpha, and (with Holm or Bonferroni) none
    after correction, is what a calibrated test gives on this model and data.

    With ``concept-resample`` each random set's projections are tested against the other
    random sets' images, its p-value read from draws of the whole pool (one reference per
    pool instead of one per set; the pool without one set of twenty differs little).

    Returns ``{"tested", "significant", "at_alpha", "alpha", "correction", "test"}``, or
    ``None`` for the classic tests or with fewer than 3 random sets per (target, layer).
    """
    StatsOptions(test, alpha, correction, confidence, statistic)
    test = chosen_test(test, statistic, projections is not None)
    if test not in _CONCEPT_TESTS or statistic not in runs.columns:
        return None
    null = runs[runs["is_null"].astype(bool)].sort_values("run", kind="stable")
    groups = [g for _, g in null.groupby(["target", "layer"], sort=False, dropna=False)]
    arrays = projection_arrays(projections) if test == "concept-resample" else {}
    tested = sum(g["concept"].nunique() for g in groups)
    draws = max(MIN_DRAWS, draws_for(tested, alpha) // 4)
    p_values = []
    for g in groups:
        if test == "concept-resample":
            by_set = arrays.get((g["target"].iloc[0], g["layer"].iloc[0]), {})
            names = list(dict.fromkeys(g["concept"]))
            if len(names) < 3 or any(n not in by_set for n in names):
                continue
            pool = ImagePool(np.concatenate([by_set[n] for n in names]), draws, seed)
            for j, name in enumerate(names):
                rest = np.concatenate([by_set[n] for k, n in enumerate(names) if k != j])
                p_values.append(pool.test_left_out(by_set[name], rest).p_value)
            continue
        by_set = [
            pd.to_numeric(v, errors="coerce").to_numpy(float)
            for _, v in g.groupby("concept", sort=False, dropna=False)[statistic]
        ]
        if len(by_set) < 3:
            continue
        for j, own in enumerate(by_set):
            others = _Null([v for k, v in enumerate(by_set) if k != j])
            p_values.append(_test_core(own, others, test).p_value)
    if not p_values:
        return None
    p = np.array(p_values)
    return {
        "tested": int(p.size),
        "significant": int((adjust_pvalues(p, correction) <= alpha).sum()),
        "at_alpha": int((p <= alpha).sum()),
        "alpha": alpha,
        "correction": correction,
        "test": test,
    }


def _adjusted_interval(
    out: pd.DataFrame, halves: list[Callable[[float], float]], alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The interval of the tested statistic that agrees with the corrected test: at level
    ``1 - alpha * p / p_adjusted`` per row (the level the correction tests that row at),
    so that it excludes the null mean exactly when the row is significant. ``halves``:
    each row's half-width at a level. NaN where the test gives no standard error
    (``concept-rank`` and the classic tests)."""
    p = out["p_value"].to_numpy(float)
    p_adj = out["p_adjusted"].to_numpy(float)
    level = np.where(
        p_adj > 0, alpha * np.divide(p, p_adj, where=p_adj > 0, out=np.ones_like(p)), alpha
    )
    half = np.array([h(float(v)) for h, v in zip(halves, level, strict=True)], dtype=float)
    mean = out["statistic_mean"].to_numpy(float)
    return mean - half, mean + half


def _t_half(res: ConceptTestResult, level: float, null_only: bool = False) -> float:
    """Half-width of the t interval at ``level`` (NaN without a standard error); with
    ``null_only``, of the null's spread alone (the detectable effect)."""
    scale, df = (res.null_scale, res.null_df) if null_only else (res.scale, res.df)
    if not (np.isfinite(scale) and np.isfinite(df)):
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(t_isf(np.clip(level, 1e-300, 1.0) / 2, df)) * scale


def chosen_test(test: str, statistic: str, linear: bool) -> str:
    """The test ``summarize`` runs for the setting ``test``: ``auto`` is
    ``concept-resample`` when the runs' effect is linear in the examples (``linear``: the
    projections are given) and the statistic is ``effect``, else ``concept-t``.

    Raises:
        ConfigError: ``concept-resample`` where it cannot run.
    """
    resample = linear and statistic == "effect"
    if test == "auto":
        return "concept-resample" if resample else "concept-t"
    if test == "concept-resample" and not resample:
        raise ConfigError(
            "stats.test: concept-resample needs statistic 'effect' and mean-difference CAVs "
            "(cav.method: mean-difference), whose effect is linear in the examples; use "
            "test: auto or concept-t"
        )
    return test


def detectable_effects(summary: pd.DataFrame) -> list[dict[str, object]]:
    """Per (target, layer): the smallest difference of the tested statistic from its null
    mean that the run could have called significant (``detectable``, at the first level of
    the correction), as ``{"target", "layer", "statistic", "detectable", "min", "max"}``
    records (``min``/``max``: over the rows, whose set sizes may differ; ``detectable``
    their median). Rows without one (``concept-rank``, classic tests) are left out."""
    out: list[dict[str, object]] = []
    if summary.empty:
        return out
    for (t, layer), g in summary.groupby(["target", "layer"], sort=False, dropna=False):
        values = g["detectable"].to_numpy(float)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        out.append(
            {
                "target": t,
                "layer": layer,
                "statistic": str(g["statistic"].iloc[0]),
                "detectable": float(np.median(values)),
                "min": float(values.min()),
                "max": float(values.max()),
            }
        )
    return out


def projection_arrays(projections: pd.DataFrame) -> dict[tuple, dict[str, np.ndarray]]:
    """``{(target, layer): {set: (n,) projections}}`` from the long projections table."""
    out: dict[tuple, dict[str, np.ndarray]] = {}
    values = pd.to_numeric(projections["projection"], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(values)):
        raise DataError("the projections table has missing or non-finite values")
    frame = projections.assign(projection=values)
    for (t, layer, name), g in frame.groupby(["target", "layer", "set"], sort=False):
        out.setdefault((t, layer), {})[name] = g["projection"].to_numpy(float)
    return out


def _measured_nulls(
    projections: pd.DataFrame | None, null: pd.DataFrame, draws: int, seed: int
) -> dict[tuple, tuple[ImagePool, dict[str, np.ndarray]]]:
    """Per (target, layer): the pool of its random sets' projections (the sets of its null
    rows) and every set's projections."""
    assert projections is not None
    arrays = projection_arrays(projections)
    out = {}
    for (t, layer), g in null.groupby(["target", "layer"], sort=False, dropna=False):
        by_set = arrays.get((t, layer), {})
        names = list(dict.fromkeys([*g["concept"], *g["random"]]))
        missing = [n for n in names if n not in by_set]
        if missing:
            raise DataError(
                f"the projections table lacks random set(s) {missing[:3]} at target {t!r}, "
                f"layer {layer!r}; run again to compute them"
            )
        pool = ImagePool(np.concatenate([by_set[n] for n in names]), draws, seed)
        out[(t, layer)] = (pool, by_set)
    return out


def _resampled_row(
    measured: dict[tuple, tuple[ImagePool, dict[str, np.ndarray]]],
    t,
    concept,
    layer,
    g: pd.DataFrame,
    relative: bool,
    stat_null: _Null,
    first_level: float,
) -> tuple[ConceptTestResult, Callable[[float], float], float]:
    """One row's ``concept-resample`` test, its interval's half-width at a level, and its
    detectable effect at ``first_level``."""
    if (t, layer) not in measured:
        res = ConceptTestResult(1.0, 0.0, 0.0, 0, 0, "no random-vs-random null runs")
        return res, lambda level: math.nan, math.nan
    pool, by_set = measured[(t, layer)]
    partners = [str(r) for r in g["random"]]
    if relative:
        first = str(concept)[: -len(f" vs {partners[0]}")]
        found = [by_set.get(first), by_set.get(partners[0])]
    else:
        found = [by_set.get(str(concept))]
    if any(v is None for v in found):
        raise DataError(
            f"the projections table lacks the examples of {concept!r} at target {t!r}, "
            f"layer {layer!r}; run again to compute them"
        )
    if relative:
        outcome = pool.test_pair(found[0], found[1])
        sizes: tuple[int, ...] = (found[0].size, found[1].size)
    else:
        outcome = pool.test(found[0])
        sizes = (found[0].size,)
    res = ConceptTestResult(
        outcome.p_value,
        float(g["stat"].mean()) - outcome.difference,  # what a random set scores
        outcome.null_scale,  # the spread of a random set's statistic about the null mean
        stat_null.m,
        int(stat_null.all_runs.size),
        scale=outcome.scale,
    )

    def half(level: float) -> float:
        return pool.critical(sizes, level) * outcome.scale

    return res, half, pool.detectable(sizes, first_level)


def t_isf(q: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Student's t inverse survival function: ``scipy.stats.t.isf(q, df)``, value for value
    (scipy computes it as ``-stdtrit(df, q)`` for ``df > 0`` and ``0 < q <= 1``, ``inf`` at
    ``q = 0``, NaN otherwise), without importing ``scipy.stats``, which takes longer than a
    whole run read from the cache."""
    q, df = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(df, dtype=float))
    valid = (df > 0) & (q > 0) & (q <= 1)
    value = -_sp.stdtrit(np.where(valid, df, 1.0), np.where(valid, q, 0.5))
    return np.where(valid, value, np.where((df > 0) & (q == 0), np.inf, np.nan))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values ``(m,)`` of ``p`` ``(m,)`` in [0, 1]:
    ``scipy.stats.false_discovery_control(p, method="bh")``, by the same operations in the
    same order (so the same bits), without importing ``scipy.stats``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m <= 1:
        return p.copy()
    order = np.argsort(p)
    ps = p[order] * (m / np.arange(1, m + 1, dtype=float))
    np.minimum.accumulate(ps[::-1], out=ps[::-1])
    adjusted = np.empty_like(ps)
    adjusted[order] = ps
    return np.clip(adjusted, 0.0, 1.0)


def _optional(runs: pd.DataFrame, col: str) -> np.ndarray:
    if col not in runs.columns:
        return np.full(len(runs), np.nan)
    return pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float)


def _mean_or_nan(x: pd.Series) -> float:
    v = x.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


ALL_OR_NOTHING = 0.9
"""Share of null CAVs scoring exactly 0 or 1 from which a (target, layer) is warned about."""


def _all_or_nothing_share(null_scores: np.ndarray) -> float:
    """The share of null CAVs scoring exactly 0 or 1 (0 without null runs)."""
    if null_scores.size == 0:
        return 0.0
    return float(np.mean((null_scores <= _TOL) | (null_scores >= 1 - _TOL)))


def _warn_all_or_nothing(where: list[str], statistic: str) -> None:
    """One warning naming every (target, layer) at which nearly every random CAV scores
    exactly 0 or 1: the class's gradients point the same way there, and the sign fraction
    of any direction is all or nothing."""
    if not where:
        return
    advice = (
        f"the test compares the {statistic} instead, which keeps its power"
        if statistic != "tcav_score"
        else "test statistic='effect' instead"
    )
    warnings.warn(
        f"nearly every random CAV scores exactly 0 or 1 for target {', '.join(where)}: the "
        "class's gradients point the same way there, so the TCAV score of any direction is "
        f"all or nothing and cannot tell a concept from random sets; {advice}",
        TcavWarning,
        stacklevel=3,
    )


def _warn_null(res: ConceptTestResult, target, layer, test: str, alpha: float) -> None:
    where = f"target {target!r}, layer {layer!r}"
    if res.problem is not None:
        warnings.warn(
            f"{where}: {res.problem}; its p-values are set to 1.0 (nothing can be "
            "significant). Add random sets (e.g. random500_0 ... random500_9) so that each "
            "can be scored as a pseudo-concept against the others.",
            TcavWarning,
            stacklevel=3,
        )
    elif test == "concept-rank" and 1.0 / (res.n_null + 1) > alpha:
        warnings.warn(
            f"{where}: concept-rank with {res.n_null} pseudo-concepts cannot give p below "
            f"1/{res.n_null + 1} = {1.0 / (res.n_null + 1):.3g} > alpha = {alpha}; add "
            "random sets or use test='concept-t'.",
            TcavWarning,
            stacklevel=3,
        )
