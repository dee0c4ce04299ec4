"""``tcavkit demo``: a complete TCAV experiment with a known answer, in about a minute.

It generates "starter creature" images whose class is decided by body colour alone
(fire = red, water = blue, grass = green), trains a small CNN on them, writes an
experiment file next to the data, runs it exactly as ``tcavkit run`` does and checks that
TCAV recovers each class's colour.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tcavkit.demo.starters import CLASSES, TrainedModel, train_starter_cnn
from tcavkit.demo.synthetic import CREATURE_COLOURS, DEFAULT_CONCEPTS, make_dataset
from tcavkit.workflow import RunOutcome, run_experiment_file

DEMO_CONCEPTS = DEFAULT_CONCEPTS
DEMO_LAYERS = ("block2", "block3")

EXPERIMENT_TEMPLATE = """\
# A TCAV experiment written by `tcavkit demo`. Paths are relative to this file.
# Run it again with:   tcavkit run {name}

model:
  path: models/starters.pt        # TorchScript file (torch.jit.save): loads without pickle
  layers: [{layers}]            # where concepts are looked for (tcavkit layers models/starters.pt)
  labels: [{labels}]      # class names in the model's output order
  input:
    size: [{size}, {size}]                 # images are resized to this (height, width)

data: data                        # one sub-folder per target, concept and random set
targets: [{labels}]    # classes to explain
concepts: [{concepts}]

random:
  sets: "random500_*"             # random (negative) sets: a glob over the data folder
  runs: {runs}                        # random runs per concept (20 or more recommended)

examples:
  max: 100                        # examples used per set
  min: 10

cav:
  method: mean-difference         # fast and stable; `hinge` is tensorflow/tcav's objective

stats: {{}}                         # defaults: concept-level t-test, alpha 0.05, Holm correction

seed: 0
cache: .tcavkit-cache             # activation cache; a rerun reuses it
output: results                   # where `tcavkit run` writes tables, plots and report.html
"""


DISCOVER_TEMPLATE = """\
# A concept-discovery experiment written by `tcavkit demo --discover`. Paths are relative
# to this file. Run it again with:   tcavkit discover {name}

model:
  path: models/starters.pt        # TorchScript file (torch.jit.save): loads without pickle
  layers: [{layers}]
  labels: [{labels}]
  input:
    size: [{size}, {size}]

data: data                        # the targets' images and the random sets
targets: [{labels}]

random:
  sets: "random500_*"
  runs: {runs}

cav:
  method: mean-difference

discover:
  targets: [{targets}]            # the classes whose concepts are discovered
  images: {images}                      # target images segmented
  segments: [{segments}]          # SLIC segment counts, one resolution each
  compactness: 20
  clusters: {clusters}                    # k-means clusters per layer
  min_images: 5                   # a concept comes from at least this many images
  max_patches: 30                 # patches kept per concept (nearest the centre)

seed: 0
cache: .tcavkit-cache
output: results                   # `tcavkit discover` writes into results/discover
"""
DISCOVER_LAYERS = ("block2", "block3")


def ground_truth(summary: pd.DataFrame) -> dict[str, bool]:
    """For each class: is its body colour significant and positive (the direction of the
    tested statistic) at one layer or more?"""
    passed = {}
    for target in CLASSES:
        colour = CREATURE_COLOURS[target]
        rows = summary[(summary["target"] == target) & (summary["concept"] == colour)]
        passed[target] = bool((rows["direction"] == "positive").any())
    return passed


@dataclass(frozen=True)
class DemoOutcome:
    """What :func:`run_demo` did."""

    experiment_file: Path
    run: RunOutcome
    train_accuracy: float
    test_accuracy: float
    passed: dict[str, bool]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(self.passed.values())


def write_experiment_file(path: Path, *, size: int, runs: int) -> Path:
    """The demo's experiment YAML (readable, with comments)."""
    text = EXPERIMENT_TEMPLATE.format(
        name=path.name,
        layers=", ".join(DEMO_LAYERS),
        labels=", ".join(CLASSES),
        size=size,
        concepts=", ".join(DEMO_CONCEPTS),
        runs=runs,
    )
    path.write_text(text, encoding="utf-8")
    return path


def _data_and_model(
    out: Path,
    size: int,
    n_per_set: int,
    n_random: int,
    concepts: Sequence[str],
    epochs: int,
    n_train_per_class: int,
    echo: Callable[[str], None],
) -> tuple[TrainedModel, Path]:
    """Both demos' first steps: the starter creatures (targets, ``concepts``, random sets)
    in ``out/data``, and the starter CNN trained and scripted to ``out/models/starters.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    echo(f"generating images ({size}x{size}) in {out / 'data'}")
    make_dataset(
        out / "data",
        size=(size, size),
        n_per_set=n_per_set,
        n_random_sets=n_random,
        concepts=concepts,
    )
    echo("training the starter CNN (fire = red, water = blue, grass = green)")
    trained = train_starter_cnn(
        size=(size, size), n_per_class=n_train_per_class, epochs=epochs, seed=0
    )
    echo(
        f"  train accuracy {trained.train_accuracy:.1%}, test accuracy {trained.test_accuracy:.1%}"
    )
    model_path = out / "models" / "starters.pt"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(trained.model), str(model_path))
    return trained, model_path


def run_demo(
    out_dir: str | Path,
    size: int = 64,
    n_per_set: int = 30,
    n_random: int = 20,
    epochs: int = 6,
    n_train_per_class: int = 100,
    quick: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoOutcome:
    """Generate data, train the starter CNN, write and run the experiment, check the answer.

    ``quick`` uses smaller images and sets (for CI) that still recover the ground truth.
    """
    started = time.perf_counter()
    if quick:
        size, n_per_set, n_random, epochs, n_train_per_class = 32, 20, 20, 6, 60
    out = Path(out_dir)
    trained, model_path = _data_and_model(
        out, size, n_per_set, n_random, DEMO_CONCEPTS, epochs, n_train_per_class, echo
    )
    experiment_file = write_experiment_file(
        out / "experiment.yaml", size=size, runs=min(20, n_random)
    )
    echo(f"wrote {model_path} and {experiment_file}")
    outcome = run_experiment_file(experiment_file, progress=progress)
    passed = ground_truth(outcome.result.summary)
    return DemoOutcome(
        experiment_file=experiment_file,
        run=outcome,
        train_accuracy=trained.train_accuracy,
        test_accuracy=trained.test_accuracy,
        passed=passed,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class DiscoverDemoOutcome:
    """What :func:`run_discover_demo` did."""

    experiment_file: Path
    discovery: Any
    train_accuracy: float
    test_accuracy: float
    seconds: float


def write_discover_file(
    path: Path,
    *,
    size: int,
    runs: int,
    targets: tuple[str, ...],
    images: int,
    segments: tuple[int, ...],
    clusters: int,
) -> Path:
    """The discovery demo's experiment YAML (readable, with comments)."""
    text = DISCOVER_TEMPLATE.format(
        name=path.name,
        layers=", ".join(DISCOVER_LAYERS),
        labels=", ".join(CLASSES),
        size=size,
        runs=runs,
        targets=", ".join(targets),
        images=images,
        segments=", ".join(str(n) for n in segments),
        clusters=clusters,
    )
    path.write_text(text, encoding="utf-8")
    return path


def run_discover_demo(
    out_dir: str | Path,
    *,
    size: int = 64,
    images: int = 30,
    n_random: int = 12,
    n_per_set: int = 30,
    segments: tuple[int, ...] = (15, 50),
    clusters: int = 12,
    targets: tuple[str, ...] = ("fire",),
    epochs: int = 6,
    n_train_per_class: int = 100,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DiscoverDemoOutcome:
    """Generate starter creatures, train the starter CNN, write an experiment file with a
    ``discover:`` block and run ``tcavkit discover`` on it. The class is decided by body
    colour alone, so the concept to find for fire is the red body."""
    from tcavkit.discover import discover

    started = time.perf_counter()
    out = Path(out_dir)
    trained, model_path = _data_and_model(
        out, size, max(n_per_set, images), n_random, (), epochs, n_train_per_class, echo
    )
    experiment_file = write_discover_file(
        out / "discover.yaml",
        size=size,
        runs=n_random,
        targets=targets,
        images=images,
        segments=segments,
        clusters=clusters,
    )
    echo(f"wrote {model_path} and {experiment_file}")
    discovery = discover(experiment_file, progress=progress, echo=echo)
    return DiscoverDemoOutcome(
        experiment_file=experiment_file,
        discovery=discovery,
        train_accuracy=trained.train_accuracy,
        test_accuracy=trained.test_accuracy,
        seconds=time.perf_counter() - started,
    )
