"""Concept activation vectors: linear classifiers between concept and random activations.

Every learner returns a unit-norm direction pointing from the negative (random) set toward
the concept, the intercept in the same units, and the accuracy on a held-out split.

Classes are balanced first (the larger class is subsampled to the size of the smaller),
then each class is split the same way: ``round(test_fraction * n)`` examples of each class
are held out (at least one when ``test_fraction > 0``). With ``test_fraction = 0`` the
accuracy is measured on the training examples. All randomness comes from ``seed``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tcavkit.errors import ConfigError, DataError

CavMethod = Literal["sgd", "logistic", "mean-difference"]
METHODS: tuple[str, ...] = ("sgd", "logistic", "mean-difference")


@dataclass(frozen=True)
class CavOptions:
    """How CAVs are trained.

    Attributes:
        method: ``sgd``: the linear SVM of tensorflow/tcav's default CAV (hinge loss, the
            objective of scikit-learn's ``SGDClassifier``), solved to optimality in batch;
            ``logistic``: L2 logistic regression; ``mean-difference``: closed form
            (FastCAV). See :mod:`tcavkit.learners`.
        alpha: L2 regularisation strength (the objective is ``alpha/2 |w|² + mean loss``,
            as scikit-learn's ``SGDClassifier(alpha)`` and ``LogisticRegression(C=1 /
            (alpha * n_train))``). Default 0.01.
        test_fraction: share of each class held out to measure accuracy. Default 1/3.
        max_iter: cap on the solver's iterations (``sgd`` and ``logistic``: at
            most 100).
    """

    method: CavMethod = "sgd"
    alpha: float = 0.01
    test_fraction: float = 0.33
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown cav.method {self.method!r}; choose one of {METHODS}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"cav.test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.alpha <= 0:
            raise ConfigError(f"cav.alpha must be positive, got {self.alpha}")


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


@functools.lru_cache(maxsize=1 << 16)
def pair_seed(seed: int, *names: str) -> int:
    """A stable 32-bit seed derived from the experiment seed and names (not Python's hash)."""
    digest = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def balanced_split(
    n_pos: int, n_neg: int, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Balanced, stratified train/test indices.

    Returns:
        (pos_train, pos_test, neg_train, neg_test) index arrays into each class.
    """
    n = min(n_pos, n_neg)
    if n < 2:
        raise DataError(f"a CAV needs at least 2 examples per class, got {n_pos} and {n_neg}")
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_test = min(n_test, n - 1)
    pos = rng.permutation(n_pos)[:n]
    neg = rng.permutation(n_neg)[:n]
    return pos[n_test:], pos[:n_test], neg[n_test:], neg[:n_test]


def train_cav(
    pos: np.ndarray, neg: np.ndarray, options: CavOptions = CavOptions(), seed: int = 0
) -> CAV:
    """Train one CAV (the experiment trains many at once with the same code).

    Args:
        pos: concept activations ``(n_pos, d)``.
        neg: negative (random or second concept) activations ``(n_neg, d)``.
        options: the learner and its settings.
        seed: fixes balancing, the split and the learner.
    """
    import torch

    from tcavkit.cav_batch import CavTask, train_cav_batch

    arrays = {
        "positive": torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float32)),
        "negative": torch.from_numpy(np.ascontiguousarray(neg, dtype=np.float32)),
    }
    sizes = {name: len(array) for name, array in arrays.items()}
    batch = train_cav_batch(
        [CavTask("positive", "negative", seed)], arrays.__getitem__, sizes, options
    )
    return batch.cavs()[0]
