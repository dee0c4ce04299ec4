"""``gradient: logit | log_softmax``: what the target gradients differentiate, checked in
closed form on linear models, end to end, and in the cache keys."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import axis_model
from tcavkit import CavOptions, Experiment
from tcavkit.config import parse_config
from tcavkit.errors import ConfigError
from tcavkit.models import TorchModel
from tcavkit.options import GRADIENTS, Preprocessing
from tcavkit.pipeline.keys import KeyMaker
from tcavkit.store import cache_key

W = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [-2.0, 0.5, 1.0]])  # logits = W x
X = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def linear_model() -> nn.Sequential:
    """x (3) -> "0": identity (the input layer) -> "1": logits = W x (3 classes)."""
    head = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(W)
    return nn.Sequential(nn.Identity(), head)


def test_the_choices() -> None:
    assert GRADIENTS == ("logit", "log_softmax")


@pytest.mark.parametrize("k", [0, 1, 2])
def test_gradients_at_the_input_match_the_closed_forms(k: int) -> None:
    adapter = TorchModel(linear_model(), device="cpu")
    logit = adapter.gradients(X, k, ["0"])["0"]
    torch.testing.assert_close(logit, W[k].expand(len(X), -1))
    assert torch.equal(adapter.gradients(X, k, ["0"], "logit")["0"], logit)
    # d/dx [z_k - logsumexp(z)] with z = W x: W[k] - softmax(W x) @ W, per example.
    expected = W[k] - torch.softmax(X @ W.T, dim=1) @ W
    log_softmax = adapter.gradients(X, k, ["0"], objective="log_softmax")["0"]
    torch.testing.assert_close(log_softmax, expected)
    # At x = 0 every class is equally likely: the gradient is W[k] minus the mean row.
    torch.testing.assert_close(log_softmax[3], W[k] - W.mean(dim=0))


def test_an_unknown_objective_is_a_config_error_naming_gradient() -> None:
    adapter = TorchModel(linear_model(), device="cpu")
    with pytest.raises(ConfigError, match="unknown gradient 'loss'; choose one of logit"):
        adapter.gradients(X, 0, ["0"], objective="loss")


def make(inputs, cache: Path | None, **kwargs) -> Experiment:
    targets, concepts, random = inputs
    return Experiment(
        axis_model(),
        layers=["1"],
        targets=targets,
        concepts=concepts,
        random=random,
        labels=["a", "b"],
        runs=10,
        min_examples=5,
        cav=CavOptions(method="mean-difference"),
        cache_dir=str(cache) if cache is not None else None,
        progress=False,
        device="cpu",
        **kwargs,
    )


def test_log_softmax_scores_match_the_closed_form(axis_experiment_inputs) -> None:
    """axis_model's logits are (h_0, h_1) of the hidden layer h: the log-softmax gradient of
    class a is p_b (e_0 - e_1) with p_b > 0, so along v it is positive exactly when
    v_0 > v_1 (and class b's when v_1 > v_0), whatever the example."""
    result = make(axis_experiment_inputs, None, gradient="log_softmax").run()
    runs = result.runs[~result.runs.is_null]
    assert len(runs) > 0
    for row in runs.itertuples():
        direction = result.cavs[(row.concept, row.random, row.layer, row.run)].direction
        a_wins = float(direction[0] > direction[1])
        assert row.tcav_score == (a_wins if row.target == "a" else 1.0 - a_wins)


def test_each_objective_has_its_own_cache_entries(axis_experiment_inputs, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = make(axis_experiment_inputs, cache, gradient="log_softmax").run()
    assert first.counts.backward_batches > 0
    logit = make(axis_experiment_inputs, cache, gradient="logit").run()
    assert logit.counts.backward_batches > 0  # not the log-softmax's gradients
    assert logit.counts.forward_batches == 0  # the activations are the same entries
    again = make(axis_experiment_inputs, cache).run()  # logit by default
    assert again.counts.backward_batches == 0
    np.testing.assert_array_equal(again.runs.tcav_score, logit.runs.tcav_score)
    warm = make(axis_experiment_inputs, cache, gradient="log_softmax").run()
    assert warm.counts.backward_batches == 0
    np.testing.assert_array_equal(warm.runs.tcav_score, first.runs.tcav_score)
    assert not np.array_equal(warm.runs.magnitude, again.runs.magnitude)


def test_the_logit_keys_have_no_objective_part() -> None:
    keys = KeyMaker("model-fingerprint", Preprocessing())
    examples = SimpleNamespace(name="a", fingerprint="set-fingerprint")  # all a key reads
    plain = keys.gradients(["1", "2"], examples, 0, None, None)
    assert plain["1"] == cache_key(  # as the logit's gradients were always keyed
        kind="gradients",
        model="model-fingerprint",
        layer="1",
        examples="set-fingerprint",
        preprocessing=Preprocessing().fingerprint(),
        class_index=0,
        logits=None,
        output=None,
    )
    assert keys.gradients(["1", "2"], examples, 0, None, None, "logit") == plain
    other = keys.gradients(["1", "2"], examples, 0, None, None, "log_softmax")
    assert set(other) == set(plain) and not set(other.values()) & set(plain.values())


def test_a_bad_gradient_fails_when_the_experiment_is_made(axis_experiment_inputs) -> None:
    with pytest.raises(ConfigError, match="unknown gradient 'softmax'"):
        make(axis_experiment_inputs, None, gradient="softmax")


def test_the_experiment_file_key(tmp_path: Path) -> None:
    raw = {"model": {"path": "m.pt", "layers": ["1"]}, "data": "data", "targets": ["0"]}
    assert parse_config(raw, tmp_path).gradient == "logit"
    assert parse_config({**raw, "gradient": "log_softmax"}, tmp_path).gradient == "log_softmax"
    with pytest.raises(ConfigError, match="exp.yaml: gradient: "):
        parse_config({**raw, "gradient": "loss"}, tmp_path, source="exp.yaml")
    with pytest.raises(ConfigError, match="unknown key 'gradients'; did you mean 'gradient'"):
        parse_config({**raw, "gradients": "logit"}, tmp_path, source="exp.yaml")


def test_from_config_passes_the_gradient_on(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    rng = np.random.default_rng(0)
    for name in ("0", "up", "random500_0", "random500_1"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "exp.yaml").write_text(
        "model: {path: m.pt, layers: ['1'], input: {size: [4, 4]}}\n"
        "data: data\ntargets: ['0']\nconcepts: [up]\nrandom: {runs: 1}\n"
        "gradient: log_softmax\ncache: null\n"
    )
    experiment = Experiment.from_config(tmp_path / "exp.yaml", progress=False)
    assert experiment.gradient == "log_softmax"
    overridden = Experiment.from_config(
        tmp_path / "exp.yaml", overrides=["gradient=logit"], progress=False
    )
    assert overridden.gradient == "logit"
