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
from tcavkit.errors import ConfigError, DataError, TcavWarning

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


# -- what the YAML holds is what is read ----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ("seed: 0\nbatch_size: 4\nseed: 7\n", "'seed'", "lines 9 and 11"),
        (
            "cav:\n  method: hinge\n  alpha: 0.1\n  method: logistic\n",
            "'method'",
            "lines 10 and 12",
        ),
        ("stats: {alpha: 0.05, alpha: 0.01}\n", "'alpha'", "line 9"),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(
    experiment_file: Path, text: str, key: str, where: str
) -> None:
    experiment_file.write_text(BASE + text, encoding="utf-8")
    message = refused(experiment_file)
    assert message.startswith(str(experiment_file)), message
    assert f"key {key} is given twice in one mapping ({where})" in message, message


def test_a_key_given_twice_in_a_set_value_is_refused(experiment_file: Path) -> None:
    message = refused(experiment_file, "cav={method: hinge, method: logistic}")
    assert message.startswith("--set 'cav=") and "'method' is given twice" in message


def test_keys_merged_from_an_alias_may_be_overridden() -> None:
    from tcavkit.config import read_yaml

    text = "base: &base {alpha: 0.05, test: welch}\nstats:\n  <<: *base\n  alpha: 0.01\n"
    assert read_yaml(text, "x.yaml")["stats"] == {"alpha": 0.01, "test": "welch"}


def test_an_alias_bomb_is_refused_before_it_expands(experiment_file: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):  # 10**9 values once expanded, from nine short lines
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    factory = "model:\n  factory: torchvision.models:resnet18\n  factory_args:\n"
    text = factory + "".join(f"    {line}\n" for line in lines)
    text += "  layers: [x]\ndata: data\ntargets: [fire]\n"
    experiment_file.write_text(text, encoding="utf-8")
    message = refused(experiment_file)
    assert "holds more than 1,000,000 values (each use of a YAML alias" in message, message


def test_an_alias_inside_its_own_value_is_refused(experiment_file: Path) -> None:
    experiment_file.write_text(BASE + "relative: &r [[red, *r]]\n", encoding="utf-8")
    assert "refers to a value that contains it" in refused(experiment_file)


# -- a file that is not an experiment file is named in one line ------------------------------
def test_a_model_file_given_as_the_experiment_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "model.pt")
    message = refused(tmp_path / "model.pt")
    assert message.startswith(f"{tmp_path / 'model.pt'} is a binary file, not an experiment")
    assert "model.path" in message


def test_a_folder_given_as_the_experiment_is_refused(experiment_file: Path) -> None:
    message = refused(experiment_file.parent)
    assert f"{experiment_file.parent} is a folder, not an experiment file" in message
    assert "experiment.yaml" in message  # the YAML files it holds


def test_an_experiment_file_not_in_utf8_is_refused(experiment_file: Path) -> None:
    experiment_file.write_bytes(BASE.replace("fire]", "feu_brûlant]").encode("latin-1"))
    message = refused(experiment_file)
    assert f"{experiment_file} is not UTF-8 text (byte 0xfb" in message
    assert "save the experiment file as UTF-8" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a single")])
def test_a_top_level_that_is_not_a_mapping_is_refused_with_set(
    experiment_file: Path, text: str, kind: str
) -> None:
    experiment_file.write_text(text, encoding="utf-8")
    message = refused(experiment_file, "seed=1")
    assert message.startswith(f"{experiment_file}: the experiment file's top level is {kind}")
    assert "mapping of keys" in message


def test_a_set_value_that_is_not_yaml_is_refused(experiment_file: Path) -> None:
    message = refused(experiment_file, "seed=[1")
    assert message.startswith("--set 'seed=[1': not valid YAML"), message
    assert "quote a text value" in message


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


def test_missing_sets_are_named_before_any_set_is_built(project: Path, monkeypatch) -> None:
    import tcavkit.pipeline.experiment as experiment_module

    def built(*args, **kwargs):
        raise AssertionError("a set's source was built before the names were checked")

    monkeypatch.setattr(experiment_module, "source_for", built)
    names = ", ".join(["red"] + [f"c{i}" for i in range(2000)])
    with pytest.raises(DataError) as info:
        build(project, "random.sets='random_?'", f"concepts=[{names}]")
    message = str(info.value)
    assert message.startswith("concepts: no folder or file for 'c0', 'c1', 'c2', 'c3', 'c4' …")
    assert "(2000 of the 2001 named)" in message and "create them" in message
    with pytest.raises(DataError, match=r"^random\.sets: no folder or file for 'random_9'"):
        build(project, "random.sets=[random_0, random_9]")
