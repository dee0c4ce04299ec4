"""tcavkit: concept-based explanations (TCAV) for neural networks, fast and calibrated.

Everyday work needs only this namespace: :class:`Experiment` with its settings
(:class:`CavOptions`, :class:`StatsOptions`, :class:`Preprocessing`), example sources
(:class:`ImageFolder`, :class:`TensorSource`, :class:`SequenceSource`), the model adapters
and the :class:`TcavResult`. The demo's helpers are in :mod:`tcavkit.demo`.

The names are imported on first use (PEP 562), so ``import tcavkit`` (and the command
line, which imports it first) does not load torch, pandas or scipy until they are needed.
"""

from typing import TYPE_CHECKING

from tcavkit.lazy import lazy_namespace
from tcavkit.version import __version__

if TYPE_CHECKING:
    from tcavkit.cav import CAV, CavKey, train_cav
    from tcavkit.errors import TcavError, TcavWarning
    from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
    from tcavkit.examples.sources import ImageFolder, SequenceSource, TensorSource, as_source
    from tcavkit.models import ModelAdapter, TorchModel
    from tcavkit.options import CavOptions, Preprocessing, StatsOptions
    from tcavkit.pipeline import Experiment
    from tcavkit.results import TcavResult
    from tcavkit.scoring import tcav_scores

_LAZY: dict[str, str] = {
    "CAV": "tcavkit.cav",
    "CavKey": "tcavkit.cav",
    "train_cav": "tcavkit.cav",
    "TcavError": "tcavkit.errors",
    "TcavWarning": "tcavkit.errors",
    "ExampleSet": "tcavkit.examples.base",
    "ExampleSource": "tcavkit.examples.base",
    "Selection": "tcavkit.examples.base",
    "ImageFolder": "tcavkit.examples.sources",
    "SequenceSource": "tcavkit.examples.sources",
    "TensorSource": "tcavkit.examples.sources",
    "as_source": "tcavkit.examples.sources",
    "ModelAdapter": "tcavkit.models",
    "TorchModel": "tcavkit.models",
    "CavOptions": "tcavkit.options",
    "Preprocessing": "tcavkit.options",
    "StatsOptions": "tcavkit.options",
    "Experiment": "tcavkit.pipeline",
    "TcavResult": "tcavkit.results",
    "tcav_scores": "tcavkit.scoring",
}
"""Public name -> the module it is imported from on first access."""

__all__ = [
    "CAV",
    "CavKey",
    "CavOptions",
    "ExampleSet",
    "ExampleSource",
    "Experiment",
    "ImageFolder",
    "ModelAdapter",
    "Preprocessing",
    "Selection",
    "SequenceSource",
    "StatsOptions",
    "TcavError",
    "TcavResult",
    "TcavWarning",
    "TensorSource",
    "TorchModel",
    "__version__",
    "as_source",
    "tcav_scores",
    "train_cav",
]


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, __all__)
