"""Keras 3 models: loaded from ``.keras``/``.h5`` files and run on Keras's PyTorch backend.

The same small CNN is built in Keras and in PyTorch with copied weights; both must give the
same activations, gradients and TCAV scores. A linear Keras model with a known answer runs
end to end through ``tcavkit run``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tcavkit import CavOptions, Experiment, Preprocessing, TensorSource
from tcavkit.cli import app
from tcavkit.config import ModelSpec
from tcavkit.demo.synthetic import make_dataset, make_images, set_rng
from tcavkit.errors import LayerError, ModelError
from tcavkit.examples.images import preprocess
from tcavkit.models import TorchModel
from tcavkit.models.keras import KerasModel
from tcavkit.models.loading import adapter_for, describe, load_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None, reason="needs pip install 'tcavkit[keras]'"
)

SIZE = 16  # the twin CNN's input: (16, 16, 3) in Keras, (3, 16, 16) in PyTorch
TWIN_LAYERS = [
    "image",
    "conv2d",
    "re_lu",
    "max_pooling2d",
    "conv2d_1",
    "re_lu_1",
    "global_average_pooling2d",
    "dense",
    "softmax",
]
CAPTURED = ["conv2d", "max_pooling2d", "conv2d_1", "global_average_pooling2d"]


@pytest.fixture(scope="module")
def keras():
    from tcavkit.models.keras import import_keras

    return import_keras()


def invoke(*args: object):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps stderr apart
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


# -- the same CNN in Keras and in PyTorch ---------------------------------------------------
def build_keras_cnn(keras):
    """Conv(3→4) → ReLU → MaxPool → Conv(4→6) → ReLU → GAP → Dense(3) → Softmax, seeded."""
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(4, 3, name="conv2d")(inputs)
    x = layers.ReLU(name="re_lu")(x)
    x = layers.MaxPooling2D(2, name="max_pooling2d")(x)
    x = layers.Conv2D(6, 3, name="conv2d_1")(x)
    x = layers.ReLU(name="re_lu_1")(x)
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    x = layers.Dense(3, name="dense")(x)
    outputs = layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in weights])
    return model


class GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def torch_twin(model) -> nn.Sequential:
    """The Keras CNN in PyTorch (NCHW), module names equal to the Keras layer names."""
    twin = nn.Sequential(
        OrderedDict(
            conv2d=nn.Conv2d(3, 4, 3),
            re_lu=nn.ReLU(),
            max_pooling2d=nn.MaxPool2d(2),
            conv2d_1=nn.Conv2d(4, 6, 3),
            re_lu_1=nn.ReLU(),
            global_average_pooling2d=GlobalAveragePool(),
            dense=nn.Linear(6, 3),
        )
    )
    with torch.no_grad():
        for name in ("conv2d", "conv2d_1"):  # Keras (kh, kw, in, out) → torch (out, in, kh, kw)
            kernel, bias = model.get_layer(name).get_weights()
            twin.get_submodule(name).weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))
            twin.get_submodule(name).bias.copy_(torch.from_numpy(bias))
        kernel, bias = model.get_layer("dense").get_weights()  # (in, out) → (out, in)
        twin.dense.weight.copy_(torch.from_numpy(kernel).T)
        twin.dense.bias.copy_(torch.from_numpy(bias))
    return twin.eval()


@pytest.fixture(scope="module")
def cnn(keras, tmp_path_factory):
    """{"keras": .keras file, "h5": .h5 file, "model": keras model, "twin": torch module}."""
    root = tmp_path_factory.mktemp("keras")
    model = build_keras_cnn(keras)
    model.save(root / "cnn.keras")
    model.save(root / "cnn.h5")
    return {
        "keras": root / "cnn.keras",
        "h5": root / "cnn.h5",
        "model": model,
        "twin": torch_twin(model),
    }


def images(kind: str, n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """``(n, 3, size, size)`` float32 images from the library's generators."""
    pil = make_images(kind, n, (size, size), set_rng(seed, kind))
    return preprocess(pil, Preprocessing(size=(size, size)))


def as_nchw(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Keras ``(n, H*W*C)`` flattened channels-last rows → ``(n, C*H*W)`` as PyTorch has them."""
    if len(shape) == 2:
        return flat
    return flat.reshape(len(flat), *shape[1:]).permute(0, 3, 1, 2).reshape(len(flat), -1)


def load(path: Path, **kwargs):
    from tcavkit.models.keras import load_keras

    return load_keras(path, device="cpu", **kwargs)


# -- loading and the CLI --------------------------------------------------------------------
def test_layers_cli_lists_keras_names_as_summary_prints_them(cnn):
    printed: list[str] = []
    cnn["model"].summary(print_fn=lambda text, **_: printed.append(text))
    rows = [line for line in "\n".join(printed).splitlines() if line.startswith("│")]
    cells = [row.split("│")[1].strip() for row in rows]
    summary_names = [cell.split()[0] for cell in cells if cell and not cell.startswith("(")]
    assert summary_names == TWIN_LAYERS
    for fmt in ("keras", "h5"):
        result = invoke("layers", cnn[fmt])  # no --size: the model's own (16, 16) input
        assert result.exit_code == 0, result.output
        rows = [line.split(maxsplit=2) for line in result.stdout.splitlines() if line.strip()]
        assert [name for name, _, _ in rows] == TWIN_LAYERS
        assert dict((name, kind) for name, kind, _ in rows)["conv2d"] == "Conv2D"
        shapes = {name: shape for name, _, shape in rows}
        assert shapes["conv2d"] == "(1, 14, 14, 4)"  # channels-last, as Keras computes
        assert shapes["max_pooling2d"] == "(1, 7, 7, 4)"
        assert shapes["conv2d_1"] == "(1, 5, 5, 6)"
        assert shapes["softmax"] == "(1, 3)"


def test_load_model_dispatches_keras_files(cnn):
    for fmt in ("keras", "h5"):
        spec = ModelSpec(path=cnn[fmt], layers=["conv2d_1"], logits="dense")
        adapter = load_model(spec, device="cpu")
        assert type(adapter).__name__ == "KerasModel"
        assert adapter.channels_last and adapter.input_size == (SIZE, SIZE)
        assert describe(spec) == f"Keras file {cnn[fmt]}"
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelSpec(path=cnn["keras"].with_name("nope.keras"), layers=["x"]))


def test_adapter_for_a_keras_model_in_memory(cnn):
    adapter = adapter_for(cnn["model"], logits_layer="dense", device="cpu")
    assert isinstance(adapter, KerasModel)
    assert adapter.layer_names() == TWIN_LAYERS


def test_unknown_layer_suggests_keras_names(cnn):
    adapter = load(cnn["keras"])
    with pytest.raises(LayerError, match=r"unknown layer 'conv2d_2'.*'conv2d_1'"):
        adapter.activations(images("random", 2, 0), ["conv2d_2"])
    result = invoke("layers", cnn["keras"], "--size", "20", "20")
    assert result.exit_code == 1
    assert "expected (n, 16, 16, 3)" in result.stderr and "Traceback" not in result.stderr


def test_fingerprint_is_architecture_and_weights(cnn, keras, tmp_path):
    keras_fp, h5_fp = load(cnn["keras"]).fingerprint(), load(cnn["h5"]).fingerprint()
    assert keras_fp == h5_fp == load(cnn["keras"]).fingerprint()
    changed = keras.saving.load_model(cnn["keras"])
    kernel, bias = changed.get_layer("dense").get_weights()
    changed.get_layer("dense").set_weights([kernel, bias + 1e-3])
    changed.save(tmp_path / "changed.keras")
    assert load(tmp_path / "changed.keras").fingerprint() != keras_fp


# -- the same network in Keras and PyTorch --------------------------------------------------
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_activations_gradients_and_logits_match_pytorch(cnn, fmt):
    adapter, twin = load(cnn[fmt]), TorchModel(cnn["twin"], device="cpu")
    x = images("random", 6, 1)  # (6, 3, 16, 16): the adapter transposes to (6, 16, 16, 3)
    _, captured = adapter.run(x, CAPTURED, need_output=False)
    shapes = {name: tuple(t.shape) for name, t in captured.items()}
    ours, theirs = adapter.activations(x, CAPTURED), twin.activations(x, CAPTURED)
    for name in CAPTURED:
        torch.testing.assert_close(
            as_nchw(ours[name], shapes[name]), theirs[name], atol=1e-4, rtol=0
        )
    torch.testing.assert_close(
        adapter.logits(x), twin.logits(x), atol=1e-4, rtol=0
    )  # pre-softmax, although the Keras model ends in a softmax
    for k in range(3):
        ours, theirs = adapter.gradients(x, k, CAPTURED), twin.gradients(x, k, CAPTURED)
        for name in CAPTURED:
            ours_nchw = as_nchw(ours[name], shapes[name])
            torch.testing.assert_close(ours_nchw, theirs[name], atol=1e-4, rtol=0)
            assert theirs[name].abs().max() > 1e-3  # not trivially zero


def test_channels_last_inputs_are_accepted_too(cnn):
    adapter = load(cnn["keras"])
    x = images("red", 3, 2)
    first = adapter.activations(x, ["conv2d_1"])["conv2d_1"]
    last = adapter.activations(x.permute(0, 2, 3, 1), ["conv2d_1"])["conv2d_1"]
    assert torch.equal(first, last)


def _experiment(model, seed: int = 0) -> Experiment:
    targets = {
        "0": TensorSource(images("random", 12, 10)),
        "2": TensorSource(images("red", 12, 11)),
    }
    concepts = {name: TensorSource(images(name, 10, 20)) for name in ("red", "striped")}
    random = {f"random500_{i}": TensorSource(images("random", 10, 30 + i)) for i in range(10)}
    return Experiment(
        model,
        layers=["conv2d_1", "global_average_pooling2d"],
        targets=targets,
        concepts=concepts,
        random=random,
        runs=10,
        min_examples=5,
        cav=CavOptions(method="mean-difference"),
        seed=seed,
        cache_dir=None,
        progress=False,
        device="cpu",
    )


def test_same_tcav_scores_as_pytorch(cnn):
    keras_result = _experiment(load(cnn["keras"])).run()
    torch_result = _experiment(cnn["twin"]).run()
    keys = ["target", "concept", "layer", "random", "run"]
    ours = keras_result.runs.sort_values(keys).reset_index(drop=True)
    theirs = torch_result.runs.sort_values(keys).reset_index(drop=True)
    assert len(ours) == len(theirs) > 0
    pd.testing.assert_frame_equal(ours[keys], theirs[keys])
    assert (ours.tcav_score == theirs.tcav_score).all()
    np.testing.assert_allclose(ours.magnitude, theirs.magnitude, atol=1e-4)
    np.testing.assert_allclose(ours.cav_accuracy, theirs.cav_accuracy, atol=1e-4)
    assert ours.tcav_score.nunique() > 1  # the scores say something
    summary_keys = ["target", "concept", "layer"]
    pd.testing.assert_series_equal(
        keras_result.summary.sort_values(summary_keys).significant.reset_index(drop=True),
        torch_result.summary.sort_values(summary_keys).significant.reset_index(drop=True),
    )


# -- softmax and outputs --------------------------------------------------------------------
def test_logits_layer_before_a_final_softmax(cnn):
    x = images("random", 4, 3)
    auto, named = load(cnn["keras"]), load(cnn["keras"], logits_layer="dense")
    assert auto.logits_source == "input of the final softmax 'softmax'"
    torch.testing.assert_close(named.logits(x), auto.logits(x))
    probabilities = torch.softmax(named.logits(x), dim=1)
    _, captured = named.run(x, ["softmax"], need_output=False)
    torch.testing.assert_close(captured["softmax"], probabilities, atol=1e-6, rtol=0)
    ours, theirs = named.gradients(x, 1, ["re_lu_1"]), auto.gradients(x, 1, ["re_lu_1"])
    torch.testing.assert_close(ours["re_lu_1"], theirs["re_lu_1"])
    with pytest.raises(ModelError, match="'softmax' applies a softmax"):
        load(cnn["keras"], logits_layer="softmax")


def test_dense_with_softmax_activation_gives_pre_activation_logits(keras, tmp_path):
    """hidden = x (identity); out = softmax(hidden @ W + b): the logits are hidden @ W + b and
    d logit_k / d hidden = W[:, k] for every input."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, name="hidden"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    w = np.array([[1.0, -1.0], [2.0, 0.5], [0.0, 3.0], [-1.0, 1.0]], dtype=np.float32)
    b = np.array([0.5, -0.5], dtype=np.float32)
    model.get_layer("hidden").set_weights([np.eye(4, dtype=np.float32), np.zeros(4, np.float32)])
    model.get_layer("out").set_weights([w, b])
    model.save(tmp_path / "dense_softmax.keras")
    adapter = load(tmp_path / "dense_softmax.keras")
    assert adapter.logits_source == "output of 'out' before its softmax"
    assert adapter.layer_names() == ["hidden", "out"]
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [2.0, -1.0, 0.5, 3.0]])
    torch.testing.assert_close(adapter.logits(x), x @ torch.from_numpy(w) + torch.from_numpy(b))
    probabilities = torch.softmax(x @ torch.from_numpy(w) + torch.from_numpy(b), dim=1)
    for k in range(2):
        grads = adapter.gradients(x, k, ["hidden"])["hidden"]
        torch.testing.assert_close(grads, torch.from_numpy(w[:, k]).expand(3, 4))
        # the log-softmax of the logits (not of the softmax output): W[:, k] - W p.
        grads = adapter.gradients(x, k, ["hidden"], objective="log_softmax")["hidden"]
        expected = torch.from_numpy(w[:, k]) - probabilities @ torch.from_numpy(w).T
        torch.testing.assert_close(grads, expected)
    with pytest.raises(ModelError, match="'out' applies a softmax"):
        load(tmp_path / "dense_softmax.keras", logits_layer="out")


@pytest.mark.parametrize("kind", ["Activation", "ops.softmax"])
def test_other_final_softmax_forms(keras, kind, tmp_path):
    inputs = keras.Input((3,))
    logits = keras.layers.Dense(2, name="dense")(inputs)
    if kind == "Activation":
        probabilities = keras.layers.Activation("softmax", name="probs")(logits)
    else:
        probabilities = keras.ops.softmax(logits)
    keras.Model(inputs, probabilities).save(tmp_path / "model.keras")
    adapter, named = (
        load(tmp_path / "model.keras"),
        load(tmp_path / "model.keras", logits_layer="dense"),
    )
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert adapter.logits_source.startswith("input of the final softmax")
    torch.testing.assert_close(adapter.logits(x), named.logits(x))
    assert not torch.allclose(adapter.logits(x).sum(dim=1), torch.ones(2))  # not probabilities


def test_several_outputs_are_selected_by_name_or_index(keras, tmp_path):
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    main = keras.layers.Dense(2, name="main")(hidden)
    aux = keras.layers.Dense(1, name="aux")(hidden)
    keras.Model(inputs, [main, aux]).save(tmp_path / "two.keras")
    x = torch.ones(2, 3)
    by_name = load(tmp_path / "two.keras", output="main")
    by_index = load(tmp_path / "two.keras", output=0)
    assert by_name.output == by_index.output == 0
    torch.testing.assert_close(by_name.logits(x), by_index.logits(x))
    assert by_name.logits(x).shape == (2, 2)
    assert load(tmp_path / "two.keras", output="aux").logits(x).shape == (2, 1)
    with pytest.raises(ModelError, match="model.output"):
        load(tmp_path / "two.keras").logits(x)
    with pytest.raises(ModelError, match=r"did you mean 'main'"):
        load(tmp_path / "two.keras", output="mian")
    keras.Model(inputs, {"scores": main, "extra": aux}).save(tmp_path / "dict.keras")
    by_key = load(tmp_path / "dict.keras", output="scores")
    torch.testing.assert_close(by_key.logits(x), by_name.logits(x))


def test_nested_model_layers_need_a_flat_model(keras):
    image = keras.Input((8, 8, 3), name="img")
    base = keras.Model(image, keras.layers.Conv2D(2, 3, name="inner_conv")(image), name="base")
    outer_input = keras.Input((8, 8, 3), name="outer_img")
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(base(outer_input))
    nested = KerasModel(keras.Model(outer_input, keras.layers.Dense(2)(pooled)), device="cpu")
    assert nested.layer_names()[:3] == ["outer_img", "base", "gap"]
    with pytest.raises(LayerError, match="inside the nested model 'base'"):
        nested.check_layers(["inner_conv"])
    head = keras.layers.Dense(2, name="head")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    flat = KerasModel(keras.Model(base.input, head(pooled)), device="cpu")
    assert flat.layer_names() == ["img", "inner_conv", "pool", "head"]
    grads = flat.gradients(torch.rand(2, 3, 8, 8), 0, ["inner_conv"])["inner_conv"]
    assert grads.shape == (2, 6 * 6 * 2)


def test_lambda_layers_need_trust(keras, tmp_path):
    inputs = keras.Input((2,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(doubled))
    model.get_layer("out").set_weights([np.ones((2, 1), np.float32), np.zeros(1, np.float32)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="Lambda layer.*--trust-model-file") as info:
        load(tmp_path / "lambda.keras")
    assert "TCAVKIT_TRUST_MODEL_FILE=1" in str(info.value)
    assert "model.trusted" not in str(info.value)
    trusted = load(tmp_path / "lambda.keras", trusted=True)
    assert trusted.logits(torch.tensor([[1.0, 2.0]])).item() == 6.0  # 2 * (1 + 2)


def test_lambda_layers_trust_comes_from_the_command_not_the_file(keras, tmp_path, monkeypatch):
    inputs = keras.Input((8, 8, 3))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(doubled)
    keras.Model(inputs, keras.layers.Dense(2, name="out")(pooled)).save(tmp_path / "l.keras")
    monkeypatch.delenv("TCAVKIT_TRUST_MODEL_FILE", raising=False)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        "model: {path: l.keras, layers: [double], trusted: true}\ndata: .\ntargets: ['0']\n"
    )
    refused = invoke("layers", experiment)
    assert refused.exit_code == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.trusted" in lines[0], lines
    assert "TCAVKIT_TRUST_MODEL_FILE=1" in lines[0] and "--trust-model-file" in lines[0]
    untrusted = invoke("layers", tmp_path / "l.keras")
    assert untrusted.exit_code == 1 and "Lambda layer" in untrusted.stderr
    monkeypatch.setenv("TCAVKIT_TRUST_MODEL_FILE", "1")
    trusted = invoke("layers", tmp_path / "l.keras")
    assert trusted.exit_code == 0, trusted.output
    assert "double" in trusted.stdout


# -- Keras missing or misconfigured ---------------------------------------------------------
def test_missing_keras_names_the_extra(cnn, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(ModelError, match=r"pip install 'tcavkit\[keras\]'"):
        load(cnn["keras"])
    result = invoke("layers", cnn["keras"])
    assert result.exit_code == 1
    assert "pip install 'tcavkit[keras]'" in result.stderr


def test_other_backend_is_refused(cnn, keras, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ModelError, match="KERAS_BACKEND=torch"):
        load(cnn["keras"])


# -- end to end: a planted answer through `tcavkit run` ----------------------------------------
EXPERIMENT = """\
model:
  path: models/colour.keras
  layers: [conv, pool]
  logits: dense
  labels: [fire, water]
  input:
    size: [16, 16]
data: data
targets: [fire, water]
concepts: [red, blue, striped]
random:
  runs: 10
examples:
  min: 5
cav:
  method: mean-difference
seed: 0
cache: cache
output: results
"""


def colour_model(keras):
    """logit_fire = mean red − (mean green + mean blue) / 2; logit_water likewise for blue.

    conv is a 1×1 identity convolution (+0.05 so that the ReLU is always active) and pool
    averages each channel, so d logit / d pool is the constant row of the Dense kernel.
    """
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(3, 1, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(2, name="dense")(x)
    model = keras.Model(inputs, keras.layers.Softmax(name="probs")(x))
    model.get_layer("conv").set_weights(
        [np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.full(3, 0.05, np.float32)]
    )
    kernel = np.array([[1.0, -0.5], [-0.5, -0.5], [-0.5, 1.0]], dtype=np.float32)  # (in, out)
    model.get_layer("dense").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def test_run_finds_the_planted_colour(keras, tmp_path):
    make_dataset(
        tmp_path / "data",
        size=(16, 16),
        n_per_set=10,
        n_random_sets=10,
        concepts=("red", "blue", "striped"),
        targets=("fire", "water"),
    )
    (tmp_path / "models").mkdir()
    colour_model(keras).save(tmp_path / "models" / "colour.keras")
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT, encoding="utf-8")
    result = invoke("run", tmp_path / "experiment.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    out = tmp_path / "results"
    summary = pd.read_csv(out / "summary.csv").set_index(["target", "concept", "layer"])
    for layer in ("conv", "pool"):
        assert summary.loc[("fire", "red", layer)].significant, summary
        assert summary.loc[("water", "blue", layer)].significant, summary
        assert summary.loc[("fire", "red", layer)]["mean"] == 1.0  # every example, every run
        assert summary.loc[("water", "red", layer)]["mean"] == 0.0
        for target in ("fire", "water"):
            assert not summary.loc[(target, "striped", layer)].significant, summary
    meta = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "Keras file" in json.dumps(meta)
