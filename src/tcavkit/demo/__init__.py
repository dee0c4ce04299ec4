"""The built-in demo: "starter creature" images with planted ground truth, a small CNN
trained on them, and ``tcavkit demo``, which runs a complete experiment and checks that
TCAV recovers the answer.

- :mod:`~tcavkit.demo.synthetic`: the image generators (:func:`make_dataset` writes the
  tensorflow/tcav folder layout);
- :mod:`~tcavkit.demo.starters`: the starter CNN and its training (:func:`train_starter_cnn`);
- :mod:`~tcavkit.demo.run`: the ``tcavkit demo`` command (:func:`run_demo`).
"""

from tcavkit.demo.run import DemoOutcome, run_demo
from tcavkit.demo.starters import CLASSES, TrainedModel, starter_cnn, train_starter_cnn
from tcavkit.demo.synthetic import CREATURE_COLOURS, make_dataset, make_images

__all__ = [
    "CLASSES",
    "CREATURE_COLOURS",
    "DemoOutcome",
    "TrainedModel",
    "make_dataset",
    "make_images",
    "run_demo",
    "starter_cnn",
    "train_starter_cnn",
]
