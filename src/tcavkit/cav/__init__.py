"""Concept activation vectors: the learners, batched training, and the table of results.

- :mod:`~tcavkit.cav.learners`: the learners' math on Gram matrices (no I/O).
- :mod:`~tcavkit.cav.batch`: many CAVs of one layer trained at once, streaming the sets.
- :mod:`~tcavkit.cav.table`: the trained CAVs of an experiment, by :class:`CavKey`.
"""

from tcavkit.cav.batch import CavBatch, CavTask, balanced_split, train_cav, train_cav_batch
from tcavkit.cav.table import CavKey, CavTable
from tcavkit.cav.vector import CAV

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
