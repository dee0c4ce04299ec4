"""Where a run's heavy work runs: the seam between :meth:`Experiment.run` and the engine.

An executor does the two heavy stages of a run, the model passes (activations of concept
and random sets, gradients of target sets, all through the cache) and the CAVs with their
scores, and gives back what the local code gives: loaders of cached arrays, the runs table
and the :class:`~tcavkit.cav.table.CavTable`. The statistics, results and report stay on
the caller's machine whatever the executor.

The seam is stateless: everything the second stage needs is passed to it (the first
stage's loaders, and the same targets, from which it derives the targets' gradient cache
keys), so an executor keeps no state of a run between its two calls.

- :class:`LocalExecutor` (``executor: local``, the default): this process, in order.
- :class:`~tcavkit.pipeline.ray_executor.RayExecutor` (``executor: ray``): a Ray cluster,
  imported only when chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import pandas as pd

from tcavkit.cav.table import CavTable
from tcavkit.examples.base import ExampleSet
from tcavkit.examples.prefetch import Prefetcher
from tcavkit.models.adapter import ModelAdapter
from tcavkit.options import EXECUTORS, RayOptions, check_choice
from tcavkit.pipeline.context import RunContext
from tcavkit.pipeline.passes import (
    Arrays,
    activation_pass,
    gradient_keys,
    gradient_pass,
    sets_to_compute,
)
from tcavkit.pipeline.plan import Plan
from tcavkit.pipeline.training import train_and_score

ModelLoader = Callable[[], ModelAdapter]
"""``() -> adapter``: builds the experiment's model where it is called (a Ray worker)."""


class Executor(Protocol):
    """The heavy stages of one run (see the module)."""

    def passes(
        self,
        ctx: RunContext,
        sets: dict[str, ExampleSet],
        example_sets: Sequence[str],
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[Arrays, Arrays]:
        """``(activations, gradients)``: {set name: {layer: loader}} of the concept and random
        sets ``example_sets`` and of the targets (name → class index). Adds the time of
        each pass to ``timings`` (``activations``, ``gradients``)."""
        ...

    def train_and_score(
        self,
        ctx: RunContext,
        plan: Plan,
        sets: dict[str, ExampleSet],
        acts: Arrays,
        grads: Arrays,
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[pd.DataFrame, CavTable]:
        """The runs table and every CAV, as :func:`tcavkit.pipeline.training.train_and_score`.

        ``acts``, ``grads``: what :meth:`passes` returned; ``targets``: what it was given
        (name → class index), whose order is the runs table's. Adds ``cavs`` and ``scores``
        to ``timings``."""
        ...


class LocalExecutor:
    """Everything in this process: one set after another through the model (the next set
    decoded meanwhile), then the CAVs layer by layer. The targets' gradient keys let a
    layer whose CAVs, stats and scores are all cached be read whole."""

    def passes(
        self,
        ctx: RunContext,
        sets: dict[str, ExampleSet],
        example_sets: Sequence[str],
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[Arrays, Arrays]:
        order = [examples for examples, _ in sets_to_compute(ctx, sets, example_sets, targets)]
        with Prefetcher(ctx.keys.preprocessing, order) as ctx.loads:
            with timed(timings, "activations"):
                acts = activation_pass(ctx, sets, example_sets)
            with timed(timings, "gradients"):
                grads = gradient_pass(ctx, sets, targets)
        return acts, grads

    def train_and_score(
        self,
        ctx: RunContext,
        plan: Plan,
        sets: dict[str, ExampleSet],
        acts: Arrays,
        grads: Arrays,
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[pd.DataFrame, CavTable]:
        keys = {name: gradient_keys(ctx, sets[name], k) for name, k in targets.items()}
        return train_and_score(ctx, plan, sets, acts, grads, list(targets), timings, keys)


@contextmanager
def open_executor(
    name: str,
    ray: RayOptions,
    ctx: RunContext,
    model: ModelAdapter | ModelLoader,
) -> Iterator[Executor]:
    """The executor ``name`` (``local`` or ``ray``) for one run, closed when the block ends.

    Args:
        ray: the Ray settings (read only for ``ray``).
        model: what a Ray worker builds its model from: a loader, or the adapter itself
            (sent to each worker once).

    Raises:
        ConfigError: ``ray`` without the ray package, or without a cache folder.
    """
    check_choice(name, EXECUTORS, "executor")
    if name == "local":
        yield LocalExecutor()
        return
    from tcavkit.pipeline.ray_executor import RayExecutor  # imports ray: only when chosen

    with RayExecutor.open(ray, ctx, model) as executor:
        yield executor


@contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the block's wall time to ``timings[phase]`` (0 when absent)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
