"""The trained CAVs of an experiment, looked up by what they are: :class:`CavTable`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tcavkit.cav.vector import CAV, CavTask

if TYPE_CHECKING:
    import torch


class CavKey(NamedTuple):
    """Which CAV: ``positive`` against ``negative`` at ``layer``, in random run ``run``.

    For a concept, ``negative`` is the random set of run ``run``; for a relative pair
    (A, B), ``negative`` is B and every run has its own CAV; for the null, ``positive``
    and ``negative`` are two random sets (each pair trained once).
    """

    positive: str
    negative: str
    layer: str
    run: int


class CavTable(Mapping[CavKey, CAV]):
    """Trained CAVs by :class:`CavKey`, each rebuilt when looked up.

    A layer is kept as its tasks, the learners' coefficients and the stats; a direction is
    rebuilt from the coefficients and the (cached) activations on demand, so thousands of
    CAVs cost no memory until one is looked at.
    """

    def __init__(self) -> None:
        self._layers: dict[str, tuple[list[CavTask], dict[CavKey, int], Any, Any]] = {}
        self._stats: dict[str, np.ndarray] = {}

    def add_layer(
        self,
        layer: str,
        tasks: Sequence[CavTask],
        runs: Sequence[int],
        coefficients: np.ndarray,
        stats: np.ndarray,
        rebuild: Callable[[Sequence[CavTask], np.ndarray], torch.Tensor],
    ) -> None:
        """Register ``layer``: ``coefficients`` ``(m, n_train)`` and ``stats`` ``(m, 3)``
        (intercept, accuracy, separation) in the order of ``tasks``, each task trained for
        random run ``runs[i]``; ``rebuild(tasks, coefficients)`` gives their directions
        (:func:`~tcavkit.cav.batch.cav_directions`)."""
        index = {
            CavKey(task.positive, task.negative, layer, run): i
            for i, (task, run) in enumerate(zip(tasks, runs, strict=True))
        }
        self._layers[layer] = (list(tasks), index, coefficients, rebuild)
        self._stats[layer] = np.asarray(stats, dtype=np.float64)

    def __getitem__(self, key: tuple[str, str, str, int]) -> CAV:
        key = CavKey(*key)
        tasks, index, coefficients, rebuild = self._layers[key.layer]
        i = index[key]
        direction = rebuild([tasks[i]], coefficients[i : i + 1])[0]
        intercept, accuracy, separation = self._stats[key.layer][i]
        return CAV(
            direction.cpu().numpy().astype(np.float32),
            float(intercept),
            float(accuracy),
            float(separation),
        )

    def __iter__(self) -> Iterator[CavKey]:
        for _, index, _, _ in self._layers.values():
            yield from index

    def __len__(self) -> int:
        return sum(len(index) for _, index, _, _ in self._layers.values())
