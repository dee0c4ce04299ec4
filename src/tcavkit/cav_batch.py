"""Train many CAVs of one layer at once, streaming the example sets.

A batch of CAV tasks (positive set, negative set, seed) is trained in three passes over the
sets it involves, each set loaded once per pass and released (so memory follows one set
and the batch's directions, not the experiment):

1. Gram blocks (iterative learners only): ``X_p X_pᵀ``, ``X_n X_nᵀ`` and ``X_p X_nᵀ``.
   The learners of :mod:`tcavkit.learners` turn them into coefficients over each task's
   training rows.
2. Directions: ``W = Σ_sets C_s X_s`` (one matrix product per set), normalised to unit
   length.
3. Projections: ``X_s Dᵀ`` gives every example's position along each direction, from which
   come the intercept, the held-out accuracy and the separation of the class means.

The balancing and the train/test split of each task are exactly those of
:func:`tcavkit.cav.balanced_split` with the task's seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tcavkit import learners
from tcavkit.cav import CAV, CavOptions, balanced_split
from tcavkit.errors import DataError

SetLoader = Callable[[str], torch.Tensor]
"""``name -> (n, d)`` float32 activations of a set, on the device the batch runs on."""


@dataclass(frozen=True)
class CavTask:
    """One CAV: ``positive`` against ``negative``; ``seed`` fixes its split."""

    positive: str
    negative: str
    seed: int


@dataclass
class CavBatch:
    """Trained CAVs of a batch, in task order.

    Attributes:
        directions: ``(m, d)`` unit vectors toward the positive set (on the device).
        intercepts: ``(m,)``: the classifier is ``x · direction + intercept``.
        accuracies: ``(m,)`` held-out accuracy.
        separations: ``(m,)`` distance between the class means along the direction.
    """

    directions: torch.Tensor
    intercepts: np.ndarray
    accuracies: np.ndarray
    separations: np.ndarray

    def cavs(self) -> list[CAV]:
        """The batch as :class:`~tcavkit.cav.CAV` objects (directions on the CPU)."""
        directions = self.directions.cpu().numpy()
        return [
            CAV(
                directions[i],
                float(self.intercepts[i]),
                float(self.accuracies[i]),
                float(self.separations[i]),
            )
            for i in range(len(directions))
        ]


@dataclass(frozen=True)
class _Split:
    pos_train: np.ndarray
    pos_test: np.ndarray
    neg_train: np.ndarray
    neg_test: np.ndarray


def _splits(tasks: Sequence[CavTask], sizes: dict[str, int], options: CavOptions) -> list[_Split]:
    out = []
    for task in tasks:
        rng = np.random.default_rng(task.seed)
        parts = balanced_split(
            sizes[task.positive], sizes[task.negative], options.test_fraction, rng
        )
        out.append(_Split(*parts))
    return out


def _involving(tasks: Sequence[CavTask]) -> dict[str, tuple[list[int], list[int]]]:
    """set name → (indices of tasks where it is positive, where it is negative)."""
    roles: dict[str, tuple[list[int], list[int]]] = {}
    for i, task in enumerate(tasks):
        roles.setdefault(task.positive, ([], []))[0].append(i)
        roles.setdefault(task.negative, ([], []))[1].append(i)
    return roles


def _groups(names: Sequence[str], sizes: dict[str, int], max_rows: int) -> list[list[str]]:
    """Consecutive groups of sets holding at most ``max_rows`` examples (at least one set)."""
    groups: list[list[str]] = []
    rows = 0
    for name in names:
        if groups and rows + sizes[name] <= max_rows:
            groups[-1].append(name)
            rows += sizes[name]
        else:
            groups.append([name])
            rows = sizes[name]
    return groups


def _grams(
    tasks: Sequence[CavTask],
    splits: Sequence[_Split],
    load: SetLoader,
    sizes: dict[str, int],
    n_train: int,
    max_rows: int,
) -> torch.Tensor:
    """``(m, n_train, n_train)`` Gram matrices of each task's training rows (positive rows
    first, then negative; padded with zeros).

    Positive sets are stacked in groups of at most ``max_rows`` examples, and so are their
    negative sets: every Gram block then comes from one large matrix product. All rows are
    shifted by one common vector first (the mean of the first group), which changes no
    centred Gram matrix but keeps float32 products accurate for activations far from 0.
    """
    m = len(tasks)
    by_positive: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_positive.setdefault(task.positive, []).append(i)
    gram: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    own: dict[str, torch.Tensor] = {}

    def stack(group: list[str]) -> tuple[torch.Tensor, dict[str, slice]]:
        nonlocal shift
        parts, where, start = [], {}, 0
        for name in group:
            x = load(name)
            if shift is None:
                shift = x.mean(dim=0, keepdim=True)
            parts.append(x - shift)
            where[name] = slice(start, start + len(x))
            start += len(x)
        stacked = torch.cat(parts)
        for name, rows in where.items():
            if name not in own:
                own[name] = (stacked[rows] @ stacked[rows].T).double()
        return stacked, where

    for pos_group in _groups(list(by_positive), sizes, max_rows):
        x_pos, pos_rows = stack(pos_group)
        if gram is None:
            gram = torch.zeros(m, n_train, n_train, dtype=torch.float64, device=x_pos.device)
        group_tasks = [i for name in pos_group for i in by_positive[name]]
        negatives = list(dict.fromkeys(tasks[i].negative for i in group_tasks))
        for neg_group in _groups(negatives, sizes, max_rows):
            x_neg, neg_rows = stack(neg_group)
            cross = (x_pos @ x_neg.T).double()
            for i in group_tasks:
                task = tasks[i]
                if task.negative not in neg_rows:
                    continue
                split = splits[i]
                p = torch.as_tensor(split.pos_train, device=cross.device)
                q = torch.as_tensor(split.neg_train, device=cross.device)
                kp, kn = len(p), len(q)
                block = cross[pos_rows[task.positive]][p][:, neg_rows[task.negative]][:, q]
                gram[i, :kp, :kp] = own[task.positive][p][:, p]
                gram[i, kp : kp + kn, kp : kp + kn] = own[task.negative][q][:, q]
                gram[i, :kp, kp : kp + kn] = block
                gram[i, kp : kp + kn, :kp] = block.T
            del x_neg, cross
        del x_pos
    assert gram is not None
    return gram


def _coefficients(
    tasks: Sequence[CavTask],
    splits: Sequence[_Split],
    load: SetLoader,
    sizes: dict[str, int],
    options: CavOptions,
    device: torch.device,
    max_rows: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``(m, n_train)`` over [positive train rows, negative train rows], b0."""
    m = len(tasks)
    n_train = max(len(s.pos_train) + len(s.neg_train) for s in splits)
    y = torch.zeros(m, n_train, dtype=torch.float64, device=device)
    mask = torch.zeros(m, n_train, dtype=torch.bool, device=device)
    for i, s in enumerate(splits):
        kp, kn = len(s.pos_train), len(s.neg_train)
        y[i, :kp] = 1.0
        y[i, kp : kp + kn] = -1.0
        mask[i, : kp + kn] = True
    if options.method == "mean-difference":
        return learners.mean_difference(y, mask)
    gram = _grams(tasks, splits, load, sizes, n_train, max_rows).to(device)
    if options.method == "sgd":
        return learners.hinge_svm(gram, y, mask, options.alpha, max_iter=min(options.max_iter, 100))
    return learners.logistic(gram, y, mask, options.alpha, max_iter=min(options.max_iter, 100))


def train_cav_batch(
    tasks: Sequence[CavTask],
    load: SetLoader,
    sizes: dict[str, int],
    options: CavOptions,
    device: torch.device | str = "cpu",
    max_rows: int = 1024,
) -> CavBatch:
    """Train every CAV of ``tasks`` (all at one layer).

    Args:
        tasks: the CAVs to train.
        load: set name → activations ``(n, d)`` float32 on ``device`` (called once per set
            and pass; the batch keeps no reference).
        sizes: set name → number of examples.
        options: learner settings.
        max_rows: examples stacked at once for the Gram products (iterative learners).

    Raises:
        DataError: a task's classes cannot be separated in any direction.
    """
    device = torch.device(device)
    splits = _splits(tasks, sizes, options)
    coef, b0 = _coefficients(tasks, splits, load, sizes, options, device, max_rows)
    roles = _involving(tasks)
    coef_host = coef.cpu()  # one transfer, not one per task
    weights: torch.Tensor | None = None
    # Pass 2: directions as coefficient-weighted sums of each set's rows.
    for name, (as_pos, as_neg) in roles.items():
        x = load(name)
        if weights is None:
            weights = torch.zeros(len(tasks), x.shape[1], dtype=torch.float32, device=device)
        rows = torch.zeros(len(as_pos) + len(as_neg), len(x), dtype=torch.float64)
        for r, i in enumerate(as_pos):
            rows[r, splits[i].pos_train] = coef_host[i, : len(splits[i].pos_train)]
        for r, i in enumerate(as_neg, start=len(as_pos)):
            kp = len(splits[i].pos_train)
            rows[r, splits[i].neg_train] = coef_host[i, kp : kp + len(splits[i].neg_train)]
        index = torch.as_tensor(as_pos + as_neg, device=device)
        weights[index] += rows.to(device=device, dtype=torch.float32) @ x  # unique indices
        del x
    assert weights is not None
    norms = torch.linalg.vector_norm(weights, dim=1).double()
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bool(bad.any()):
        task = tasks[int(torch.nonzero(bad)[0])]
        raise DataError(
            f"the CAV of {task.positive!r} against {task.negative!r} cannot be trained: the two "
            "sets' activations cannot be separated in any direction (identical or non-finite "
            "activations); check that the sets differ"
        )
    directions = weights.div_(norms[:, None].float())  # in place: no second (m, d) copy
    intercepts, accuracies, separations = _project(
        tasks, splits, roles, load, directions, b0.cpu().numpy() / norms.cpu().numpy()
    )
    return CavBatch(directions, intercepts, accuracies, separations)


def _project(
    tasks: Sequence[CavTask],
    splits: Sequence[_Split],
    roles: dict[str, tuple[list[int], list[int]]],
    load: SetLoader,
    directions: torch.Tensor,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 3: intercepts, held-out accuracies and separations from projections."""
    m = len(tasks)
    train_sum = np.zeros(m)
    train_count = np.zeros(m)
    mean_pos = np.zeros(m)
    mean_neg = np.zeros(m)
    tests: list[list[tuple[np.ndarray, bool]]] = [[] for _ in range(m)]
    for name, (as_pos, as_neg) in roles.items():
        x = load(name)
        index = torch.as_tensor(as_pos + as_neg, device=directions.device)
        proj = (x @ directions[index].T).double().cpu().numpy()  # (n, m_s)
        del x
        for column, i in enumerate(as_pos + as_neg):
            split = splits[i]
            positive = column < len(as_pos)
            train, test = (
                (split.pos_train, split.pos_test) if positive else (split.neg_train, split.neg_test)
            )
            values = proj[:, column]
            train_sum[i] += values[train].sum()
            train_count[i] += len(train)
            (mean_pos if positive else mean_neg)[i] = values.mean()
            tests[i].append((values[test] if len(test) else values[train], positive))
    intercepts = offsets - train_sum / train_count
    accuracies = np.empty(m)
    for i in range(m):
        correct = total = 0
        for values, positive in tests[i]:
            predicted = values + intercepts[i] > 0
            correct += int(np.sum(predicted == positive))
            total += len(values)
        accuracies[i] = correct / total
    return intercepts, accuracies, mean_pos - mean_neg


class CavTable(Mapping[tuple[str, str, str], CAV]):
    """Trained CAVs by ``(positive, negative, layer)``, built on demand from per-layer arrays.

    Directions may be memory-mapped cache files, so thousands of CAVs cost no memory until
    one is looked at.
    """

    def __init__(self) -> None:
        self._layers: dict[str, tuple[dict[tuple[str, str], int], Any, np.ndarray]] = {}

    def add_layer(
        self,
        layer: str,
        tasks: Sequence[CavTask],
        directions: Any,
        stats: np.ndarray,
    ) -> None:
        """Register ``layer``: ``directions`` ``(m, d)`` and ``stats`` ``(m, 3)`` (intercept,
        accuracy, separation) in the order of ``tasks``."""
        index = {(t.positive, t.negative): i for i, t in enumerate(tasks)}
        self._layers[layer] = (index, directions, np.asarray(stats, dtype=np.float64))

    def __getitem__(self, key: tuple[str, str, str]) -> CAV:
        positive, negative, layer = key
        index, directions, stats = self._layers[layer]
        i = index[(positive, negative)]
        intercept, accuracy, separation = stats[i]
        return CAV(
            np.array(directions[i], dtype=np.float32),
            float(intercept),
            float(accuracy),
            float(separation),
        )

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        for layer, (index, _, _) in self._layers.items():
            for positive, negative in index:
                yield positive, negative, layer

    def __len__(self) -> int:
        return sum(len(index) for index, _, _ in self._layers.values())
