"""A warm run: everything read from the cache, nothing the cache holds recomputed.

A run whose activations, gradients, CAVs and scores are all cached reads the model's
facts instead of loading a TorchScript file, reads each layer's scores instead of
rebuilding the CAVs, copies unchanged plots from the plot cache, and so imports neither
torch, matplotlib nor scipy.stats; its tables are byte-identical to the cold run's.
Speed itself is measured in ``bench/warm_command.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tcavkit.demo.starters import starter_cnn
from tcavkit.errors import LayerError, TcavWarning
from tcavkit.models.deferred import DeferredModel, open_model
from tcavkit.pipeline.experiment import Experiment
from tcavkit.store import ArrayStore
from tiny_project import fresh, write_project

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
    return write_project(tmp_path_factory.mktemp("warm"), CONFIG.format(model="models/cnn.pt"))


def run_in_subprocess(folder: Path, out: str) -> set[str]:
    """``tcavkit run`` in a fresh interpreter; the modules it imported."""
    code = (
        "import json, sys\n"
        "from tcavkit.cli import app\n"
        "try:\n"
        f"    app(['run', 'experiment.yaml', '--quiet', '--out', {out!r}])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_warm_run_imports_no_torch_and_writes_the_same_tables(project, tmp_path):
    folder = fresh(project, tmp_path)
    cold = run_in_subprocess(folder, "cold")
    assert "torch" in cold and "matplotlib" in cold
    warm = run_in_subprocess(folder, "warm")
    heavy = {name for name in warm if name.split(".")[0] in ("torch", "matplotlib")}
    assert not heavy, sorted(heavy)[:5]
    assert "scipy.stats" not in warm
    for name in TABLES:
        assert (folder / "cold" / name).read_bytes() == (folder / "warm" / name).read_bytes()
    counts = json.loads((folder / "warm" / "results.json").read_text())["counts"]
    assert counts["forward_batches"] == counts["backward_batches"] == 0
    assert counts["cavs_trained"] == 0 and counts["score_layers_from_cache"] == 2
    cold_plots = sorted(p.name for p in (folder / "cold" / "plots").iterdir())
    assert cold_plots == sorted(p.name for p in (folder / "warm" / "plots").iterdir())
    for name in cold_plots:
        assert (folder / "cold" / "plots" / name).read_bytes() == (
            folder / "warm" / "plots" / name
        ).read_bytes()


# -- the model file, loaded only when it has to run -------------------------------------------
def test_model_facts_are_read_instead_of_loading_the_file(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    first = Experiment.from_config(config, progress=False)
    assert isinstance(first.adapter, DeferredModel) and first.adapter.loaded  # no facts yet
    fingerprint = first.adapter.fingerprint()
    assert fingerprint == first.adapter.model.fingerprint()
    cold = first.run()

    second = Experiment.from_config(config, progress=False)
    assert isinstance(second.adapter, DeferredModel) and not second.adapter.loaded
    assert second.adapter.fingerprint() == fingerprint
    warm = second.run()
    assert not second.adapter.loaded
    pd.testing.assert_frame_equal(cold.runs, warm.runs)

    # a CAV looked up afterwards is rebuilt from the cached activations, as before
    key = next(iter(warm.cavs))
    np.testing.assert_array_equal(warm.cavs[key].direction, cold.cavs[key].direction)


def test_a_model_first_loaded_inside_inference_mode_still_gives_gradients(project, tmp_path):
    # tcavkit discover's patch pass (pooled_activations, under torch.inference_mode) can be
    # the first use of a deferred model; its weights must not become inference tensors.
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    Experiment.from_config(config, progress=False)  # records the facts
    adapter = Experiment.from_config(config, progress=False).adapter
    assert isinstance(adapter, DeferredModel) and not adapter.loaded
    x = torch.rand(2, 3, 32, 32)
    adapter.pooled_activations(x, ["block2"])
    assert adapter.loaded
    grads = adapter.gradients(x, 0, ["block2"])
    assert grads["block2"].shape[0] == 2 and torch.isfinite(grads["block2"]).all()


def test_a_layer_not_accepted_before_is_checked_on_the_loaded_model(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    Experiment.from_config(config, progress=False)  # records the facts
    with pytest.raises(LayerError, match="block9"):
        Experiment.from_config(config, overrides=["model.layers=[block9]"], progress=False)
    again = Experiment.from_config(config, overrides=["model.layers=[block1]"], progress=False)
    assert again.adapter.loaded  # block1 was new: checked on the model, then remembered
    third = Experiment.from_config(config, overrides=["model.layers=[block1]"], progress=False)
    assert not third.adapter.loaded


def test_a_changed_model_file_is_loaded_again(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    before = Experiment.from_config(config, progress=False).adapter.fingerprint()
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(starter_cnn()), str(folder / "models" / "cnn.pt"))
    changed = Experiment.from_config(config, progress=False)
    assert changed.adapter.loaded and changed.adapter.fingerprint() != before


def test_models_that_are_not_whole_files_are_loaded_at_once(project, tmp_path):
    from tcavkit.config import load_config

    folder = fresh(project, tmp_path)
    spec = load_config(folder / "experiment.yaml").model
    assert isinstance(open_model(spec, device="cpu", cache_dir=folder / "cache"), DeferredModel)
    assert not isinstance(open_model(spec, device="cpu", cache_dir=None), DeferredModel)
    torch.save(starter_cnn().state_dict(), folder / "models" / "weights.pt")
    factory = spec.model_copy(
        update={
            "path": None,
            "factory": "tcavkit.demo.starters:starter_cnn",
            "weights": folder / "models" / "weights.pt",
        }
    )
    assert not isinstance(
        open_model(factory, device="cpu", cache_dir=folder / "cache"), DeferredModel
    )


def test_damaged_model_facts_are_recorded_again(project, tmp_path):
    folder = fresh(project, tmp_path)
    config = folder / "experiment.yaml"
    first = Experiment.from_config(config, progress=False).adapter
    path = ArrayStore(folder / "cache").path(first._key).with_suffix(".json")
    path.write_text("{not json")
    with pytest.warns(TcavWarning, match="damaged"):
        again = Experiment.from_config(config, progress=False).adapter
    assert again.loaded and again.fingerprint() == first.fingerprint()
    assert not Experiment.from_config(config, progress=False).adapter.loaded


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
