"""Settings groups: each validated once, when it is made, and the same class in the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcavkit.cav import learners, train_cav
from tcavkit.config import ExperimentConfig, parse_config
from tcavkit.errors import ConfigError
from tcavkit.options import (
    CAV_METHODS,
    MAX_SOLVER_ITERATIONS,
    CavOptions,
    ExampleLimits,
    Preprocessing,
    StatsOptions,
)
from tcavkit.stats import summarize


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StatsOptions(test="bogus"), "stats.test 'bogus'"),
        (lambda: StatsOptions(correction="fdr"), "stats.correction"),
        (lambda: StatsOptions(statistic="mean"), "stats.statistic"),
        (lambda: StatsOptions(alpha=1.5), "stats.alpha"),
        (lambda: StatsOptions(confidence=0.0), "stats.confidence"),
        (lambda: CavOptions(method="svm-ish"), "cav.method"),
        (lambda: CavOptions(alpha=0.0), "cav.alpha"),
        (lambda: CavOptions(test_fraction=1.0), "cav.test_fraction"),
        (lambda: CavOptions(max_iter=1000), f"from 1 to {MAX_SOLVER_ITERATIONS}"),
        (lambda: ExampleLimits(max=0), "examples.max"),
        (lambda: ExampleLimits(max=5, min=8), "examples.max"),
        (lambda: ExampleLimits(min=1), "examples.min"),
        (lambda: Preprocessing(size=(-5, 32)), "model.input.size .* from 1 to 4096 .* -5 32"),
        (lambda: Preprocessing(size=(100000, 8)), "model.input.size .* got 100000 8"),
    ],
)
def test_bad_settings_fail_when_made(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_summarize_checks_its_choices_through_the_same_options() -> None:
    with pytest.raises(ConfigError, match="stats.test 'bogus'"):
        summarize(None, test="bogus")  # before the table is even looked at


@pytest.mark.parametrize("method", ["hinge", "sgd", "logistic"])
def test_max_iter_reaches_the_solver(monkeypatch, method: str) -> None:
    import numpy as np

    seen = []
    name = "logistic" if method == "logistic" else "hinge_svm"
    real = getattr(learners, name)

    def spy(*args, **kwargs):
        seen.append(kwargs["max_iter"])
        return real(*args, **kwargs)

    monkeypatch.setattr(learners, name, spy)
    rng = np.random.default_rng(0)
    train_cav(rng.normal(1, 1, (12, 3)), rng.normal(0, 1, (12, 3)), CavOptions(method, max_iter=7))
    assert seen == [7]


def test_yaml_sections_are_the_settings_classes() -> None:
    fields = ExperimentConfig.model_fields
    assert fields["cav"].annotation is CavOptions
    assert fields["stats"].annotation is StatsOptions
    assert fields["examples"].annotation is ExampleLimits
    raw = {
        "model": {"path": "m.pt", "layers": ["a"], "input": {"size": [8, 8]}},
        "data": "data",
        "targets": ["t"],
        "cav": {"method": "logistic", "max_iter": 50},
        "stats": {"test": "concept-rank"},
    }
    config = parse_config(raw, Path("/tmp"))
    assert config.cav == CavOptions(method="logistic", max_iter=50)
    assert config.stats == StatsOptions(test="concept-rank")
    assert config.model.input == Preprocessing(size=(8, 8))
    assert set(CAV_METHODS) == {"hinge", "logistic", "mean-difference"}


def test_sgd_is_another_name_for_hinge() -> None:
    assert CavOptions().method == "mean-difference"  # the default: see the power study
    assert CavOptions(method="sgd") == CavOptions(method="hinge") != CavOptions()
    assert CavOptions(method="sgd").method == "hinge"
    assert hash(CavOptions(method="sgd", alpha=0.1)) == hash(CavOptions(method="hinge", alpha=0.1))
    assert "sgd" not in CAV_METHODS
    raw = {"model": {"path": "m.pt", "layers": ["a"]}, "data": "data", "targets": ["t"]}
    config = parse_config({**raw, "cav": {"method": "sgd", "alpha": 0.1}}, Path("/tmp"))
    assert config.cav == CavOptions(method="hinge", alpha=0.1)
    assert config.model_dump(mode="json")["cav"]["method"] == "hinge"
    with pytest.raises(ConfigError, match="'sgd' is accepted for 'hinge'"):
        CavOptions(method="svm")
    with pytest.raises(ConfigError, match="cav.method: .*'hinge'.* or 'sgd'"):
        parse_config({**raw, "cav": {"method": "svm"}}, Path("/tmp"), source="exp.yaml")


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"stats": {"test": "bogus"}}, "stats.test"),
        ({"cav": {"max_iter": 1000}}, "cav.max_iter"),
        ({"cav": {"methd": "sgd"}}, "unknown key 'cav.methd'; did you mean 'method'"),
        ({"examples": {"max": 3, "min": 5}}, "examples.max"),
        ({"model": {"path": "m.pt", "layers": ["a"], "input": {"sise": [8, 8]}}}, "'size'"),
    ],
)
def test_bad_yaml_settings_are_one_line_errors_naming_the_file(section, match: str) -> None:
    raw = {"model": {"path": "m.pt", "layers": ["a"]}, "data": "data", "targets": ["t"]}
    raw.update(section)
    with pytest.raises(ConfigError, match=match) as error:
        parse_config(raw, Path("/tmp"), source="exp.yaml")
    assert str(error.value).startswith("exp.yaml: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CavOptions(max_iter=True), "cav.max_iter: expected a number, got true"),
        (lambda: ExampleLimits(max=True), "examples.max"),
        (lambda: StatsOptions(alpha=False), "stats.alpha"),
        (lambda: Preprocessing(size=(True, 8)), "model.input.size"),
    ],
)
def test_true_is_not_a_number_in_python_either(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()
