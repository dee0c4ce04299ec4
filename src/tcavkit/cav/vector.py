"""A concept activation vector: a linear classifier between concept and random activations.

A CAV's direction is unit-norm and points from the negative (random) set toward the
concept; its intercept is in the same units, its accuracy measured on a held-out split.
A :class:`CavTask` names one CAV to train. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CAV:
    """A trained concept activation vector.

    Attributes:
        direction: ``(d,)`` unit vector pointing toward the concept.
        intercept: the decision function is ``x @ direction + intercept`` (> 0: concept).
        accuracy: held-out accuracy in [0, 1].
        separation: distance between the positive and negative class means along
            ``direction`` (all examples of both sets), in activation units.
    """

    direction: np.ndarray
    intercept: float
    accuracy: float
    separation: float = 0.0

    def flipped(self) -> CAV:
        """The same classifier with the classes swapped (the separation is unchanged)."""
        return CAV(-self.direction, -self.intercept, self.accuracy, self.separation)


@dataclass(frozen=True)
class CavTask:
    """One CAV to train: ``positive`` against ``negative``; ``seed`` fixes its split."""

    positive: str
    negative: str
    seed: int
