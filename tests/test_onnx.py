"""ONNX models: the same network in PyTorch and in ONNX gives the same activations, gradients
and TCAV results; node names are the layers; `tcavkit layers` and `tcavkit run` on a file.

Every ONNX file is made in the test, with ``torch.onnx.export`` (the TorchScript-based
exporter, ``dynamo=False``: the default one needs onnxscript) or by hand with
``onnx.helper``. The check that a missing extra is named is in test_loading.py, since it
must run without onnx installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

if not os.environ.get("CI") and (
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnx2torch") is None
):  # CI installs the extra: there a missing package fails the tests instead
    pytest.skip("needs pip install 'tcavkit[onnx]'", allow_module_level=True)

import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from tcavkit import CavOptions, Experiment, Preprocessing, TensorSource
from tcavkit.cli import app
from tcavkit.config import ModelSpec
from tcavkit.demo.synthetic import make_dataset, make_images, set_rng
from tcavkit.errors import LayerError, ModelError
from tcavkit.examples.images import preprocess
from tcavkit.models import TorchModel
from tcavkit.models import onnx as tcav_onnx
from tcavkit.models.loading import load_model
from tcavkit.models.onnx import OnnxModel, load_onnx

SIZE = (16, 16)


# -- building models and files ----------------------------------------------------------------
def small_cnn(n_classes: int = 3) -> nn.Sequential:
    """Conv-BN-ReLU, max pool, a nested block, flatten, linear: 8 layers, 16x16 inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, n_classes),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


# PyTorch module name -> ONNX node name, as torch.onnx.export names the nodes.
CNN_LAYERS = {
    "0": "/0/Conv",  # Conv and BatchNorm are fused by the exporter: BN output is the Conv's
    "2": "/2/Relu",
    "3": "/3/MaxPool",
    "4.0": "/4/4.0/Conv",
    "4.1": "/4/4.1/Relu",
    "6": "/6/Flatten",
    "7": "/7/Gemm",
}


def export(model: nn.Module, path: Path, *, dynamic: bool = True, outputs=("logits",)) -> Path:
    """``torch.onnx.export`` of ``model`` for ``(n, 3, 16, 16)`` inputs."""
    axes = {name: {0: "n"} for name in ("input", *outputs)} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, *SIZE),),
            str(path),
            dynamo=False,
            opset_version=17,  # onnx2torch 1.5 converts AveragePool up to opset 17
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes=axes,
        )
    return path


def save_graph(path: Path, nodes, inputs, outputs, weights: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(
        nodes,
        "hand_made",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tensor_info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    return export(small_cnn(), tmp_path_factory.mktemp("onnx") / "cnn.onnx")


# -- layers -------------------------------------------------------------------------------------
def test_layers_are_the_onnx_node_names(cnn_file: Path) -> None:
    model = load_onnx(cnn_file, device="cpu")
    assert isinstance(model, OnnxModel)
    names = model.layer_names()
    assert names == [n.name for n in onnx.load(str(cnn_file)).graph.node]
    assert set(CNN_LAYERS.values()) <= set(names)
    assert model.input_shape == (3, *SIZE) and model.input_size == SIZE
    assert model.fixed_batch is None and model.output_names == ("logits",)
    # onnx2torch's submodule name and the node's output tensor name are accepted too.
    model.check_layers(["4/4/0/Conv", "/4/4.0/Conv_output_0", "/4/4.0/Conv"])
    acts = model.activations(images(2), ["4/4/0/Conv", "/4/4.0/Conv"])
    torch.testing.assert_close(acts["4/4/0/Conv"], acts["/4/4.0/Conv"])
    with pytest.raises(LayerError, match=r"unknown layer '/4/4.0/Con'.*did you mean '/4/4.0/Conv'"):
        model.check_layers(["/4/4.0/Con"])


def test_same_activations_and_gradients_as_pytorch(cnn_file: Path) -> None:
    torch_model = TorchModel(small_cnn(), device="cpu")
    onnx_model = load_model(ModelSpec(path=cnn_file, layers=["/0/Conv"]), device="cpu")
    x = images(5)
    torch.testing.assert_close(onnx_model.logits(x), torch_model.logits(x), atol=1e-4, rtol=0)
    theirs = onnx_model.activations(x, list(CNN_LAYERS.values()))
    ours = torch_model.activations(x, ["1", *list(CNN_LAYERS)[1:]])
    ours["0"] = ours.pop("1")  # the exporter folds BatchNorm into the Conv
    for torch_name, onnx_name in CNN_LAYERS.items():
        torch.testing.assert_close(theirs[onnx_name], ours[torch_name], atol=1e-4, rtol=0)
    layers = [name for name in CNN_LAYERS.values() if name != "/7/Gemm"]
    for k in range(3):
        theirs = onnx_model.gradients(x, k, layers)
        ours = torch_model.gradients(x, k, ["1", "2", "3", "4.0", "4.1", "6"])
        ours["0"] = ours.pop("1")
        for torch_name, onnx_name in CNN_LAYERS.items():
            if onnx_name in theirs:
                torch.testing.assert_close(theirs[onnx_name], ours[torch_name], atol=1e-4, rtol=0)


def _tensor_sets(kind: str, names: list[str], n: int) -> dict[str, TensorSource]:
    prep = Preprocessing(size=SIZE)
    return {
        name: TensorSource(preprocess(make_images(kind, n, SIZE, set_rng(3, name)), prep))
        for name in names
    }


def _experiment(model, layers: list[str]) -> pd.DataFrame:
    concepts = {**_tensor_sets("red", ["red"], 12), **_tensor_sets("striped", ["striped"], 12)}
    random = _tensor_sets("random", [f"random500_{i}" for i in range(5)], 12)
    targets = {**_tensor_sets("fire", ["fire"], 10), **_tensor_sets("water", ["water"], 10)}
    return (
        Experiment(
            model,
            layers=layers,
            targets=targets,
            concepts=concepts,
            random=random,
            labels=["fire", "water", "grass"],
            runs=5,
            min_examples=5,
            cav=CavOptions(method="sgd"),
            seed=11,
            batch_size=8,
            cache_dir=None,
            progress=False,
            device="cpu",
        )
        .run()
        .runs
    )


class NamedLike(TorchModel):
    """The PyTorch model with its layers called by the ONNX node names.

    The engine derives each CAV's seed from the layer's name, so the two formats are
    compared under the same names.
    """

    def __init__(self, module: nn.Module, names: dict[str, str]) -> None:
        super().__init__(module, device="cpu")
        self._modules = {new: self._modules[old] for old, new in names.items()}


@pytest.mark.filterwarnings("ignore::tcavkit.errors.TcavWarning")  # 5 random runs
def test_same_tcav_results_as_pytorch(cnn_file: Path) -> None:
    pairs = {"2": "/2/Relu", "4.1": "/4/4.1/Relu"}
    layers = list(pairs.values())
    ours = _experiment(NamedLike(small_cnn(), pairs), layers)
    theirs = _experiment(load_onnx(cnn_file, device="cpu"), layers)
    keys = ["target", "concept", "layer", "random", "run"]
    assert len(ours) == len(theirs) > 0
    pd.testing.assert_frame_equal(ours[keys], theirs[keys])
    np.testing.assert_array_equal(ours.tcav_score, theirs.tcav_score)
    np.testing.assert_array_equal(ours.cav_accuracy, theirs.cav_accuracy)
    np.testing.assert_allclose(ours.magnitude, theirs.magnitude, atol=1e-4)
    assert 0 < ours.tcav_score.mean() < 1  # not a degenerate comparison


def test_resnet_layout_through_onnx(tmp_path: Path) -> None:
    """torchvision's ResNet names, as the exporter writes them; an untrained network, whose
    equal folded BatchNorm weights the exporter shares through Identity nodes."""
    import zoo_like

    torch.manual_seed(0)
    net = zoo_like.resnet_like(num_classes=3).eval()
    path = export(net, tmp_path / "resnet.onnx")
    model = load_onnx(path, device="cpu")
    pairs = {  # torch module -> ONNX node; the block's output is its second relu call
        "layer3.1": "/layer3/layer3.1/relu_1/Relu",
        "layer3.1.bn2": "/layer3/layer3.1/conv2/Conv",
        "layer2.0.downsample.1": "/layer2/layer2.0/downsample/downsample.0/Conv",
    }
    assert set(pairs.values()) <= set(model.layer_names())
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = TorchModel(net, device="cpu")
    acts = model.activations(x, list(pairs.values()))
    grads = model.gradients(x, 2, list(pairs.values()))
    for torch_name, onnx_name in pairs.items():
        expected = plain.activations(x, [torch_name])[torch_name]
        torch.testing.assert_close(acts[onnx_name], expected, atol=1e-4, rtol=0)
        expected = plain.gradients(x, 2, [torch_name])[torch_name]
        torch.testing.assert_close(grads[onnx_name], expected, atol=1e-4, rtol=0)


# -- outputs and logits -------------------------------------------------------------------------
class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = small_cnn()

    def forward(self, x):
        logits = self.body(x)
        return torch.softmax(logits, 1), logits


def test_several_outputs_and_softmax_ends(tmp_path: Path) -> None:
    path = export(TwoHeads(), tmp_path / "two.onnx", outputs=("probs", "logits"))
    x = images(4)
    expected = TorchModel(small_cnn(), device="cpu").gradients(x, 1, ["4.1"])["4.1"]
    for selector in ("logits", 1, -1):
        model = load_onnx(path, output=selector, device="cpu")
        got = model.gradients(x, 1, ["/body/body.4/body.4.1/Relu"])
        torch.testing.assert_close(got["/body/body.4/body.4.1/Relu"], expected, atol=1e-4, rtol=0)
    # The layer before the softmax as the logits, instead of an output.
    model = load_onnx(path, logits_layer="/body/body.7/Gemm", device="cpu")
    got = model.gradients(x, 1, ["/body/body.4/body.4.1/Relu"])
    torch.testing.assert_close(got["/body/body.4/body.4.1/Relu"], expected, atol=1e-4, rtol=0)
    with pytest.raises(ModelError, match=r"2 outputs \(0 'probs', 1 'logits'\).*model.output"):
        load_onnx(path, device="cpu").logits(x)
    with pytest.raises(ModelError, match=r"'scores' is not an output of two.onnx.*0 'probs'"):
        load_onnx(path, output="scores", device="cpu")
    with pytest.raises(LayerError, match="unknown layer 'nope'"):
        load_onnx(path, logits_layer="nope", device="cpu")
    single = load_onnx(export(small_cnn(), tmp_path / "one.onnx"), output="logits")
    torch.testing.assert_close(
        single.logits(x), TorchModel(small_cnn()).logits(x), atol=1e-4, rtol=0
    )


# -- hand-made graphs: names, fixed batch sizes, errors ------------------------------------------
def _dense_graph(path: Path, *, batch, names: list[str], reshape_to_one: bool = False) -> Path:
    """x (batch, 4) -> MatMul W1 -> Relu -> [Reshape [1, -1] ->] MatMul W2 -> (batch, 2)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 3)).astype(np.float32)
    w2 = rng.normal(size=(3, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name=names[0]),
        helper.make_node("Relu", ["h"], ["r"], name=names[1]),
    ]
    last = "r"
    if reshape_to_one:
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                ["shape"],
                value=numpy_helper.from_array(np.array([1, -1], dtype=np.int64)),
            )
        )
        nodes.append(helper.make_node("Reshape", ["r", "shape"], ["flat"], name=names[2]))
        last = "flat"
    nodes.append(helper.make_node("MatMul", [last, "w2"], ["y"], name=names[-1]))
    return save_graph(
        path,
        nodes,
        [tensor_info("x", [batch, 4])],
        [tensor_info("y", [batch, 2])],
        {"w1": w1, "w2": w2},
    )


def test_unnamed_and_repeated_node_names(tmp_path: Path) -> None:
    path = _dense_graph(tmp_path / "names.onnx", batch="n", names=["", "act.1", "", "act.1"])
    model = load_onnx(path, device="cpu")
    # Unnamed, or named like another node: shown by the output tensor's name.
    assert model.layer_names() == ["h", "r", "y"]
    named = _dense_graph(tmp_path / "named.onnx", batch="n", names=["fc.1", "relu", "", "fc.2"])
    model = load_onnx(named, device="cpu")
    assert model.layer_names() == ["fc.1", "relu", "fc.2"]
    model.check_layers(["fc/1", "h"])  # onnx2torch's name, the output tensor
    assert model.canonical("fc/1") == "fc.1" and model.canonical("y") == "fc.2"


def test_fixed_batch_size_that_the_graph_needs(tmp_path: Path) -> None:
    path = _dense_graph(
        tmp_path / "fixed.onnx", batch=1, names=["fc1", "relu", "flat", "fc2"], reshape_to_one=True
    )
    model = load_onnx(path, device="cpu")
    assert model.fixed_batch == 1
    assert model.layer_names() == ["fc1", "relu", "flat", "fc2"]  # no Constant node
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    one_by_one = [model.activations(x[i : i + 1], ["relu"])["relu"] for i in range(5)]
    torch.testing.assert_close(model.activations(x, ["relu"])["relu"], torch.cat(one_by_one))
    w2 = numpy_helper.to_array(
        next(i for i in onnx.load(str(path)).graph.initializer if i.name == "w2")
    )
    grads = model.gradients(x, 1, ["relu"])["relu"]
    torch.testing.assert_close(grads, torch.tensor(w2[:, 1]).expand(5, 3))
    assert model.logits(x).shape == (5, 2)
    # The same graph without the Reshape runs any batch size, though it declares 1.
    free = _dense_graph(tmp_path / "free.onnx", batch=1, names=["fc1", "relu", "fc2"])
    assert load_onnx(free, device="cpu").fixed_batch is None


def test_exported_without_a_dynamic_batch_axis(tmp_path: Path) -> None:
    path = export(small_cnn(), tmp_path / "static.onnx", dynamic=False)
    model = load_onnx(path, device="cpu")
    assert model.fixed_batch is None  # probed: Flatten does not depend on the batch size
    x = images(3)
    torch.testing.assert_close(
        model.logits(x), TorchModel(small_cnn()).logits(x), atol=1e-4, rtol=0
    )


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing.onnx does not exist \(model.path\)"):
        load_model(ModelSpec(path=tmp_path / "missing.onnx", layers=["x"]))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    with pytest.raises(ModelError, match="junk.onnx is not a readable ONNX file"):
        load_onnx(junk)
    two = save_graph(
        tmp_path / "two_inputs.onnx",
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [tensor_info("a", ["n", 2]), tensor_info("b", ["n", 2])],
        [tensor_info("y", ["n", 2])],
        {},
    )
    with pytest.raises(ModelError, match=r"2 inputs \('a', 'b'\).*one input"):
        load_onnx(two)


def test_operators_that_need_torchvision(tmp_path: Path) -> None:
    if tcav_onnx._torchvision_problem is None:
        pytest.skip("torchvision imports here: onnx2torch runs NonMaxSuppression itself")
    nms = save_graph(
        tmp_path / "nms.onnx",
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["keep"], name="nms")],
        [tensor_info("boxes", [1, 5, 4]), tensor_info("scores", [1, 1, 5])],
        [helper.make_tensor_value_info("keep", TensorProto.INT64, ["k", 3])],
        {},
    )
    with pytest.raises(ModelError, match="uses NonMaxSuppression.*torchvision"):
        load_onnx(nms)
    # What onnx2torch imported in torchvision's place computes nothing.
    import onnx2torch.node_converters.nms as converter

    with pytest.raises(ModelError, match="needs torchvision.ops.nms, but torchvision"):
        converter.torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    assert "torchvision" not in __import__("sys").modules or not isinstance(
        __import__("sys").modules["torchvision"], tcav_onnx._TorchvisionAbsent
    )


def test_fingerprint_follows_the_file(cnn_file: Path, tmp_path: Path) -> None:
    first = load_onnx(cnn_file).fingerprint()
    assert load_onnx(cnn_file).fingerprint() == first
    other = small_cnn()
    with torch.no_grad():
        other[7].bias[0] += 1e-3
    assert load_onnx(export(other, tmp_path / "other.onnx")).fingerprint() != first


# -- the command line, with planted ground truth -------------------------------------------------
def colour_model() -> nn.Sequential:
    """logit_fire = mean red - (mean green + mean blue) / 2; likewise water (blue), grass.

    1x1 conv = identity on RGB, ReLU (inputs are in [0, 1]), global average pool, linear.
    """
    conv = nn.Conv2d(3, 3, 1)
    head = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        conv.bias.zero_()
        mix = torch.full((3, 3), -0.5) + 1.5 * torch.eye(3)  # rows: red, green, blue
        head.weight.copy_(mix[[0, 2, 1]])  # fire = red, water = blue, grass = green
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


EXPERIMENT = """\
model:
  path: colour.onnx
  layers: [/1/Relu, /3/Flatten]
  labels: [fire, water, grass]
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


def invoke(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


def test_cli_layers_and_run_with_planted_ground_truth(tmp_path: Path) -> None:
    export(colour_model(), tmp_path / "colour.onnx")
    make_dataset(
        tmp_path / "data",
        size=SIZE,
        n_per_set=12,
        n_random_sets=10,
        concepts=("red", "blue", "striped"),
        targets=("fire", "water"),
    )
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT, encoding="utf-8")

    listed = invoke("layers", tmp_path / "colour.onnx")
    assert listed.exit_code == 0, listed.output
    rows = {
        line.split(maxsplit=2)[0]: line.split(maxsplit=2)[1:]
        for line in listed.stdout.splitlines()
        if line.strip()
    }
    assert list(rows) == ["/0/Conv", "/1/Relu", "/2/GlobalAveragePool", "/3/Flatten", "/4/MatMul"]
    assert rows["/1/Relu"] == ["Relu", "(1, 3, 16, 16)"]  # the size the graph declares
    assert rows["/3/Flatten"] == ["Flatten", "(1, 3)"]

    result = invoke("run", tmp_path / "experiment.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "results" / "summary.csv").set_index(
        ["target", "concept", "layer"]
    )
    for target, colour in (("fire", "red"), ("water", "blue")):
        for layer in ("/1/Relu", "/3/Flatten"):
            row = summary.loc[(target, colour, layer)]
            assert row.significant and row["mean"] == 1.0, summary

    # striped: the model is linear in an image's mean colour, so the tested difference from
    # random concepts is exactly the difference of the mean logits of the striped images
    # and of every random image; the stripes' palette is not the random images' colour
    # balance, so striped may differ from random concepts, but only as the pixels say.
    def mean_logits(names: list[str]) -> np.ndarray:
        from PIL import Image

        files = [f for name in names for f in sorted((tmp_path / "data" / name).glob("*.png"))]
        rgb = np.stack(
            [np.asarray(Image.open(f).convert("RGB"), float).mean((0, 1)) for f in files]
        )
        head = colour_model()[4].weight.detach().numpy().astype(float)
        return (rgb / 255.0 @ head.T).mean(axis=0)  # fire, water, grass

    randoms = [f"random500_{i}" for i in range(10)]
    truth = mean_logits(["striped"]) - mean_logits(randoms)
    for (target, layer), row in summary.xs("striped", level="concept").iterrows():
        true = truth[["fire", "water"].index(target)]
        measured = row.statistic_mean - row.statistic_null_mean
        assert measured == pytest.approx(true, abs=1e-3), (target, layer, measured, true)
        if row.significant:  # only where the pixels differ, and in their direction
            assert abs(true) > row.detectable / 2 and np.sign(measured) == np.sign(true)
    described = json.loads((tmp_path / "results" / "results.json").read_text())
    assert "ONNX file" in json.dumps(described)
