"""A tiny experiment folder on disk (starter creatures and an untrained scripted starter
CNN), shared by the tests of warm runs and of the plot cache."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from tcavkit.demo.starters import starter_cnn
from tcavkit.demo.synthetic import make_dataset


def write_project(root: Path, config: str) -> Path:
    """``root/data`` (targets, red and blue, 5 random sets of 8 images at 32x32),
    ``root/models/cnn.pt`` (seed 0) and ``root/experiment.yaml`` holding ``config``."""
    make_dataset(
        root / "data", size=(32, 32), n_per_set=8, n_random_sets=5, concepts=("red", "blue")
    )
    torch.manual_seed(0)
    (root / "models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(starter_cnn()), str(root / "models" / "cnn.pt"))
    (root / "experiment.yaml").write_text(config)
    return root


def fresh(project: Path, tmp_path: Path) -> Path:
    """A copy of the project without a cache."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    return copy
