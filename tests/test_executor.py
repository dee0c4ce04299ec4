"""The executor setting (``executor: local | ray``, ``ray: {...}``), checked without Ray:
validation, the command line's flags, and the one-line errors when Ray cannot be used.
The runs on Ray are in test_ray.py."""

from __future__ import annotations

import sys

import pytest

from conftest import axis_model
from tcavkit import Experiment
from tcavkit.cli import executor_overrides
from tcavkit.config import parse_config
from tcavkit.errors import ConfigError
from tcavkit.options import RayOptions

pytestmark = pytest.mark.filterwarnings("ignore::tcavkit.errors.TcavWarning")  # 2 runs

BASE = {"model": {"path": "m.pt", "layers": ["1"]}, "data": "data", "targets": ["a"]}


def test_the_executor_is_local_unless_the_file_says_ray(tmp_path):
    config = parse_config(dict(BASE), tmp_path)
    assert config.executor == "local"
    assert config.ray == RayOptions()
    raw = {**BASE, "executor": "ray", "ray": {"address": "auto", "workers": 4}}
    raw["ray"]["gpus_per_worker"] = 1
    config = parse_config(raw, tmp_path)
    assert config.executor == "ray"
    assert config.ray == RayOptions(address="auto", workers=4, gpus_per_worker=1.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"executor": "spark"}, "executor"),
        ({"ray": {"workers": 0}}, "ray.workers must be a whole number of at least 1"),
        ({"ray": {"cpus_per_worker": 0}}, "ray.cpus_per_worker must be positive"),
        ({"ray": {"gpus_per_worker": -1}}, "ray.gpus_per_worker must be 0 or more"),
        ({"ray": {"gpus_per_worker": True}}, "ray.gpus_per_worker: expected a number"),
        ({"ray": {"adress": "auto"}}, "did you mean 'address'"),
    ],
)
def test_bad_executor_settings_are_named(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, **extra}, tmp_path)


def test_the_command_line_flags_become_overrides():
    assert executor_overrides(None, None) == []
    assert executor_overrides("local", None) == ['executor="local"']
    # An address selects ray; it is quoted so that YAML keeps HOST:PORT as text.
    assert executor_overrides(None, "10.0.0.1:6379") == [
        'executor="ray"',
        'ray.address="10.0.0.1:6379"',
    ]


def axis_experiment(inputs, **kwargs) -> Experiment:
    targets, concepts, random = inputs
    return Experiment(
        axis_model(),
        layers=["1"],
        targets={"0": targets["a"]},
        concepts=concepts,
        random=dict(list(random.items())[:3]),
        runs=2,
        min_examples=5,
        progress=False,
        device="cpu",
        **kwargs,
    )


def test_an_unknown_executor_fails_when_the_experiment_is_made(axis_experiment_inputs):
    with pytest.raises(ConfigError, match="unknown executor 'spark'; choose one of local, ray"):
        axis_experiment(axis_experiment_inputs, executor="spark", cache_dir=None)


def test_ray_missing_is_one_line_saying_how_to_install_it(
    axis_experiment_inputs, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    experiment = axis_experiment(
        axis_experiment_inputs, executor="ray", cache_dir=str(tmp_path / "cache")
    )
    with pytest.raises(ConfigError) as caught:
        experiment.run()
    assert str(caught.value) == (
        "executor: ray needs the ray package, which is not installed: "
        "pip install 'tcavkit[ray]' (or set executor: local)"
    )


def test_ray_without_a_cache_folder_is_refused(axis_experiment_inputs):
    experiment = axis_experiment(axis_experiment_inputs, executor="ray", cache_dir=None)
    with pytest.raises(ConfigError, match="executor: ray needs a cache folder that every node"):
        experiment.run()
