"""tcavkit: concept-based explanations (TCAV) for neural networks, fast and calibrated."""

__version__ = "0.1.0"

from tcavkit.cav import CAV, CavOptions, train_cav
from tcavkit.concepts.base import ExampleSet, ExampleSource, Selection
from tcavkit.concepts.preprocessing import Preprocessing
from tcavkit.concepts.sources import (
    ImageFolder,
    SequenceSource,
    TensorSource,
    as_source,
)
from tcavkit.errors import TcavError, TcavWarning
from tcavkit.experiment import Experiment, StatsOptions
from tcavkit.models import ModelAdapter, TorchModel
from tcavkit.results import TcavResult
from tcavkit.scoring import tcav_scores

__all__ = [
    "CAV",
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
