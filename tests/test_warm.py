"""A warm run: everything read from the cache, nothing the cache holds recomputed.

Each layer's scores are read instead of its CAVs being rebuilt and scored.
Speed itself is measured in ``bench/warm_command.py``, not here.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tcavkit.demo.starters import starter_cnn
from tcavkit.demo.synthetic import make_dataset
from tcavkit.errors import TcavWarning
from tcavkit.pipeline.experiment import Experiment
from tcavkit.store import ArrayStore

CONFIG = """\
model:
  path: {model}
  layers: [block2, block3]
  labels: [fire, water, grass]
  input:
    size: [32, 32]
data: data
targets: [fire, water]
concepts: [red, blue]
random:
  runs: 4
examples:
  min: 5
cav:
  method: mean-difference
seed: 0
cache: cache
output: results
"""

TABLES = ("runs.csv", "summary.csv")

pytestmark = [
    pytest.mark.filterwarnings("ignore:only 4 random runs:tcavkit.errors.TcavWarning"),
    pytest.mark.filterwarnings("ignore:nearly every random CAV:tcavkit.errors.TcavWarning"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("warm")
    make_dataset(
        root / "data", size=(32, 32), n_per_set=8, n_random_sets=5, concepts=("red", "blue")
    )
    torch.manual_seed(0)
    (root / "models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(starter_cnn()), str(root / "models" / "cnn.pt"))
    (root / "experiment.yaml").write_text(CONFIG.format(model="models/cnn.pt"))
    return root


def fresh(project: Path, tmp_path: Path) -> Path:
    """A copy of the project without a cache."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    return copy


# -- scores read from the cache -----------------------------------------------------------------
def test_scores_are_read_and_a_changed_target_set_scores_again(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    cold = Experiment.from_config(config, progress=False).run()
    assert cold.counts.score_layers_from_cache == 0
    warm = Experiment.from_config(config, progress=False).run()
    assert warm.counts.score_layers_from_cache == 2 and warm.counts.cavs_trained == 0
    pd.testing.assert_frame_equal(cold.runs, warm.runs)

    # another target: its gradients are new, the CAVs are not; the scores are computed
    other = Experiment.from_config(
        config, overrides=["targets=[fire, grass]"], progress=False
    ).run()
    assert other.counts.score_layers_from_cache == 0
    assert other.counts.cavs_trained == 0 and other.counts.cavs_from_cache > 0
    fire = other.runs[other.runs["target"] == "fire"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        fire, cold.runs[cold.runs["target"] == "fire"].reset_index(drop=True)
    )


def test_damaged_cached_scores_are_computed_again(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    cold = Experiment.from_config(config, progress=False).run()
    store = ArrayStore(folder / "cache")
    damaged = 0
    for meta_path in (folder / "cache").rglob("*.json"):
        meta = json.loads(meta_path.read_text())
        if isinstance(meta, dict) and meta.get("kind") == "cav-scores":
            array_path = meta_path.with_suffix(".npy")
            array = np.load(array_path)
            array[0, 0] += 0.25  # a score changed, its checksum not
            np.save(array_path, array)
            damaged += 1
    assert damaged == 2 and store.root is not None
    with pytest.warns(TcavWarning, match="damaged"):
        again = Experiment.from_config(config, progress=False).run()
    assert again.counts.score_layers_from_cache == 0
    pd.testing.assert_frame_equal(cold.runs, again.runs)
