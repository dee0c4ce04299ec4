"""The measured null of the mean-difference effect: concepts resampled from random images.

Pure math: arrays in, numbers out.

With a mean-difference CAV fitted on all examples, a run's ``effect`` is exactly linear in
the examples: ``mean_i g_i · (mu_C - mu_R) = gbar · mu_C - gbar · mu_R``, where ``gbar``
is the target's mean gradient at the layer. Each example therefore enters the test through
one number, its *projection* ``gbar · a`` (``a``: its activation), and the concept's mean
effect over its runs differs from a random set's (against the same partners) by
``mean(c) - mean(x)``: ``c`` the concept's projections, ``x`` those of every random
image of the (target, layer) (the *pool*, hundreds to thousands of numbers).

Null hypothesis: the concept's ``n`` images are drawn like random images. Statistic::

    z = (mean(c) - mean(x)) / sqrt(max(var(x), var(c)) / n + var(x) / N)

The reference distribution is *measured*, not assumed: ``B`` pseudo-concepts of ``n``
images are drawn from the pool (with replacement: iid draws from the pool, the bootstrap's
stand-in for the population of random images), each studentized the same way, and::

    p = (1 + #{b : |z_b| >= |z|}) / (B + 1)

``B`` is chosen so that the smallest possible p is far below the corrected level
(:func:`draws_for`), so the far tail Holm reads is the pool's own, not a model's. The
concept's own spread enters through ``max(var(x), var(c))``: under the null the two agree
and the max costs almost nothing, but where the random images' projections are skewed and
clustered (a real network on photos: a few crops of one photo lie 4-5 pool sd out), the
pool's spread alone understates how far a set holding several of them can land, and the
test was anti-conservative (EfficientNet-Lite0: family-wise error 82/1000 with the pool's
spread alone, 10/200 with the max; ``bench/stats_study_real.py``). The price is power for
concepts whose images are a mixture (half off-concept at 10 images: the mixture's own
spread caps ``z`` near ``sqrt(n)``).

*Relative pairs* (A against B): ``z = (mean(a) - mean(b)) / sqrt(max(var(x), var(a)) / n_a
+ max(var(x), var(b)) / n_b)``, its reference from two pseudo-concepts of ``n_a`` and
``n_b`` random images.

All draws come from a generator seeded by ``seed`` and the set sizes, so a run is
reproducible to the bit; the same draws serve every (target, layer) with the same pool size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_DRAWS", "ImagePool", "ResampledTest", "draws_for"]

MIN_DRAWS = 10_000
MAX_DRAWS = 2_000_000
_CHUNK = 2_000_000  # projections gathered at once (values, not draws)


def draws_for(rows: int, alpha: float) -> int:
    """Pseudo-concepts to draw for a summary of ``rows`` tests at level ``alpha``: enough
    that the smallest p-value, ``1 / (B + 1)``, is at most a twentieth of Bonferroni's
    ``alpha / rows`` (Holm's first step), within [``MIN_DRAWS``, ``MAX_DRAWS``]."""
    wanted = math.ceil(20 * max(rows, 1) / alpha)
    return int(min(max(wanted, MIN_DRAWS), MAX_DRAWS))


@dataclass(frozen=True)
class ResampledTest:
    """One concept's (or pair's) test against the measured null.

    Attributes:
        p_value: ``(1 + exceedances) / (B + 1)``, in (0, 1].
        z: the studentized difference.
        difference: ``mean(c) - mean(x)`` (``mean(a) - mean(b)`` for a pair), logit units.
        scale: its standard error (the denominator of ``z``).
        null_scale: the standard error under the null (the concept's spread equal to the
            pool's): what :meth:`ImagePool.detectable` multiplies.
    """

    p_value: float
    z: float
    difference: float
    scale: float
    null_scale: float


class ImagePool:
    """The random images' projections of one (target, layer) and their measured null.

    Args:
        values: ``(N,)`` projections of every random image (N >= 2).
        draws: pseudo-concepts drawn per set size (``B``).
        seed: seeds the draws (with the set sizes).
    """

    def __init__(self, values: np.ndarray, draws: int, seed: int = 0):
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)
        if self.values.size < 2 or not np.all(np.isfinite(self.values)):
            raise ValueError("a pool needs at least 2 finite projections")
        self.draws = int(draws)
        self.seed = int(seed)
        self.mean = float(self.values.mean())
        self.var = float(self.values.var(ddof=1))
        self._sorted: dict[tuple[int, ...], np.ndarray] = {}

    # -- the reference distribution -------------------------------------------------------
    def _pseudo(self, n: int, rng: np.random.Generator, count: int) -> tuple[np.ndarray, ...]:
        """Means ``(count,)`` and studentizing variances ``(count,)`` of ``count``
        pseudo-concepts of ``n`` pool images."""
        idx = rng.integers(0, self.values.size, size=(count, n))
        sample = self.values[idx]
        means = sample.mean(axis=1)
        spread = sample.var(axis=1, ddof=1) if n > 1 else np.zeros(count)
        return means, np.maximum(spread, self.var) / n

    def _reference(self, sizes: tuple[int, ...]) -> np.ndarray:
        """Sorted ``|z_b|`` ``(B,)`` of pseudo-concepts (one size) or pairs (two sizes)."""
        if sizes not in self._sorted:
            rng = np.random.default_rng([self.seed, *sizes])
            step = max(1, _CHUNK // sum(sizes))
            parts = []
            for start in range(0, self.draws, step):
                count = min(step, self.draws - start)
                if len(sizes) == 1:
                    means, var = self._pseudo(sizes[0], rng, count)
                    z = (means - self.mean) / np.sqrt(var)
                else:
                    mean_a, var_a = self._pseudo(sizes[0], rng, count)
                    mean_b, var_b = self._pseudo(sizes[1], rng, count)
                    z = (mean_a - mean_b) / np.sqrt(var_a + var_b)
                parts.append(np.abs(z))
            self._sorted[sizes] = np.sort(np.concatenate(parts))
        return self._sorted[sizes]

    def _p(self, sizes: tuple[int, ...], z: float) -> float:
        ref = self._reference(sizes)
        exceed = ref.size - int(np.searchsorted(ref, abs(z) * (1 - 1e-12), side="left"))
        return (1.0 + exceed) / (ref.size + 1.0)

    def critical(self, sizes: tuple[int, ...], level: float) -> float:
        """The smallest ``|z|`` called significant at ``level`` (``inf`` when no p-value
        of ``B`` draws reaches it): p <= level exactly when ``|z| >`` this value."""
        ref = self._reference(sizes)
        allowed = math.floor(level * (ref.size + 1) + 1e-9) - 1  # exceedances allowed
        if allowed < 0:
            return math.inf
        if allowed >= ref.size:
            return 0.0
        return float(ref[ref.size - 1 - allowed])

    # -- tests -----------------------------------------------------------------------------
    def test(self, concept: np.ndarray) -> ResampledTest:
        """A concept's projections ``(n,)`` against the pool."""
        c = np.asarray(concept, dtype=np.float64).reshape(-1)
        n = c.size
        own = float(c.var(ddof=1)) if n > 1 else 0.0
        tail = self.var / self.values.size
        scale = math.sqrt(max(self.var, own) / n + tail)
        difference = float(c.mean()) - self.mean
        z = difference / scale if scale > 0 else 0.0
        null_scale = math.sqrt(self.var / n + tail)
        return ResampledTest(self._p((n,), z), z, difference, scale, null_scale)

    def test_left_out(self, own: np.ndarray, rest: np.ndarray) -> ResampledTest:
        """One set of the pool, ``own`` ``(n,)``, against the rest of it ``(N - n,)`` (a
        negative control), studentized as :meth:`test` does with the rest as the pool, and
        read from this pool's draws, so that every set of a pool shares one reference."""
        own = np.asarray(own, dtype=np.float64).reshape(-1)
        rest = np.asarray(rest, dtype=np.float64).reshape(-1)
        var = float(rest.var(ddof=1))
        spread = max(var, float(own.var(ddof=1)) if own.size > 1 else 0.0)
        scale = math.sqrt(spread / own.size + var / rest.size)
        difference = float(own.mean() - rest.mean())
        z = difference / scale if scale > 0 else 0.0
        null_scale = math.sqrt(var / own.size + var / rest.size)
        return ResampledTest(self._p((own.size,), z), z, difference, scale, null_scale)

    def test_pair(self, a: np.ndarray, b: np.ndarray) -> ResampledTest:
        """Concept A's projections ``(n_a,)`` against concept B's ``(n_b,)``."""
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        var_a = max(self.var, float(a.var(ddof=1)) if a.size > 1 else 0.0)
        var_b = max(self.var, float(b.var(ddof=1)) if b.size > 1 else 0.0)
        scale = math.sqrt(var_a / a.size + var_b / b.size)
        difference = float(a.mean() - b.mean())
        z = difference / scale if scale > 0 else 0.0
        null_scale = math.sqrt(self.var / a.size + self.var / b.size)
        return ResampledTest(self._p((a.size, b.size), z), z, difference, scale, null_scale)

    def detectable(self, sizes: tuple[int, ...], level: float) -> float:
        """The smallest ``|difference|`` a set (or pair) of ``sizes`` whose images spread
        like random ones is called significant at ``level``, in logit units."""
        if len(sizes) == 1:
            null_scale = math.sqrt(self.var / sizes[0] + self.var / self.values.size)
        else:
            null_scale = math.sqrt(self.var / sizes[0] + self.var / sizes[1])
        return self.critical(sizes, level) * null_scale
