"""Concept activation vectors: linear classifiers between concept and random activations.

Every learner returns a unit-norm direction pointing from the negative (random) set toward
the concept, the intercept in the same units, and the accuracy on a held-out split.

Classes are balanced first (the larger class is subsampled to the size of the smaller),
then each class is split the same way: ``round(test_fraction * n)`` examples of each class
are held out (at least one when ``test_fraction > 0``). With ``test_fraction = 0`` the
accuracy is measured on the training examples. All randomness comes from ``seed``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier

from tcavkit.errors import ConfigError, DataError

CavMethod = Literal["sgd", "logistic", "mean-difference"]
METHODS: tuple[str, ...] = ("sgd", "logistic", "mean-difference")


@dataclass(frozen=True)
class CavOptions:
    """How CAVs are trained.

    Attributes:
        method: ``sgd`` (linear SVM, hinge loss, as tensorflow/tcav), ``logistic`` (L2
            logistic regression) or ``mean-difference`` (closed form, FastCAV).
        alpha: L2 regularisation strength (``sgd``: scikit-learn's ``alpha``; ``logistic``:
            the same objective scale, ``C = 1 / (alpha * n_train)``). Default 0.01.
        test_fraction: share of each class held out to measure accuracy. Default 1/3.
        max_iter: iteration cap for the iterative learners.
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
    """Train one CAV.

    Args:
        pos: concept activations ``(n_pos, d)``.
        neg: negative (random or second concept) activations ``(n_neg, d)``.
        options: the learner and its settings.
        seed: fixes balancing, the split and the learner.
    """
    rng = np.random.default_rng(seed)
    pos_tr, pos_te, neg_tr, neg_te = balanced_split(len(pos), len(neg), options.test_fraction, rng)
    x_train = np.concatenate([pos[pos_tr], neg[neg_tr]]).astype(np.float32, copy=False)
    y_train = np.r_[np.ones(len(pos_tr)), np.zeros(len(neg_tr))]
    weights, intercept = _fit(x_train, y_train, options, seed)
    norm = float(np.linalg.norm(weights))
    if not np.isfinite(norm) or norm == 0.0:
        raise DataError(
            "the concept and negative activations cannot be separated in any direction "
            "(identical or non-finite activations): check that the sets differ"
        )
    direction = (weights / norm).astype(np.float32)
    intercept /= norm
    if len(pos_te):
        x_test = np.concatenate([pos[pos_te], neg[neg_te]])
        y_test = np.r_[np.ones(len(pos_te)), np.zeros(len(neg_te))]
    else:
        x_test, y_test = x_train, y_train
    predicted = (x_test @ direction + intercept) > 0
    accuracy = float(np.mean(predicted == (y_test == 1)))
    gap = pos.mean(axis=0, dtype=np.float64) - neg.mean(axis=0, dtype=np.float64)
    return CAV(direction, float(intercept), accuracy, float(gap @ direction))


def _fit(x: np.ndarray, y: np.ndarray, options: CavOptions, seed: int) -> tuple[np.ndarray, float]:
    """Unnormalised weights ``(d,)`` and intercept for labels ``y`` (1 = concept)."""
    if options.method == "mean-difference":
        mu_pos = x[y == 1].mean(axis=0, dtype=np.float64)
        mu_neg = x[y == 0].mean(axis=0, dtype=np.float64)
        weights = mu_pos - mu_neg
        return weights, float(-weights @ (mu_pos + mu_neg) / 2)
    if options.method == "sgd":
        model = SGDClassifier(
            loss="hinge",
            alpha=options.alpha,
            max_iter=options.max_iter,
            tol=1e-3,
            random_state=seed,
        )
    else:
        model = LogisticRegression(C=1.0 / (options.alpha * len(y)), max_iter=options.max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])
