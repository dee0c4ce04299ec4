"""tcavkit: concept-based explanations (TCAV) for neural networks, fast and calibrated.

Everyday work needs only this namespace: :class:`Experiment` with its settings
(:class:`CavOptions`, :class:`StatsOptions`, :class:`Preprocessing`), example sources
(:class:`ImageFolder`, :class:`TensorSource`, :class:`SequenceSource`), the model adapters
and the :class:`TcavResult`. The demo's helpers are in :mod:`tcavkit.demo`.
"""

from tcavkit.cav import CAV, CavKey, train_cav
from tcavkit.errors import TcavError, TcavWarning
from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
from tcavkit.examples.sources import ImageFolder, SequenceSource, TensorSource, as_source
from tcavkit.models import ModelAdapter, TorchModel
from tcavkit.options import CavOptions, Preprocessing, StatsOptions
from tcavkit.pipeline import Experiment
from tcavkit.results import TcavResult
from tcavkit.scoring import tcav_scores
from tcavkit.version import __version__

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
