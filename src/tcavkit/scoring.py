"""TCAV scores from gradients and CAVs, and the definition of every per-run column.

For target examples x_i (i = 1..n) and CAVs v_j (j = 1..m) at one layer, the directional
derivative of the class logit along v_j is ``D[i, j] = grads[i] @ v_j``. Then, per CAV:

- ``tcav_score``: the fraction of target examples with ``D[i, j] > 0`` (Kim et al. 2018);
- ``magnitude``: the mean directional derivative ``mean_i D[i, j]`` (in logit units per
  unit of activation along the CAV);
- ``magnitude_ratio``: ``sum_i max(D[i, j], 0) / sum_i |D[i, j]|`` in [0, 1], the share of
  the total absolute derivative that is positive (the "magnitude" TCAV of later papers;
  0.5 when positive and negative derivatives balance; 0.5 when every derivative is 0).

With the CAV's ``separation`` (the distance between the concept's and the negative set's
mean activations along the CAV, from training):

- ``effect``: ``magnitude * separation``, the first-order change of the logit when an
  example moves from the negative mean to the concept mean along the CAV (logit units).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

VERSION = 1
"""Part of the key of cached scores (:meth:`tcavkit.pipeline.keys.KeyMaker.cav_scores`):
bump when a score's definition, or how the derivatives are computed, changes."""


@dataclass(frozen=True)
class Scores:
    """Scores of ``m`` CAVs for one target set at one layer, each ``(m,)`` (or ``(k, m)``
    for ``k`` targets in :class:`LayerScores`)."""

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


def effect(magnitude: np.ndarray, separation: np.ndarray) -> np.ndarray:
    """The per-run ``effect`` column: ``magnitude * separation`` (see the module)."""
    return magnitude * separation


@dataclass(frozen=True)
class LayerScores:
    """Scores of ``m`` CAVs of one layer for ``k`` targets, along each CAV and along its
    flip (a null CAV of two random sets scores both orientations): fields ``(k, m)``."""

    along: Scores
    flipped: Scores

    def to_array(self) -> np.ndarray:
        """The scores as one float64 array ``(2, 3, k, m)``: along, flipped × the fields."""
        return np.stack(
            [
                np.stack([getattr(s, f.name) for f in fields(Scores)])
                for s in (self.along, self.flipped)
            ]
        ).astype(np.float64, copy=False)

    @classmethod
    def from_array(cls, array: np.ndarray) -> LayerScores:
        """The inverse of :meth:`to_array` (values copied out of ``array``)."""
        along, flipped = (
            Scores(*(np.array(part[i]) for i in range(len(fields(Scores))))) for part in array
        )
        return cls(along, flipped)

    @classmethod
    def empty(cls, k: int, m: int) -> LayerScores:
        def block() -> Scores:
            return Scores(*(np.empty((k, m)) for _ in fields(Scores)))

        return cls(block(), block())

    def fill(self, target: int, start: int, derivs: np.ndarray) -> None:
        """Score CAVs ``start:start+b`` for target ``target`` from its directional
        derivatives ``(n, b)``, in both orientations."""
        stop = start + derivs.shape[1]
        for into, sign in ((self.along, 1.0), (self.flipped, -1.0)):
            found = scores_from_derivatives(sign * derivs)
            for f in fields(Scores):
                getattr(into, f.name)[target, start:stop] = getattr(found, f.name)

    def pick(self, target: int, index: np.ndarray, flip: np.ndarray) -> Scores:
        """Target ``target``'s scores of CAVs ``index`` ``(r,)``, each flipped where
        ``flip`` ``(r,)`` says: one value per runs-table row."""
        return Scores(
            *(
                np.where(
                    flip,
                    getattr(self.flipped, f.name)[target, index],
                    getattr(self.along, f.name)[target, index],
                )
                for f in fields(Scores)
            )
        )
