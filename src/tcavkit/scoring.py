"""TCAV scores from gradients and CAVs: one matrix product per layer.

For target examples x_i (i = 1..n) and CAVs v_j (j = 1..m) at one layer, the directional
derivative of the class logit along v_j is ``D[i, j] = grads[i] @ v_j``. Then, per CAV:

- ``tcav_score``: the fraction of target examples with ``D[i, j] > 0`` (Kim et al. 2018);
- ``magnitude``: the mean directional derivative ``mean_i D[i, j]`` (in logit units per
  unit of activation along the CAV);
- ``magnitude_ratio``: ``sum_i max(D[i, j], 0) / sum_i |D[i, j]|`` in [0, 1], the share of
  the total absolute derivative that is positive (the "magnitude" TCAV of later papers;
  0.5 when positive and negative derivatives balance; 0.5 when every derivative is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Scores of ``m`` CAVs for one target set at one layer, each ``(m,)``."""

    tcav_score: np.ndarray
    magnitude: np.ndarray
    magnitude_ratio: np.ndarray


def directional_derivatives(grads: np.ndarray, cavs: np.ndarray) -> np.ndarray:
    """``(n, d) @ (m, d).T -> (n, m)``: derivative of each example's logit along each CAV."""
    return np.asarray(grads, dtype=np.float32) @ np.asarray(cavs, dtype=np.float32).T


def tcav_scores(grads: np.ndarray, cavs: np.ndarray) -> Scores:
    """Score every CAV at once.

    Args:
        grads: class-logit gradients of the target examples ``(n, d)``.
        cavs: unit CAV directions ``(m, d)``.
    """
    return scores_from_derivatives(directional_derivatives(grads, cavs))


def scores_from_derivatives(derivs: np.ndarray) -> Scores:
    """Scores of ``m`` CAVs from their directional derivatives ``(n, m)``."""
    derivs = np.asarray(derivs, dtype=np.float64)
    positive = np.clip(derivs, 0.0, None).sum(axis=0)
    total = np.abs(derivs).sum(axis=0)
    ratio = np.divide(positive, total, out=np.full_like(positive, 0.5), where=total > 0)
    return Scores(
        tcav_score=(derivs > 0).mean(axis=0),
        magnitude=derivs.mean(axis=0),
        magnitude_ratio=ratio,
    )
