"""CAVs and scores: every CAV of a layer trained (or read) in batches, each batch scored
for every target at once, and the runs table built from the plan.

Each distinct (positive, negative) task is trained once per layer and shared by every
target; a batch's directions meet all targets' gradients in one matrix product.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tcavkit.cav.table import CavTable
from tcavkit.cav.vector import CavTask
from tcavkit.errors import TcavWarning
from tcavkit.examples.base import ExampleSet
from tcavkit.pipeline.context import RunContext
from tcavkit.pipeline.passes import Arrays, layer_loader
from tcavkit.pipeline.plan import Plan, at_layer
from tcavkit.scoring import LayerScores, Scores, effect
from tcavkit.tables import EXTRA_RUN_COLUMNS, RUN_COLUMNS

if TYPE_CHECKING:  # torch is imported where CAVs are trained or rebuilt, not on reads
    import torch

CAV_BATCH_BYTES = 256 * 2**20  # directions of one CAV batch (the sets stream past them;
# each batch reads every set it involves twice, so larger batches read less per CAV)

Scorer = Callable[["torch.Tensor", int], None]
"""``(directions (b, d), start)``: scores a batch of CAVs, the batch's first at ``start``."""


def train_and_score(
    ctx: RunContext,
    plan: Plan,
    sets: dict[str, ExampleSet],
    acts: Arrays,
    grads: Arrays,
    targets: list[str],
    timings: dict[str, float],
    gradient_keys: dict[str, dict[str, str]] | None = None,
) -> tuple[pd.DataFrame, CavTable]:
    """The runs table (one row per plan row, target and layer) and every trained CAV.

    ``gradient_keys``: target → layer → the cache key of its gradients (as the gradient
    pass stored them); with them, a layer whose CAVs, stats and scores are all in the cache
    is read whole: its CAVs are neither trained nor rebuilt and no gradient is read. Adds
    the time spent training or reading (``cavs``) and scoring (``scores``) to ``timings``.
    """
    table = CavTable()
    frames = []
    timings["cavs"] = timings["scores"] = 0.0
    layer_tasks = {layer: plan.layer_tasks(layer) for layer in ctx.layers}
    total = sum(len(tasks) for tasks, _ in layer_tasks.values())
    with ctx.bar(total, "CAVs", "cav") as bar:
        for layer, (tasks, runs) in layer_tasks.items():
            began = time.perf_counter()
            key = ctx.keys.cavs(layer, tasks, sets, ctx.cav)
            scores_key = None
            if gradient_keys is not None:
                scores_key = ctx.keys.cav_scores(key, [gradient_keys[t][layer] for t in targets])
            found = _cached_layer(ctx, key, scores_key, len(tasks), len(targets))
            if found is not None:
                coefficients, stats, scores = found
                ctx.counts.cavs_from_cache += len(tasks)
                ctx.counts.score_layers_from_cache += 1
                bar.update(len(tasks))
                timings["cavs"] += time.perf_counter() - began
            else:
                coefficients, stats, scores = _train_and_score_layer(
                    ctx, key, layer, tasks, acts, grads, targets, timings, bar
                )
                timings["cavs"] += time.perf_counter() - began
                if scores_key is not None:
                    meta = {"kind": "cav-scores", "layer": layer, "cavs": key}
                    ctx.store.put(scores_key, scores.to_array(), meta=meta)
            table.add_layer(layer, tasks, runs, coefficients, stats, rebuilder(ctx, acts, layer))
            frames.append(layer_rows(plan, layer, tasks, targets, scores, stats))
    return runs_table(frames, targets), table


def runs_table(frames: list[pd.DataFrame], targets: list[str]) -> pd.DataFrame:
    """The runs table from each layer's rows (:func:`layer_rows`, in layer order): by
    target in ``targets`` order, each target's concept rows before its null rows."""
    runs = pd.concat(frames, ignore_index=True)[[*RUN_COLUMNS, *EXTRA_RUN_COLUMNS]]
    order = {name: i for i, name in enumerate(targets)}
    return runs.sort_values(
        ["target", "is_null"],
        key=lambda col: col.map(order) if col.name == "target" else col,
        kind="stable",
    ).reset_index(drop=True)


def cav_chunks(n_tasks: int, dim: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of a layer's ``n_tasks`` CAVs of dimension ``dim``
    (at most :data:`CAV_BATCH_BYTES` of float32 directions each)."""
    step = max(1, CAV_BATCH_BYTES // (4 * dim))
    return [(start, min(start + step, n_tasks)) for start in range(0, n_tasks, step)]


def join_coefficients(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One layer's coefficients ``(m, n_train)`` from its batches' ``(b_i, n_i)`` in order,
    each zero-padded on the right to the widest batch's ``n_train``."""
    width = max(part.shape[1] for part in parts)
    return np.concatenate([np.pad(part, ((0, 0), (0, width - part.shape[1]))) for part in parts])


def store_cavs(
    ctx: RunContext, layer: str, key: str, coefficients: np.ndarray, stats: np.ndarray
) -> None:
    """Cache a layer's CAV coefficients ``(m, n_train)`` under ``key`` and their stats
    ``(m, 3)`` beside them."""
    meta = {"layer": layer, "cavs": len(coefficients), "method": ctx.cav.method}
    ctx.store.put(key, coefficients, meta=meta)
    ctx.store.put(ctx.keys.cav_stats(key), stats, meta={"cavs": key})


def cached_cavs(ctx: RunContext, key: str, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A layer's ``m`` cached CAVs (as :func:`store_cavs` wrote them under ``key``):
    coefficients ``(m, n_train)`` and stats ``(m, 3)``, when both are whole and the stats
    plausible; else ``None`` (impossible stats are named in a warning; the CAVs are then
    trained again)."""
    found = _whole_cavs(ctx, key, m)
    if found is None or not _plausible_stats(ctx, ctx.keys.cav_stats(key), found[1]):
        return None
    return found


def _whole_cavs(ctx: RunContext, key: str, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A layer's ``m`` cached coefficients and stats ``(m, 3)`` when both are there with
    those shapes (their values unchecked); else ``None``."""
    coefficients = ctx.store.get(key)
    stats = ctx.store.get(ctx.keys.cav_stats(key))
    if coefficients is None or stats is None or len(coefficients) != m or stats.shape != (m, 3):
        return None
    return np.array(coefficients), np.array(stats)


def _train_and_score_layer(
    ctx: RunContext,
    key: str,
    layer: str,
    tasks: list[CavTask],
    acts: Arrays,
    grads: Arrays,
    targets: list[str],
    timings: dict[str, float],
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray, LayerScores]:
    """Coefficients, stats and scores of one layer's CAVs, trained (or their coefficients
    read and their directions rebuilt) and scored for every target; the time spent
    scoring is added to ``timings["scores"]``; ``key``: the CAVs' cache key."""
    import torch

    device = ctx.adapter.device
    target_grads = [np.asarray(grads[t][layer](), dtype=np.float32) for t in targets]
    bounds = np.cumsum([0, *(len(g) for g in target_grads)])
    g = torch.from_numpy(np.concatenate(target_grads)).to(device)
    del target_grads
    scores = LayerScores.empty(len(targets), len(tasks))
    score = partial(_score_batch, g, bounds, scores, timings)
    coefficients, stats = _layer_cavs(ctx, key, layer, tasks, acts, g.shape[1], score, bar)
    return coefficients, stats, scores


def _cached_layer(
    ctx: RunContext, key: str, scores_key: str | None, m: int, k: int
) -> tuple[np.ndarray, np.ndarray, LayerScores] | None:
    """A layer's coefficients, stats ``(m, 3)`` and scores ``(k`` targets × ``m)`` from the
    cache, when all three are there and plausible; else ``None``."""
    if scores_key is None:
        return None
    scores = ctx.store.get(scores_key)
    if scores is None or scores.shape != (2, len(fields(Scores)), k, m):
        return None
    found = _whole_cavs(ctx, key, m)
    if found is None or not _possible(found[1]):  # the training path warns and retrains
        return None
    return *found, LayerScores.from_array(scores)


def rebuilder(
    ctx: RunContext, acts: Arrays, layer: str
) -> Callable[[Sequence[CavTask], np.ndarray], torch.Tensor]:
    """``(tasks, coefficients) -> directions``: a layer's CAVs rebuilt from the (cached)
    activations when a :class:`CavTable` lookup asks for one."""

    def rebuild(tasks: Sequence[CavTask], coefficients: np.ndarray) -> torch.Tensor:
        from tcavkit.cav.batch import cav_directions  # torch: only when a CAV is looked at

        load = layer_loader(ctx, acts, layer)
        return cav_directions(tasks, coefficients, load, ctx.sizes, ctx.cav, ctx.adapter.device)

    return rebuild


def _score_batch(
    g: torch.Tensor,
    bounds: np.ndarray,
    scores: LayerScores,
    timings: dict[str, float],
    directions: torch.Tensor,
    start: int,
) -> None:
    """Score a batch of CAVs ``(b, d)`` for every target at once (both orientations).

    Args:
        g: all targets' gradients ``(n_all, d)``, target k in rows ``bounds[k]:bounds[k+1]``.
        scores: filled at CAVs ``start:start+b``.
    """
    began = time.perf_counter()
    derivs = (g @ directions.T).double().cpu().numpy()
    for k in range(len(bounds) - 1):
        scores.fill(k, start, derivs[bounds[k] : bounds[k + 1]])
    timings["scores"] += time.perf_counter() - began


def _layer_cavs(
    ctx: RunContext,
    key: str,
    layer: str,
    tasks: list[CavTask],
    acts: Arrays,
    dim: int,
    score: Scorer,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``(m, n_train)`` and stats ``(m, 3)`` (intercept, accuracy,
    separation) of ``tasks`` at ``layer``, trained batch by batch, or read from the cache
    (then only the directions are rebuilt from the activations), under the cache key
    ``key``. Each batch's directions are scored by ``score``.

    The cache keeps the learners' coefficients, not the directions: a few hundred bytes
    per CAV instead of four bytes per activation value, and the same scores, since the
    directions are rebuilt by the same products in the same batches.
    """
    import torch

    from tcavkit.cav.batch import cav_directions, train_cav_batch

    chunks = cav_chunks(len(tasks), dim)
    step = chunks[0][1] - chunks[0][0] if chunks else 1
    load = layer_loader(ctx, acts, layer)
    device = ctx.adapter.device
    buffer = torch.empty(min(step, len(tasks)), dim, dtype=torch.float32, device=device)
    cached = cached_cavs(ctx, key, len(tasks))
    if cached is not None:
        coefficients, stats = cached
        for start, stop in chunks:
            directions = cav_directions(
                tasks[start:stop],
                coefficients[start:stop],
                load,
                ctx.sizes,
                ctx.cav,
                device,
                out=buffer,
            )
            score(directions, start)
            bar.update(stop - start)
        ctx.counts.cavs_from_cache += len(tasks)
        return coefficients, stats
    stats = np.empty((len(tasks), 3))
    parts: list[np.ndarray] = []
    for start, stop in chunks:
        batch = train_cav_batch(tasks[start:stop], load, ctx.sizes, ctx.cav, device, out=buffer)
        stats[start:stop, 0] = batch.intercepts
        stats[start:stop, 1] = batch.accuracies
        stats[start:stop, 2] = batch.separations
        score(batch.directions, start)
        parts.append(batch.coefficients)
        ctx.counts.cavs_trained += stop - start
        bar.update(stop - start)
        del batch
    coefficients = join_coefficients(parts)
    store_cavs(ctx, layer, key, coefficients, stats)
    return coefficients, stats


def _possible(stats: np.ndarray) -> bool:
    """Whether CAV stats ``(m, 3)`` (intercept, accuracy, separation) are finite with
    accuracies in [0, 1]."""
    accuracy = stats[:, 1]
    return bool(np.isfinite(stats).all() and ((accuracy >= 0) & (accuracy <= 1)).all())


def _plausible_stats(ctx: RunContext, key: str, stats: np.ndarray) -> bool:
    """Whether cached CAV stats are possible (:func:`_possible`); if not, says so in one
    warning (the CAVs are retrained)."""
    if _possible(stats):
        return True
    warnings.warn(
        f"cache file {ctx.store.path(key)} holds impossible CAV stats (non-finite values or "
        "an accuracy outside [0, 1]); the layer's CAVs are trained again",
        TcavWarning,
        stacklevel=4,
    )
    return False


def layer_rows(
    plan: Plan,
    layer: str,
    tasks: list[CavTask],
    targets: list[str],
    scores: LayerScores,
    stats: np.ndarray,
) -> pd.DataFrame:
    """The runs-table rows of one layer: every planned row for every target (target by
    target, in plan order), to be joined by :func:`runs_table`.

    Args:
        tasks: the layer's ``m`` distinct CAV tasks (:meth:`Plan.layer_tasks`).
        scores: each target's scores of each task, ``(k, m)`` per field, ``k = len(targets)``.
        stats: each task's intercept, accuracy and separation, ``(m, 3)``.
    """
    position = {task: i for i, task in enumerate(tasks)}
    rows = plan.rows
    index = np.array([position[at_layer(row.task, layer)] for row in rows])
    flip = np.array([row.flip for row in rows])
    accuracy, separation = stats[index, 1], stats[index, 2]
    frames = []
    for k, target in enumerate(targets):
        chosen = scores.pick(k, index, flip)
        frames.append(
            pd.DataFrame(
                {
                    "target": target,
                    "concept": [row.concept for row in rows],
                    "layer": layer,
                    "random": [row.random for row in rows],
                    "run": [row.run for row in rows],
                    "tcav_score": chosen.tcav_score,
                    "magnitude": chosen.magnitude,
                    "cav_accuracy": accuracy,
                    "is_null": [row.is_null for row in rows],
                    "magnitude_ratio": chosen.magnitude_ratio,
                    "separation": separation,
                    "effect": effect(chosen.magnitude, separation),
                    "kind": [row.kind for row in rows],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
