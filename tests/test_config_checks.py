"""The experiment file is read strictly: no ``true`` for a number, no trust from the file,
no folder outside ``data:``, and sets that cannot play two roles at once."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import axis_model
from tcavkit import CavOptions, Experiment
from tcavkit.config import load_config
from tcavkit.errors import ConfigError, TcavWarning

BASE = """\
model:
  path: model.pt
  layers: ["1"]
  labels: [fire, water]
  input: {size: [8, 8]}
data: data
targets: [fire]
concepts: [red]
"""


@pytest.fixture
def experiment_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(BASE, encoding="utf-8")
    return path


def refused(path: Path, *overrides: str) -> str:
    """The one-line message of the ConfigError that loading ``path`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# -- numbers are numbers --------------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "random.runs=true",
        "batch_size=true",
        "seed=true",
        "seed=false",
        "examples.max=true",
        "examples.min=true",
        "cav.max_iter=true",
        "cav.alpha=true",
        "cav.test_fraction=false",
        "stats.alpha=true",
        "model.input.size=[true, 8]",
    ],
)
def test_true_is_not_a_number(experiment_file: Path, override: str) -> None:
    key, _, value = override.partition("=")
    message = refused(experiment_file, override).partition(".yaml: ")[2]
    assert message.startswith(f"{key}: "), message
    assert f"got {value}" in message, message


def test_numbers_given_as_text_are_refused_for_whole_number_keys(experiment_file: Path) -> None:
    assert "seed" in refused(experiment_file, "seed='3'")
    assert "random.runs" in refused(experiment_file, "random.runs=2.5")


def test_numbers_and_flags_still_read(experiment_file: Path) -> None:
    config = load_config(
        experiment_file,
        [
            "random.runs=3",
            "seed=7",
            "batch_size=4",
            "examples.max=null",
            "cav.alpha=1",
            "cav.max_iter=20",
            "model.input.channels_last=true",
        ],
    )
    assert (config.random.runs, config.seed, config.batch_size) == (3, 7, 4)
    assert config.examples.max is None and config.cav.alpha == 1.0
    assert config.model.input.channels_last is True


# -- trust is the user's, not the file's ----------------------------------------------------
def test_model_trusted_is_refused(experiment_file: Path) -> None:
    text = experiment_file.read_text().replace(
        "  path: model.pt\n", "  path: model.pt\n  trusted: true\n"
    )
    experiment_file.write_text(text)
    message = refused(experiment_file)
    assert "model.trusted" in message
    assert "--trust-model-file" in message and "TCAVKIT_TRUST_MODEL_FILE=1" in message


# -- names are folder names under data: -----------------------------------------------------
@pytest.mark.parametrize(
    ("override", "key", "name"),
    [
        ("concepts=[red, ../secrets]", "concepts", "../secrets"),
        ("concepts=[/etc]", "concepts", "/etc"),
        ("targets=[..]", "targets", ".."),
        ("targets=[fire/inner]", "targets", "fire/inner"),
        ("concepts=['a\\b']", "concepts", "a\\b"),
        ("concepts=['.']", "concepts", "."),
        ("random.sets=[random500_0, ../random500_1]", "random.sets", "../random500_1"),
    ],
)
def test_names_outside_the_data_folder_are_refused(
    experiment_file: Path, override: str, key: str, name: str
) -> None:
    message = refused(experiment_file, override)
    assert f"{key}: {name!r} is not a folder name" in message, message
    assert "data folder" in message


def test_plain_folder_names_are_accepted(experiment_file: Path) -> None:
    config = load_config(
        experiment_file,
        ["concepts=[red, fire truck, é_rouge, v1.2]", "random.sets=[random500_0, r-1]"],
    )
    assert config.concepts == ["red", "fire truck", "é_rouge", "v1.2"]
    assert config.random.sets == ["random500_0", "r-1"]
    assert load_config(experiment_file, ["random.sets='random*'"]).random.sets == "random*"


# -- one set, one role ----------------------------------------------------------------------
def make(inputs, tmp_path: Path, **kwargs) -> Experiment:
    targets, concepts, random = inputs
    options = dict(
        layers=["1"],
        labels=["a", "b"],
        runs=10,
        min_examples=5,
        cav=CavOptions(method="mean-difference"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        device="cpu",
    )
    options.update(kwargs)
    return Experiment(axis_model(), targets=targets, concepts=concepts, random=random, **options)


def test_a_concept_that_is_also_a_target_warns(axis_experiment_inputs, tmp_path: Path) -> None:
    targets, concepts, random = axis_experiment_inputs
    concepts = {**concepts, "a": targets["a"]}
    with pytest.warns(TcavWarning, match="concept 'a' is also a target"):
        experiment = make((targets, concepts, random), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TcavWarning)
        result = experiment.run()
    # among the run's warnings too, so that the report lists (and the console counts) it
    assert sum("concept 'a' is also a target" in w for w in result.warnings) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", TcavWarning)
        make(axis_experiment_inputs, tmp_path)  # no warning otherwise


def test_a_target_that_is_also_a_random_set_is_refused(
    axis_experiment_inputs, tmp_path: Path
) -> None:
    targets, concepts, random = axis_experiment_inputs
    random = {**random, "a": targets["a"]}
    with pytest.raises(ConfigError, match=r"\['a'\] named both as target and as random set"):
        make((targets, concepts, random), tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An experiment file, a TorchScript model and empty set folders (nothing is run)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(model), str(tmp_path / "model.pt"))
    for name in ("fire", "water", "red", "random_0", "random_1", "random_fire"):
        (tmp_path / "data" / name).mkdir(parents=True)
    (tmp_path / "experiment.yaml").write_text(BASE, encoding="utf-8")
    return tmp_path / "experiment.yaml"


def build(path: Path, *overrides: str) -> Experiment:
    return Experiment.from_config(path, overrides=list(overrides), progress=False)


def test_random_glob_matching_a_target_is_refused(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(
            project,
            "random.sets='random*'",
            "targets=[random_fire]",
            "model.labels=[random_fire, x]",
        )
    message = str(info.value)
    assert "random_fire" in message and "'random*'" in message and "targets" in message
    with pytest.raises(ConfigError, match=r"random\.sets 'r\*'.*\['red'\].*concepts"):
        build(project, "random.sets='r*'")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TcavWarning)
        experiment = build(project, "random.sets='random_?'")
    assert sorted(experiment.random) == ["random_0", "random_1"]


def test_concept_named_like_a_target_in_the_file_warns(project: Path) -> None:
    with pytest.warns(TcavWarning, match="concept 'fire' is also a target"):
        build(project, "random.sets='random_?'", "concepts=[red, fire]")
