"""Train many CAVs of one layer at once, streaming the example sets.

A batch of CAV tasks (positive set, negative set, seed) is trained in three passes over the
sets it involves, each set loaded once per pass and released (so memory follows one set
and the batch's directions, not the experiment):

1. Gram blocks (iterative learners only): ``X_p X_pᵀ``, ``X_n X_nᵀ`` and ``X_p X_nᵀ``.
   The learners of :mod:`tcavkit.cav.learners` turn them into coefficients over each task's
   training rows.
2. Directions: ``W = Σ_sets C_s X_s`` (one matrix product per set), normalised to unit
   length.
3. Projections: ``X_s Dᵀ`` gives every example's position along each direction, from which
   come the intercept, the held-out accuracy and the separation of the class means.

Iterative learners (hinge, logistic): each task's classes are balanced first (the larger
is subsampled to the size of the smaller), then each class is split the same way:
``round(test_fraction * n)`` examples of each are held out (at least one when
``test_fraction > 0``); with ``test_fraction = 0`` the accuracy is measured on the training
examples (:func:`balanced_split`).

``mean-difference``: the direction is the difference of the two sets' means over **all**
their examples (no balancing, no split), so that its effect is exactly linear in the
examples (``mean_i grad_i · (mu_concept - mu_negative)``; :mod:`tcavkit.stats` tests it
against resampled random images), and the threshold is half-way between the class means.
Its held-out accuracy is still measured on a balanced split: the mean-difference
classifier of the split's training rows, tested on the held-out rows (a second, cheap
closed-form fit). Fitting the direction on a split made each run's effect a product of two
noisy terms with a heavy far tail (``bench/README.md``, "Statistics"). All randomness comes
from the task's seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tcavkit.cav import learners
from tcavkit.cav.vector import CAV, CavTask
from tcavkit.errors import DataError
from tcavkit.options import CavOptions

__all__ = [
    "CavBatch",
    "CavTask",
    "balanced_split",
    "cav_directions",
    "train_cav",
    "train_cav_batch",
]

LEARNER_CHUNK = 1024  # problems an iterative learner solves at once

SetLoader = Callable[[str], torch.Tensor]
"""``name -> (n, d)`` float32 activations of a set, on the device the batch runs on."""


@dataclass
class CavBatch:
    """Trained CAVs of a batch, in task order.

    Attributes:
        directions: ``(m, d)`` unit vectors toward the positive set (on the device).
        intercepts: ``(m,)``: the classifier is ``x · direction + intercept``.
        accuracies: ``(m,)`` held-out accuracy.
        separations: ``(m,)`` distance between the class means along the direction.
        coefficients: ``(m, n_train)`` float64: each direction (before normalising) is
            the coefficient-weighted sum of the task's training rows, positive rows first
            (in split order), then negative ones; zero-padded. With the activations they
            give back the directions (:func:`cav_directions`).
    """

    directions: torch.Tensor
    intercepts: np.ndarray
    accuracies: np.ndarray
    separations: np.ndarray
    coefficients: np.ndarray

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


@dataclass(frozen=True)
class _Split:
    pos_train: np.ndarray
    pos_test: np.ndarray
    neg_train: np.ndarray
    neg_test: np.ndarray


def _splits(tasks: Sequence[CavTask], sizes: dict[str, int], options: CavOptions) -> list[_Split]:
    """The training rows of each task's direction: every row of both sets for
    ``mean-difference``, a balanced split (:func:`_held_out_splits`) otherwise."""
    if options.method == "mean-difference":
        empty = np.empty(0, dtype=np.int64)
        return [
            _Split(np.arange(sizes[t.positive]), empty, np.arange(sizes[t.negative]), empty)
            for t in tasks
        ]
    return _held_out_splits(tasks, sizes, options)


def _held_out_splits(
    tasks: Sequence[CavTask], sizes: dict[str, int], options: CavOptions
) -> list[_Split]:
    """Each task's balanced train/test split (:func:`balanced_split`), from its seed."""
    out = []
    for task in tasks:
        rng = np.random.default_rng(task.seed)
        parts = balanced_split(
            sizes[task.positive], sizes[task.negative], options.test_fraction, rng
        )
        out.append(_Split(*parts))
    return out


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
        where, start = {}, 0
        stacked: torch.Tensor | None = None
        for name in group:
            x = load(name)
            if shift is None:
                shift = x.mean(dim=0, keepdim=True)
            if stacked is None:  # written in place: no list of parts beside the stack
                total = sum(sizes[n] for n in group)
                stacked = torch.empty(total, x.shape[1], dtype=x.dtype, device=x.device)
            where[name] = slice(start, start + len(x))
            torch.sub(x, shift, out=stacked[where[name]])
            start += len(x)
            del x
        assert stacked is not None
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
    """Coefficients ``(m, n_train)`` over [positive train rows, negative train rows], b0.

    ``options.method`` picks the learner: ``hinge`` (:func:`~tcavkit.cav.learners.hinge_svm`,
    the exact hinge-loss SVM; :class:`CavOptions` turns its other name ``sgd`` into
    ``hinge``), ``logistic`` or ``mean-difference``. Iterative learners solve
    ``LEARNER_CHUNK`` problems at a time, which bounds the memory of their
    ``(problems, n_train, n_train)`` systems (each problem is solved as alone).
    """
    m = len(tasks)
    kp = np.array([len(s.pos_train) for s in splits])
    kn = np.array([len(s.neg_train) for s in splits])
    n_train = int((kp + kn).max())
    columns = np.arange(n_train)
    mask_np = columns < (kp + kn)[:, None]
    y_np = np.where(columns < kp[:, None], 1.0, -1.0) * mask_np
    y = torch.as_tensor(y_np, dtype=torch.float64, device=device)
    mask = torch.as_tensor(mask_np, device=device)
    if options.method == "mean-difference":
        return learners.mean_difference(y, mask)
    coef = torch.zeros(m, n_train, dtype=torch.float64, device=device)
    b0 = torch.zeros(m, dtype=torch.float64, device=device)
    for a in range(0, m, LEARNER_CHUNK):
        part = slice(a, a + LEARNER_CHUNK)
        gram = _grams(tasks[part], splits[part], load, sizes, n_train, max_rows).to(device)
        if options.method == "hinge":
            solved = learners.hinge_svm(
                gram, y[part], mask[part], options.alpha, max_iter=options.max_iter
            )
        else:
            solved = learners.logistic(
                gram, y[part], mask[part], options.alpha, max_iter=options.max_iter
            )
        coef[part], b0[part] = solved
        del gram
    return coef, b0


def train_cav_batch(
    tasks: Sequence[CavTask],
    load: SetLoader,
    sizes: dict[str, int],
    options: CavOptions,
    device: torch.device | str = "cpu",
    max_rows: int = 1024,
    out: torch.Tensor | None = None,
) -> CavBatch:
    """Train every CAV of ``tasks`` (all at one layer).

    Args:
        tasks: the CAVs to train.
        load: set name → activations ``(n, d)`` float32 on ``device`` (called once per set
            and pass; the batch keeps no reference).
        sizes: set name → number of examples.
        options: learner settings.
        max_rows: examples stacked at once for the Gram products (iterative learners).
        out: a float32 buffer of at least ``(m, d)`` on ``device`` to build the directions
            in (reused between batches, it saves allocating and faulting in fresh memory
            each time); the batch's directions are then a view of it.

    Raises:
        DataError: a task's classes cannot be separated in any direction.
    """
    device = torch.device(device)
    splits = _splits(tasks, sizes, options)
    coef, b0 = _coefficients(tasks, splits, load, sizes, options, device, max_rows)
    coef_host = coef.cpu().numpy()
    roles = _roles(tasks, splits)
    directions, norms = _directions(tasks, roles, coef_host, load, device, out)
    whole = options.method == "mean-difference"
    intercepts, accuracies, separations = _project(
        len(tasks), roles, load, directions, b0.cpu().numpy() / norms, midpoint=whole
    )
    if whole and options.test_fraction > 0:
        accuracies = _held_out_accuracies(tasks, sizes, options, load, device)
    return CavBatch(directions, intercepts, accuracies, separations, coef_host)


def _held_out_accuracies(
    tasks: Sequence[CavTask],
    sizes: dict[str, int],
    options: CavOptions,
    load: SetLoader,
    device: torch.device,
) -> np.ndarray:
    """``(m,)`` held-out accuracies of mean-difference classifiers fitted on each task's
    balanced split (the directions the tasks keep are fitted on all rows instead)."""
    splits = _held_out_splits(tasks, sizes, options)
    coef, _ = _coefficients(tasks, splits, load, sizes, options, device, 0)
    roles = _roles(tasks, splits)
    directions, _ = _directions(tasks, roles, coef.cpu().numpy(), load, device)
    _, accuracies, _ = _project(len(tasks), roles, load, directions, np.zeros(len(tasks)))
    return accuracies


def cav_directions(
    tasks: Sequence[CavTask],
    coefficients: np.ndarray,
    load: SetLoader,
    sizes: dict[str, int],
    options: CavOptions,
    device: torch.device | str = "cpu",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The unit directions ``(m, d)`` of CAVs trained before, from their coefficients
    (:attr:`CavBatch.coefficients`) and the same activations: the learner is not run.
    ``out`` as in :func:`train_cav_batch`."""
    roles = _roles(tasks, _splits(tasks, sizes, options))
    directions, _ = _directions(tasks, roles, coefficients, load, torch.device(device), out)
    return directions


@dataclass(frozen=True)
class _Role:
    """The tasks one set takes part in, and its rows in each (concatenated)."""

    tasks: np.ndarray  # (k,) task indices: positive roles first, then negative
    positive: np.ndarray  # (k,) bool
    train_task: np.ndarray  # (t,) column (0..k-1) of each training row below
    train_row: np.ndarray  # (t,) row of the set
    train_coef: np.ndarray  # (t,) the coefficient position of that row in its task
    test_task: np.ndarray  # (u,) column of each held-out row (training rows if none)
    test_row: np.ndarray  # (u,)


def _roles(tasks: Sequence[CavTask], splits: Sequence[_Split]) -> dict[str, _Role]:
    """Per set: its tasks and rows, as flat arrays (no per-task work in the passes)."""
    found: dict[str, list[tuple[int, bool]]] = {}
    for i, task in enumerate(tasks):
        found.setdefault(task.positive, []).append((i, True))
    for i, task in enumerate(tasks):
        found.setdefault(task.negative, []).append((i, False))
    roles = {}
    for name, pairs in found.items():
        columns, trains, tests, offsets = [], [], [], []
        for i, positive in pairs:
            s = splits[i]
            train, test = (s.pos_train, s.pos_test) if positive else (s.neg_train, s.neg_test)
            trains.append(train)
            tests.append(test if len(test) else train)
            offsets.append(0 if positive else len(s.pos_train))
            columns.append(i)
        k = np.arange(len(pairs))
        train_len = np.array([len(t) for t in trains])
        test_len = np.array([len(t) for t in tests])
        starts = np.repeat(np.cumsum(train_len) - train_len, train_len)
        within = np.arange(int(train_len.sum())) - starts
        roles[name] = _Role(
            tasks=np.array(columns),
            positive=np.array([positive for _, positive in pairs]),
            train_task=np.repeat(k, train_len),
            train_row=np.concatenate(trains),
            train_coef=within + np.repeat(np.array(offsets), train_len),
            test_task=np.repeat(k, test_len),
            test_row=np.concatenate(tests),
        )
    return roles


def _progressions(
    index: np.ndarray, min_length: int = 4
) -> tuple[list[tuple[int, slice]], np.ndarray]:
    """Split ``index`` (increasing) into arithmetic progressions ``(position, slice)`` of at
    least ``min_length`` values, and the positions of the rest.

    Rows of a matrix at a progression form a strided view that matrix products read and
    write in place, so no rows are gathered or scattered for them (in a batch of concept
    × random-set tasks, each set's tasks are such a progression).
    """
    progressions: list[tuple[int, slice]] = []
    rest: list[int] = []
    values = index.tolist()
    start = 0
    while start < len(values):
        stop = start + 1
        if stop < len(values):
            step = values[stop] - values[start]
            while stop + 1 < len(values) and values[stop + 1] - values[stop] == step:
                stop += 1
            stop += 1
        if stop - start >= min_length:
            first, last = values[start], values[stop - 1]
            progressions.append((start, slice(first, last + 1, values[start + 1] - first)))
            start = stop
        else:
            rest.append(start)
            start += 1
    return progressions, np.array(rest, dtype=np.int64)


def _directions(
    tasks: Sequence[CavTask],
    roles: dict[str, _Role],
    coef: np.ndarray,
    load: SetLoader,
    device: torch.device,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Pass 2: unit directions ``(m, d)`` (``W = Σ_sets C_s X_s``) and the norms ``(m,)``.

    Rows of ``W`` at regular intervals (:func:`_progressions`) are accumulated in place by
    one fused product; the others are scattered in.
    """
    weights: torch.Tensor | None = None
    for name, role in roles.items():
        x = load(name)
        if weights is None:
            if (
                out is not None
                and len(out) >= len(tasks)
                and out.shape[1:] == x.shape[1:]
                and out.dtype == torch.float32
            ):
                weights = out[: len(tasks)].zero_()
            else:
                weights = torch.zeros(len(tasks), x.shape[1], dtype=torch.float32, device=device)
        rows = np.zeros((len(role.tasks), len(x)), dtype=np.float32)
        rows[role.train_task, role.train_row] = coef[role.tasks[role.train_task], role.train_coef]
        rows_t = torch.from_numpy(rows).to(device)
        progressions, rest = _progressions(role.tasks)
        for at, where in progressions:
            block = weights[where]
            block.addmm_(rows_t[at : at + len(block)], x)
        if len(rest):
            index = torch.as_tensor(role.tasks[rest], device=device)
            weights.index_add_(0, index, rows_t[torch.as_tensor(rest, device=device)] @ x)
        del x
    assert weights is not None
    norms = torch.linalg.vector_norm(weights, dim=1)
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bool(bad.any()):
        task = tasks[int(torch.nonzero(bad)[0])]
        raise DataError(
            f"the CAV of {task.positive!r} against {task.negative!r} cannot be trained: the two "
            "sets' activations cannot be separated in any direction (identical or non-finite "
            "activations); check that the sets differ"
        )
    weights.div_(norms[:, None])  # in place: no second (m, d) copy
    return weights, norms.double().cpu().numpy()


def _project(
    m: int,
    roles: dict[str, _Role],
    load: SetLoader,
    directions: torch.Tensor,
    offsets: np.ndarray,
    midpoint: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 3: intercepts, held-out accuracies and separations of ``m`` CAVs from the
    projections of every row of their sets. The threshold is at the mean of the training
    rows' projections, or half-way between the two class means with ``midpoint`` (for
    classes of unequal size)."""
    train_sum = np.zeros(m)
    train_count = np.zeros(m)
    mean_pos = np.zeros(m)
    mean_neg = np.zeros(m)
    held_out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # task, value, positive
    for name, role in roles.items():
        x = load(name)
        proj = np.empty((len(x), len(role.tasks)))  # (n, k): each row along each direction
        progressions, rest = _progressions(role.tasks)
        for at, where in progressions:  # strided views: no gathered copy
            block = directions[where]
            proj[:, at : at + len(block)] = (block @ x.T).cpu().numpy().T
        if len(rest):
            index = torch.as_tensor(role.tasks[rest], device=directions.device)
            proj[:, rest] = (directions[index] @ x.T).cpu().numpy().T
        del x
        values = proj[role.train_row, role.train_task]
        train_sum += np.bincount(role.tasks[role.train_task], values, minlength=m)
        train_count += np.bincount(role.tasks[role.train_task], minlength=m)
        means = proj.mean(axis=0)
        mean_pos[role.tasks[role.positive]] = means[role.positive]
        mean_neg[role.tasks[~role.positive]] = means[~role.positive]
        held_out.append(
            (
                role.tasks[role.test_task],
                proj[role.test_row, role.test_task],
                role.positive[role.test_task],
            )
        )
    centre = (mean_pos + mean_neg) / 2 if midpoint else train_sum / train_count
    intercepts = offsets - centre
    correct = np.zeros(m)
    total = np.zeros(m)
    for task, value, positive in held_out:
        right = (value + intercepts[task] > 0) == positive
        correct += np.bincount(task, right.astype(np.float64), minlength=m)
        total += np.bincount(task, minlength=m)
    return intercepts, correct / total, mean_pos - mean_neg


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
    arrays = {
        "positive": torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float32)),
        "negative": torch.from_numpy(np.ascontiguousarray(neg, dtype=np.float32)),
    }
    sizes = {name: len(array) for name, array in arrays.items()}
    batch = train_cav_batch(
        [CavTask("positive", "negative", seed)], arrays.__getitem__, sizes, options
    )
    return batch.cavs()[0]
