"""One run's state: made fresh by every :meth:`Experiment.run` (and
:meth:`Experiment.concept_cavs`), so nothing of one run is left on the experiment."""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from tcavkit.examples.prefetch import Prefetcher
from tcavkit.models.adapter import ModelAdapter
from tcavkit.options import CavOptions
from tcavkit.pipeline.keys import KeyMaker
from tcavkit.results import Counts
from tcavkit.store import ArrayStore


@dataclass
class RunContext:
    """What the passes of one run share.

    Attributes:
        keys: cache keys for this run's model fingerprint and preprocessing.
        gradient: what the target gradients differentiate: ``logit`` or ``log_softmax``
            (see :meth:`~tcavkit.models.ModelAdapter.gradients`).
        loads: decodes example sets (one ahead of the model); set while the model runs.
        sizes: set name → number of examples, learned as each set is computed or read.
        skipped: set name → files skipped as unreadable.
        counts: what was computed and what was read from the cache.
    """

    adapter: ModelAdapter
    store: ArrayStore
    keys: KeyMaker
    layers: list[str]
    cav: CavOptions
    batch_size: int
    progress: bool
    gradient: str = "logit"
    loads: Prefetcher | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)

    def bar(self, total: int, desc: str, unit: str) -> tqdm:
        """A progress bar for one phase (silent without ``progress``)."""
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, leave=False)
