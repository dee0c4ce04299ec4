"""The plan of an experiment: which CAVs are trained and which rows they score. Pure.

Every row of the runs table comes from one :class:`RunRow` of the plan, for every target
and layer. A row names the CAV task that scores it, and whether the CAV is read flipped:
a null pair of random sets is trained once and scores both orientations. Tasks here carry
no layer; :func:`at_layer` gives each layer's CAV its own seed.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcavkit.cav.vector import CavTask
from tcavkit.tables import MIN_RANDOM_RUNS, few_runs_warning


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``random500_2`` before ``random500_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@functools.lru_cache(maxsize=1 << 16)
def pair_seed(seed: int, *names: str) -> int:
    """A stable 32-bit seed derived from the experiment seed and names (not Python's hash)."""
    digest = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def at_layer(task: CavTask, layer: str) -> CavTask:
    """The task at one layer: each layer's CAV gets its own seed."""
    return CavTask(task.positive, task.negative, pair_seed(task.seed, layer))


@dataclass(frozen=True)
class RunRow:
    """One scored row: which CAV (possibly flipped) stands for which (concept, random, run).

    ``kind`` is ``concept``, ``relative`` (``concept`` is then ``"A vs B"``) or ``null`` (a
    random set taken as a pseudo-concept against another random set).
    """

    concept: str
    random: str
    run: int
    is_null: bool
    kind: str
    task: CavTask
    flip: bool


@dataclass(frozen=True)
class Plan:
    """Every scored row, and notes on the plan that change how results should be read."""

    rows: tuple[RunRow, ...]
    notes: tuple[str, ...] = ()

    def layer_tasks(self, layer: str) -> tuple[list[CavTask], list[int]]:
        """The distinct CAV tasks at ``layer`` in plan order, and the random run of the
        first row each task scores."""
        tasks: dict[CavTask, int] = {}
        for row in self.rows:
            tasks.setdefault(at_layer(row.task, layer), row.run)
        return list(tasks), list(tasks.values())


def plan_runs(
    concepts: Sequence[str],
    random: Sequence[str],
    relative: Sequence[tuple[str, str]],
    runs: int,
    seed: int,
) -> Plan:
    """The plan: each concept against the first ``runs`` random sets, each relative pair
    ``runs`` times (a seed per run), and each random set as a pseudo-concept against as many
    of the others (each pair trained once, in the order of ``random``)."""
    notes = []
    n_runs = min(runs, len(random))
    if runs > len(random):
        notes.append(
            f"runs: {runs} random runs asked for but only {len(random)} random sets exist; "
            f"using {n_runs}. Add random sets to get more runs"
        )
    if n_runs < MIN_RANDOM_RUNS:
        notes.append(few_runs_warning(n_runs))
    rows: list[RunRow] = []
    for concept in concepts:
        for run, negative in enumerate(random[:n_runs]):
            task = CavTask(concept, negative, pair_seed(seed, concept, negative))
            rows.append(RunRow(concept, negative, run, False, "concept", task, False))
    for a, b in relative:
        for run in range(n_runs):
            task = CavTask(a, b, pair_seed(seed, a, b, str(run)))
            rows.append(RunRow(f"{a} vs {b}", b, run, False, "relative", task, False))
    n_null = min(n_runs, len(random) - 1)
    for j, pseudo in enumerate(random):
        others = [name for name in random if name != pseudo][:n_null]
        for run, other in enumerate(others):
            k = random.index(other)
            first, second = (pseudo, other) if j < k else (other, pseudo)
            task = CavTask(first, second, pair_seed(seed, first, second))
            rows.append(RunRow(pseudo, other, run, True, "null", task, j > k))
    return Plan(tuple(rows), tuple(notes))
