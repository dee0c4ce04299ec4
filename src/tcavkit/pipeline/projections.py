"""Every concept and random example projected on each target's mean gradient: what the
measured null of ``stats.test: concept-resample`` tests (:mod:`tcavkit.resample`).

For target ``t`` at layer ``L`` the projection of an example with activation ``a`` is
``gbar · a``, where ``gbar`` is the mean gradient of ``t``'s objective over its examples
at ``L``. A mean-difference run's effect is the difference of two sets' mean projections,
so these numbers are all the test needs. They cost one ``(n, d) @ (d, k)`` product per set
and layer, read from the activations and gradients already in the cache, and are cached
themselves (a warm run reads one small array per layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tcavkit.examples.base import ExampleSet
from tcavkit.pipeline.context import RunContext
from tcavkit.pipeline.passes import Arrays
from tcavkit.pipeline.plan import Plan
from tcavkit.store import cache_key

VERSION = 1
"""Part of the projections' cache key: bump when their definition changes."""

COLUMNS = ("target", "layer", "set", "projection")


def projections_table(
    ctx: RunContext,
    plan: Plan,
    sets: dict[str, ExampleSet],
    acts: Arrays,
    grads: Arrays,
    gradient_keys: dict[str, dict[str, str]],
) -> pd.DataFrame:
    """The projections table: one row per (target, layer, set, example), columns
    :data:`COLUMNS`, sets in name order and each set's examples in its own order.

    Args:
        plan: its CAV tasks name the concept and random sets of each layer.
        acts: set → layer → activation loader ``(n, d)``; grads: target → layer → gradient
            loader ``(n_t, d)``; gradient_keys: target → layer → the gradients' cache key
            (it keys the cached projections with the activations' keys).
    """
    targets = list(gradient_keys)
    frames = []
    for layer in ctx.layers:
        tasks, _ = plan.layer_tasks(layer)
        names = sorted({name for task in tasks for name in (task.positive, task.negative)})
        values = _layer_projections(ctx, layer, names, sets, acts, grads, gradient_keys)
        sizes = [ctx.sizes[name] for name in names]
        set_column = np.repeat(np.array(names, dtype=object), sizes)
        for k, target in enumerate(targets):
            frames.append(
                pd.DataFrame(
                    {
                        "target": target,
                        "layer": layer,
                        "set": set_column,
                        "projection": values[:, k],
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _layer_projections(
    ctx: RunContext,
    layer: str,
    names: Sequence[str],
    sets: dict[str, ExampleSet],
    acts: Arrays,
    grads: Arrays,
    gradient_keys: dict[str, dict[str, str]],
) -> np.ndarray:
    """``(sum of the sets' sizes, k targets)`` float64 projections at ``layer``, read from
    the cache or computed and cached."""
    key = cache_key(
        kind="projections",
        version=VERSION,
        activations=[ctx.keys.activations([layer], sets[name])[layer] for name in names],
        gradients=[keys[layer] for keys in gradient_keys.values()],
    )
    rows = sum(ctx.sizes[name] for name in names)
    found = ctx.store.get(key)
    if found is not None and found.shape == (rows, len(gradient_keys)):
        return np.asarray(found, dtype=np.float64)
    mean_grads = np.stack(
        [np.asarray(grads[t][layer](), dtype=np.float64).mean(axis=0) for t in gradient_keys]
    )  # (k, d)
    parts = [np.asarray(acts[name][layer](), dtype=np.float64) @ mean_grads.T for name in names]
    values = np.concatenate(parts) if parts else np.empty((0, len(gradient_keys)))
    ctx.store.put(key, values, meta={"kind": "projections", "layer": layer, "sets": list(names)})
    return values
