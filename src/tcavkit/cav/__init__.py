"""Concept activation vectors: the learners, batched training, and the table of results.

- :mod:`~tcavkit.cav.learners`: the learners' math on Gram matrices (no I/O).
- :mod:`~tcavkit.cav.batch`: many CAVs of one layer trained at once, streaming the sets.
- :mod:`~tcavkit.cav.table`: the trained CAVs of an experiment, by :class:`CavKey`.
- :mod:`~tcavkit.cav.vector`: :class:`CAV` and :class:`CavTask`.

The names are imported on first use (PEP 562): reading cached CAVs (``vector``, ``table``,
``learners.VERSION``) does not load torch; training them (``batch``) does.
"""

from typing import TYPE_CHECKING

from tcavkit.lazy import lazy_namespace

if TYPE_CHECKING:
    from tcavkit.cav.batch import CavBatch, balanced_split, train_cav, train_cav_batch
    from tcavkit.cav.table import CavKey, CavTable
    from tcavkit.cav.vector import CAV, CavTask

_LAZY: dict[str, str] = {
    "CAV": "tcavkit.cav.vector",
    "CavBatch": "tcavkit.cav.batch",
    "CavKey": "tcavkit.cav.table",
    "CavTable": "tcavkit.cav.table",
    "CavTask": "tcavkit.cav.vector",
    "balanced_split": "tcavkit.cav.batch",
    "train_cav": "tcavkit.cav.batch",
    "train_cav_batch": "tcavkit.cav.batch",
}
"""Public name -> the module it is imported from on first access."""

__all__ = [
    "CAV",
    "CavBatch",
    "CavKey",
    "CavTable",
    "CavTask",
    "balanced_split",
    "train_cav",
    "train_cav_batch",
]


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, __all__)
