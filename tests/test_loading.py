"""Loading models from files and factories; the TorchScript adapter."""

from __future__ import annotations

import importlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from tcavkit.config import ModelSpec, load_config
from tcavkit.errors import ConfigError, LayerError, ModelError, TcavWarning
from tcavkit.models.adapter import TorchModel
from tcavkit.models.inspect import layer_shapes
from tcavkit.models.loading import (
    describe,
    load_factory,
    load_labels,
    load_model,
    load_state_dict_file,
    model_file_kind,
)
from tcavkit.models.torchscript import SUPPORTED_STRUCTURES, ScriptedSequentialModel

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)


def make_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True)),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


FACTORY_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(123)  # different weights from make_net
        return nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(inplace=True),
            nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True)),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 5),
        )

    def not_a_module():
        return 3
    """
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def scripted_file(tmp_path: Path) -> Path:
    path = tmp_path / "net_scripted.pt"
    torch.jit.save(torch.jit.script(make_net()), str(path))
    return path


def spec(**kwargs) -> ModelSpec:
    return ModelSpec(layers=["0"], **kwargs)


# -- (a) scripted Sequential -----------------------------------------------------------------
def test_scripted_layer_names_include_nested(scripted_file: Path) -> None:
    model = load_model(spec(path=scripted_file), device="cpu")
    assert isinstance(model, ScriptedSequentialModel)
    assert model.layer_names() == ["0", "1", "2", "2.0", "2.1", "3", "4"]
    assert model_file_kind(scripted_file) == "torchscript"
    assert describe(spec(path=scripted_file)) == f"TorchScript file {scripted_file}"


def test_scripted_activations_match_eager(scripted_file: Path, x: torch.Tensor) -> None:
    scripted = load_model(spec(path=scripted_file), device="cpu")
    eager = TorchModel(make_net(), device="cpu")
    layers = ["0", "2.0", "2", "4"]
    got, want = scripted.activations(x, layers), eager.activations(x, layers)
    for layer in layers:
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-6, atol=1e-6)
    # The conv output is captured before the in-place ReLU that follows it.
    assert (got["0"] < 0).any()
    assert (got["2.0"] < 0).any()
    torch.testing.assert_close(scripted.logits(x), eager.logits(x), rtol=1e-6, atol=1e-6)


def test_scripted_gradients_match_eager(scripted_file: Path, x: torch.Tensor) -> None:
    scripted = load_model(spec(path=scripted_file), device="cpu")
    eager = TorchModel(make_net(), device="cpu")
    layers = ["0", "1", "2.0", "2", "3"]  # conv layers followed by in-place ReLUs
    for k in (0, 3):
        got, want = scripted.gradients(x, k, layers), eager.gradients(x, k, layers)
        for layer in layers:
            torch.testing.assert_close(got[layer], want[layer], rtol=1e-6, atol=1e-6)
        assert got["0"].abs().sum() > 0


def test_scripted_early_stop_and_logits_layer(scripted_file: Path, x: torch.Tensor) -> None:
    model = load_model(spec(path=scripted_file, logits="4"), device="cpu")
    with torch.inference_mode():
        output, captured = model.run(x, ["0"], need_output=False)
    assert output is None and set(captured) == {"0"}
    # Early stop inside a nested Sequential, then a full pass still works.
    acts = model.activations(x, ["2.0"])
    assert acts["2.0"].shape == (6, 4 * 4 * 4)
    eager = TorchModel(make_net(), logits_layer="4", device="cpu")
    torch.testing.assert_close(
        model.gradients(x, 1, ["2.1"])["2.1"], eager.gradients(x, 1, ["2.1"])["2.1"]
    )


def test_scripted_fingerprint(scripted_file: Path, tmp_path: Path) -> None:
    a = load_model(spec(path=scripted_file), device="cpu").fingerprint()
    b = load_model(spec(path=scripted_file), device="cpu").fingerprint()
    assert a == b
    net = make_net()
    with torch.no_grad():
        net[4].bias.add_(1.0)
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(net), str(other))
    assert load_model(spec(path=other), device="cpu").fingerprint() != a


def test_scripted_unknown_layer(scripted_file: Path, x: torch.Tensor) -> None:
    model = load_model(spec(path=scripted_file), device="cpu")
    with pytest.raises(LayerError, match="unknown layer '2.5'"):
        model.activations(x, ["2.5"])


# -- (d) scripted modules that are not Sequentials -------------------------------------------
def test_non_sequential_script_layers_refused(tmp_path: Path, x: torch.Tensor) -> None:
    path = tmp_path / "block.pt"
    torch.jit.save(torch.jit.script(Block()), str(path))
    model = load_model(spec(path=path), device="cpu")
    assert model.layer_names() == []
    with pytest.raises(LayerError) as info:
        model.activations(x, ["conv"])
    assert SUPPORTED_STRUCTURES in str(info.value)
    assert model.logits(x).shape == (6, 5)  # the output alone is still usable
    with pytest.raises(LayerError, match="nn.Sequential"):
        load_model(spec(path=path, logits="head"), device="cpu")


def test_inner_layer_of_non_sequential_child(tmp_path: Path, x: torch.Tensor) -> None:
    path = tmp_path / "seq_block.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(Block(), nn.ReLU())), str(path))
    model = load_model(spec(path=path), device="cpu")
    assert model.layer_names() == ["0", "1"]
    assert model.activations(x, ["0"])["0"].shape == (6, 5)
    with pytest.raises(LayerError, match=r"inside '0'.*choose '0'"):
        model.activations(x, ["0.conv"])


# -- (b) torch.save'd full modules -----------------------------------------------------------
def test_pickled_module_needs_trust(tmp_path: Path, x: torch.Tensor) -> None:
    path = tmp_path / "full.pt"
    torch.save(make_net(), path)
    assert model_file_kind(path) == "pickle"
    with pytest.raises(ModelError, match="--trust-model-file") as info:
        load_model(spec(path=path), device="cpu")
    assert "arbitrary code" in str(info.value) and "\n" not in str(info.value)
    assert "TCAVKIT_TRUST_MODEL_FILE=1" in str(info.value)
    assert "model.trusted" not in str(info.value)  # the experiment file cannot grant trust
    model = load_model(spec(path=path), device="cpu", trust_model_file=True)
    assert isinstance(model, TorchModel)
    torch.testing.assert_close(model.logits(x), TorchModel(make_net()).logits(x))


def test_trust_is_not_read_from_the_experiment_file(tmp_path: Path) -> None:
    """A shared experiment file saying ``trusted: true`` must not make a pickle load."""
    path = tmp_path / "full.pt"
    torch.save(make_net(), path)
    with pytest.raises(ConfigError, match="model.trusted") as info:
        spec(path=path, trusted=True)
    message = str(info.value)
    assert "--trust-model-file" in message and "TCAVKIT_TRUST_MODEL_FILE=1" in message
    assert "\n" not in message
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        f"model: {{path: {path}, layers: ['0'], trusted: true}}\ndata: .\ntargets: ['0']\n"
    )
    with pytest.raises(ConfigError, match=r"experiment\.yaml: model\.trusted") as info:
        load_config(experiment)
    assert "\n" not in str(info.value)
    experiment.write_text(f"model: {{path: {path}, layers: ['0']}}\ndata: .\ntargets: ['0']\n")
    with pytest.raises(ConfigError, match="model.trusted"):
        load_config(experiment, ["model.trusted=true"])  # nor through --set


def test_pickle_refusal_comes_without_torch_protocol_warning(tmp_path: Path) -> None:
    """torch warns about a pickle protocol other than 2 before the refusal: not shown."""
    path = tmp_path / "full.pt"
    torch.save(make_net(), path, pickle_protocol=4)
    weights = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": make_net().state_dict(), "note": object}, weights, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelError, match="--trust-model-file"):
            load_model(spec(path=path), device="cpu")
        with pytest.raises(ModelError, match="--trust-model-file"):
            load_state_dict_file(weights)
    assert not [w for w in caught if "pickle protocol" in str(w.message)], caught


def test_state_dict_as_model_path(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(make_net().state_dict(), path)
    with pytest.raises(ModelError, match="model.factory"):
        load_model(spec(path=path), device="cpu")  # detected without any trust


def test_missing_and_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nope.pt does not exist"):
        load_model(spec(path=tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="junk.pt is neither"):
        load_model(spec(path=junk))


def test_path_and_factory_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_model(spec(path=tmp_path / "a.pt", factory="m:f"))
    with pytest.raises(ConfigError, match=r"model\.path"):
        load_model(spec())


# -- (c) factory + weights -------------------------------------------------------------------
@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "pkgdir"
    folder.mkdir()
    (folder / "tiny_factory_mod.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "tiny_factory_mod", raising=False)
    yield "tiny_factory_mod"
    sys.modules.pop("tiny_factory_mod", None)


def test_factory_with_weights(factory_module: str, tmp_path: Path, x: torch.Tensor) -> None:
    original = make_net()
    weights = tmp_path / "weights.pt"
    torch.save(original.state_dict(), weights)
    model = load_model(
        spec(factory=f"{factory_module}:build", weights=weights),
        device="cpu",
        trust_model_file=True,
    )
    torch.testing.assert_close(model.logits(x), TorchModel(original).logits(x))
    assert describe(spec(factory="m:build", weights=weights)) == f"m:build() with weights {weights}"

    # A checkpoint dict holding the state_dict, with DataParallel's "module." prefix.
    checkpoint = tmp_path / "ckpt.pt"
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state}, checkpoint)
    model = load_model(
        spec(factory=f"{factory_module}:build", weights=checkpoint), trust_model_file=True
    )
    torch.testing.assert_close(model.logits(x), TorchModel(original).logits(x))

    # Without weights, the factory's own initialisation.
    plain = load_model(spec(factory=f"{factory_module}:build"), device="cpu", trust_model_file=True)
    assert not torch.allclose(plain.logits(x), TorchModel(original).logits(x))


def test_factory_wrong_weights(factory_module: str, tmp_path: Path) -> None:
    weights = tmp_path / "wrong.pt"
    torch.save(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).state_dict(), weights)
    with pytest.raises(ModelError) as info:
        load_model(spec(factory=f"{factory_module}:build", weights=weights), trust_model_file=True)
    message = str(info.value)
    assert "wrong.pt" in message and "missing keys" in message and "'2.0.weight'" in message
    assert "unexpected keys" in message and "'1.weight'" in message

    shapes = tmp_path / "shapes.pt"
    bad = make_net()
    bad[4] = nn.Linear(64, 7)
    torch.save(bad.state_dict(), shapes)
    with pytest.raises(ModelError, match=r"shape mismatch for '4.weight'"):
        load_model(spec(factory=f"{factory_module}:build", weights=shapes), trust_model_file=True)

    with pytest.raises(ModelError, match="weights file .*missing.pt does not exist"):
        load_model(
            spec(factory=f"{factory_module}:build", weights=tmp_path / "missing.pt"),
            trust_model_file=True,
        )


def test_pickled_weights_need_trust(tmp_path: Path) -> None:
    from tcavkit.demo.starters import starter_cnn

    weights = tmp_path / "whole.pt"
    torch.save(starter_cnn(), weights)
    built = spec(factory="tcavkit.demo.starters:starter_cnn", weights=weights)  # no trust needed
    with pytest.raises(ModelError, match="--trust-model-file") as info:
        load_model(built)
    assert "pickled" in str(info.value) or "weights" in str(info.value)
    load_model(built, trust_model_file=True)


def test_bad_factories(factory_module: str) -> None:
    with pytest.raises(ModelError, match="'package.module:callable'"):
        load_factory("tiny_factory_mod.build")
    with pytest.raises(ModelError, match="cannot import module 'no_such_mod_xyz'"):
        load_factory("no_such_mod_xyz:build")
    with pytest.raises(ModelError, match="has no attribute 'nope'"):
        load_factory(f"{factory_module}:nope")
    with pytest.raises(ModelError, match=r"returned a int; it must return a torch\.nn\.Module"):
        load_model(spec(factory=f"{factory_module}:not_a_module"), trust_model_file=True)
    assert callable(load_factory("torch.nn:Linear"))


def test_factory_found_in_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, x: torch.Tensor
) -> None:
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "tiny_factory_mod2.py").write_text(FACTORY_SOURCE)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    monkeypatch.delitem(sys.modules, "tiny_factory_mod2", raising=False)
    try:
        model = load_model(
            spec(factory="tiny_factory_mod2:build"), base_dir=folder, trust_model_file=True
        )
        assert model.logits(x).shape == (6, 5)
    finally:
        sys.modules.pop("tiny_factory_mod2", None)


EXPERIMENT_WITH_FACTORY = """\
model:
  factory: {factory}
  layers: ["0"]
  input:
    size: [8, 8]
data: data
targets: [a]
"""

LAZY_FACTORY_SOURCE = textwrap.dedent(
    """
    def build():
        from {helper} import build as build_helper  # imported when called, from the same folder

        return build_helper()
    """
)


@pytest.fixture
def experiment_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder holding factory modules (not on ``sys.path``) and an experiment file naming
    ``{module}:build``; ``sys.path`` and the modules are put back afterwards."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    names = ("path_factory_mod", "path_factory_lazy", "path_factory_helper", "path_factory_boom")
    (folder / "path_factory_mod.py").write_text(FACTORY_SOURCE)
    (folder / "path_factory_helper.py").write_text(FACTORY_SOURCE)
    lazy = LAZY_FACTORY_SOURCE.format(helper="path_factory_helper")
    (folder / "path_factory_lazy.py").write_text(lazy)
    (folder / "path_factory_boom.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # isolates the other tests from a leak
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert str(folder) not in sys.path

    def experiment(module: str) -> Path:
        path = folder / f"{module}.yaml"
        path.write_text(EXPERIMENT_WITH_FACTORY.format(factory=f"{module}:build"))
        return path

    yield experiment
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("module", ["path_factory_mod", "path_factory_lazy"])
def test_factory_from_experiment_folder_leaves_sys_path_unchanged(
    experiment_folder, module: str, x: torch.Tensor
) -> None:
    path = experiment_folder(module)
    before = list(sys.path)
    for _ in range(2):  # imported from the folder, then found in sys.modules
        model = load_model(
            load_config(path).model, device="cpu", base_dir=path.parent, trust_model_file=True
        )
        assert sys.path == before
        assert model.logits(x).shape == (6, 5)
    imported = sys.modules[module]  # the module stays imported and usable
    assert Path(imported.__file__).parent == path.parent
    assert isinstance(imported.build(), nn.Sequential)


def test_failed_factory_import_leaves_sys_path_unchanged(experiment_folder) -> None:
    before = list(sys.path)
    boom = experiment_folder("path_factory_boom")
    with pytest.raises(ModelError, match="raised RuntimeError: boom"):
        load_model(load_config(boom).model, base_dir=boom.parent, trust_model_file=True)
    assert sys.path == before
    missing = experiment_folder("path_factory_absent")
    with pytest.raises(ModelError, match="cannot import module 'path_factory_absent'"):
        load_model(load_config(missing).model, base_dir=missing.parent, trust_model_file=True)
    assert sys.path == before
    assert "path_factory_boom" not in sys.modules


def test_pickled_class_from_base_dir_leaves_sys_path_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, x: torch.Tensor
) -> None:
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "path_pickled_mod.py").write_text(
        FACTORY_SOURCE + "\n\nclass Net(nn.Sequential):\n    pass\n"
    )
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    monkeypatch.delitem(sys.modules, "path_pickled_mod", raising=False)
    try:
        import path_pickled_mod

        torch.save(path_pickled_mod.Net(*path_pickled_mod.build()), folder / "net.pt")
        sys.modules.pop("path_pickled_mod")
        sys.path.remove(str(folder))
        before = list(sys.path)
        model = load_model(spec(path=folder / "net.pt"), trust_model_file=True, base_dir=folder)
        assert sys.path == before
        assert model.logits(x).shape == (6, 5)
        assert "path_pickled_mod" in sys.modules
    finally:
        sys.modules.pop("path_pickled_mod", None)


def test_weights_without_factory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.weights"):
        load_model(spec(path=tmp_path / "a.pt", weights=tmp_path / "w.pt"))


# -- layer shapes (tcavkit layers) -----------------------------------------------------------
CHANNELS_LAST_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.unused = nn.Linear(2, 2)
            self.head = nn.Linear(4, 5)

        def forward(self, x):  # (n, H, W, C)
            h = torch.relu(self.conv(x.permute(0, 3, 1, 2)))
            return self.head(h.mean((2, 3)))

    def build():
        return Net()
    """
)


def test_layer_shapes_of_a_model_file(scripted_file: Path, tmp_path: Path) -> None:
    assert [(name, shape) for name, _, shape in layer_shapes(scripted_file, size=(8, 8))] == [
        ("0", "(1, 4, 6, 6)"),
        ("1", "(1, 4, 6, 6)"),
        ("2", "(1, 4, 4, 4)"),
        ("2.0", "(1, 4, 4, 4)"),
        ("2.1", "(1, 4, 4, 4)"),
        ("3", "(1, 64)"),
        ("4", "(1, 5)"),
    ]
    assert {shape for _, _, shape in layer_shapes(scripted_file, size=(9, 9))} == {"-"}
    pickled = tmp_path / "full.pt"
    torch.save(make_net(), pickled)
    with pytest.raises(ModelError, match="--trust-model-file"):
        layer_shapes(pickled, size=(8, 8))
    assert layer_shapes(pickled, trust_model_file=True, size=(8, 8))[-1] == (
        "4",
        "Linear",
        "(1, 5)",
    )


def test_layer_shapes_of_an_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The experiment's input size and layout; a layer the forward pass skips gets "-"."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "shapes_factory_mod.py").write_text(CHANNELS_LAST_SOURCE)
    experiment = folder / "experiment.yaml"
    experiment.write_text(
        EXPERIMENT_WITH_FACTORY.format(factory="shapes_factory_mod:build").replace(
            "size: [8, 8]", "size: [8, 10]\n    channels_last: true"
        )
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "shapes_factory_mod", raising=False)
    before = list(sys.path)
    try:
        assert layer_shapes(experiment, trust_model_file=True) == [
            ("conv", "Conv2d", "(1, 4, 6, 8)"),
            ("unused", "Linear", "-"),
            ("head", "Linear", "(1, 5)"),
        ]
        assert layer_shapes(experiment, size=(5, 5), trust_model_file=True)[0] == (
            "conv",
            "Conv2d",
            "(1, 4, 3, 3)",
        )
        assert sys.path == before
    finally:
        sys.modules.pop("shapes_factory_mod", None)


# -- (e) labels ------------------------------------------------------------------------------
def test_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\n\n  dog \nzebra\n\n", encoding="utf-8")
    assert load_labels(path) == ["cat", "dog", "zebra"]
    assert load_labels(str(path)) == ["cat", "dog", "zebra"]
    assert load_labels(["a", "b"]) == ["a", "b"]
    assert load_labels(None) is None
    with pytest.raises(ConfigError, match="nolabels.txt does not exist"):
        load_labels(tmp_path / "nolabels.txt")


# -- (f) model-zoo factories: arguments, nested names, checkpoint prefixes ----------------------
def _zoo_reference(factory: str, **kwargs) -> nn.Module:
    import zoo_like

    torch.manual_seed(5)
    model = getattr(zoo_like, factory)(**kwargs)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.2, 0.2)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_style_factory_with_args_and_nested_layers(tmp_path: Path) -> None:
    reference = _zoo_reference("resnet_like", num_classes=3)
    state = {f"module._orig_mod.{k}": v for k, v in reference.state_dict().items()}
    torch.save(state, tmp_path / "resnet.pt")  # DataParallel around torch.compile
    layers = ["layer3.1.conv2", "layer2.0.downsample.0", "layer4.1", "layer1.0.relu"]
    model = load_model(
        ModelSpec(
            factory="zoo_like:resnet_like",
            factory_args={"num_classes": 3, "weights": None},
            weights=tmp_path / "resnet.pt",
            layers=layers,
        ),
        device="cpu",
        trust_model_file=True,
    )
    assert set(layers) <= set(model.layer_names())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = TorchModel(reference, device="cpu")
    torch.testing.assert_close(model.logits(x), plain.logits(x))
    for name, value in model.activations(x, layers).items():
        torch.testing.assert_close(value, plain.activations(x, [name])[name])
    for name, value in model.gradients(x, 2, layers).items():
        torch.testing.assert_close(value, plain.gradients(x, 2, [name])[name])
    # The relu module runs twice per block; the first call is the one captured.
    first = torch.relu(
        reference.layer1[0].bn1(
            reference.layer1[0].conv1(
                reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
            )
        )
    )
    torch.testing.assert_close(
        model.activations(x, ["layer1.0.relu"])["layer1.0.relu"], first.reshape(4, -1)
    )


def test_timm_style_factory_with_lightning_checkpoint(tmp_path: Path) -> None:
    reference = _zoo_reference("create_model", model_name="mlp_tiny", num_classes=3)
    state = reference.state_dict()
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    checkpoint = {
        "epoch": 7,
        "state_dict": {
            **{f"model.{k}": v for k, v in state.items()},
            **{f"model_ema.{k}": v for k, v in other.items()},  # must not be picked
            "loss_fn.weight": torch.ones(3),
        },
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    spec = ModelSpec(
        factory="zoo_like:create_model",
        factory_args={"model_name": "mlp_tiny", "pretrained": False, "num_classes": 3},
        weights=tmp_path / "last.ckpt",
        layers=["blocks.5", "blocks.5.mlp.fc1"],
    )
    with pytest.warns(TcavWarning, match=r"entries under 'model\.'; ignored the \d+ others"):
        model = load_model(spec, device="cpu", trust_model_file=True)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    plain = TorchModel(reference, device="cpu")
    torch.testing.assert_close(model.logits(x), plain.logits(x))
    grads = model.gradients(x, 1, ["blocks.5", "blocks.5.mlp.fc1"])
    torch.testing.assert_close(grads["blocks.5"], plain.gradients(x, 1, ["blocks.5"])["blocks.5"])
    assert grads["blocks.5"].shape == (3, 16 * 8)  # 16 tokens x 8 features
    assert "blocks.5" in model.layer_names() and "head" in model.layer_names()


def test_weights_without_batchnorm_counters(tmp_path: Path) -> None:
    reference = _zoo_reference("resnet_like", num_classes=3)
    state = {k: v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pt")
    spec = ModelSpec(
        factory="zoo_like:resnet_like",
        factory_args={"num_classes": 3},
        weights=tmp_path / "old.pt",
        layers=["layer1"],
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        load_model(spec, trust_model_file=True).logits(x), TorchModel(reference).logits(x)
    )


def test_factory_args_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.factory_args"):
        load_model(spec(path=tmp_path / "a.onnx", factory_args={"num_classes": 3}))
    with pytest.raises(ModelError, match=r"factory_args \{'model_name': 'nope'\}.*Unknown model"):
        load_model(
            spec(factory="zoo_like:create_model", factory_args={"model_name": "nope"}),
            trust_model_file=True,
        )
    with pytest.raises(ModelError, match="with no arguments.*set model.factory_args"):
        load_model(spec(factory="zoo_like:create_model"), trust_model_file=True)
    with pytest.raises(ModelError, match="no pretrained weights"):
        load_model(
            spec(
                factory="zoo_like:create_model",
                factory_args={"model_name": "mlp_tiny", "pretrained": True},
            ),
            trust_model_file=True,
        )
    from tcavkit.config import parse_config

    raw = {
        "model": {
            "factory": "timm:create_model",
            "factory_args": {"model_name": "resnet18", "pretrained": False, "num_classes": 3},
            "layers": ["layer3.1.conv2"],
        },
        "data": "data",
        "targets": ["a"],
        "concepts": ["b"],
    }
    config = parse_config(raw, tmp_path)
    assert config.model.factory_args == {
        "model_name": "resnet18",
        "pretrained": False,
        "num_classes": 3,
    }
    with pytest.raises(ConfigError, match="model.factory_args"):
        parse_config({**raw, "model": {**raw["model"], "factory_args": [1, 2]}}, tmp_path)


class _NotInstalled:
    """A meta path finder that makes packages look uninstalled, whether they are or not."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return None


def test_missing_zoo_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled("timm", "torchvision"), *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModelError, match="package 'timm' is not installed: pip install timm"):
        load_factory("timm:create_model")
    with pytest.raises(ModelError, match="'torchvision' is not installed: pip install torchvision"):
        load_factory("torchvision.models:resnet18")
    (tmp_path / "uses_timm_mod.py").write_text("import timm\n\ndef build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "uses_timm_mod", raising=False)
    with pytest.raises(ModelError, match="needs the package 'timm', which is not installed"):
        load_factory("uses_timm_mod:build")
    sys.modules.pop("uses_timm_mod", None)


def test_describe_onnx(tmp_path: Path) -> None:
    assert describe(spec(path=tmp_path / "m.onnx")) == f"ONNX file {tmp_path / 'm.onnx'}"


def test_onnx_extra_missing_onnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelError, match=r"'onnx'.*pip install 'tcavkit\[onnx\]'"):
        load_model(spec(path=path))


def test_onnx_extra_missing_onnx2torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    try:  # onnx is checked first: only with onnx importable is onnx2torch the one named
        importlib.import_module("onnx")
    except ImportError as exc:
        pytest.skip(f"needs the onnx package, which does not import: {exc}")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if not installed
    with pytest.raises(ModelError, match=r"'onnx2torch'.*pip install 'tcavkit\[onnx\]'"):
        load_model(spec(path=path))


# -- (g) a factory runs code: only library model builders run without the operator's trust --
@pytest.mark.parametrize(
    ("factory", "args", "why"),
    [
        ("os:system", {"command": "touch {flag}"}, "not a model builder"),
        ("subprocess:check_output", {"args": ["touch", "{flag}"]}, "not a model builder"),
        ("torch.nn:Linear", {"in_features": 2, "out_features": 2}, "not a model builder"),
        ("tcavkit.models.loading:_unpickle_trusted", {}, "not a model builder"),
        ("torchvision.models.utils:load_state_dict_from_url", {}, "not a model builder"),
        ("timm.models:load_checkpoint", {}, "not a model builder"),
        (
            "transformers:AutoModel.from_pretrained",
            {"trust_remote_code": True},
            "factory_args.trust_remote_code runs code",
        ),
    ],
)
def test_a_factory_outside_the_model_libraries_needs_trust(
    tmp_path: Path, factory: str, args: dict, why: str
) -> None:
    flag = tmp_path / "ran"
    args = {
        k: (v.format(flag=flag) if isinstance(v, str) else [a.format(flag=flag) for a in v])
        if isinstance(v, (str, list))
        else v
        for k, v in args.items()
    }
    with pytest.raises(ModelError) as info:
        load_model(spec(factory=factory, factory_args=args), base_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"model.factory {factory!r} is not run: ")
    assert why in message and "--trust-model-file" in message
    assert "TCAVKIT_TRUST_MODEL_FILE=1" in message and "\n" not in message
    assert not flag.exists()


def test_a_module_beside_the_experiment_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither a module of its own nor one named like a library, imported from the folder."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "beside_mod.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    (tmp_path / "timm.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    for name in ("beside_mod", "timm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ModelError, match="not a model builder.*--trust-model-file"):
        load_model(spec(factory="beside_mod:build"), base_dir=tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` puts the working directory
    with pytest.raises(ModelError, match=r"module 'timm' is found in .*--trust-model-file"):
        load_model(spec(factory="timm:create_model"), base_dir=tmp_path)
    assert not list(tmp_path.glob("*.ran"))


def test_a_library_model_builder_runs_without_trust(tmp_path: Path) -> None:
    model = load_model(spec(factory="tcavkit.demo.starters:starter_cnn"), base_dir=tmp_path)
    assert "block1" in model.layer_names()


def test_layers_needs_trust_for_a_factory_too(tmp_path: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(EXPERIMENT_WITH_FACTORY.format(factory="subprocess:check_output"))
    with pytest.raises(ModelError, match="'subprocess:check_output' is not run.*--trust-model"):
        layer_shapes(experiment)


class _Blocks(nn.Module):
    """Blocks in an ``nn.ModuleList`` the forward pass iterates over (never calls), as in
    EfficientNet; a block whose output is a dict; and a count of forward passes."""

    passes = 0

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(3)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).passes += 1
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.pool(x).flatten(1))


def test_listing_layers_costs_one_forward_pass_whatever_the_model(tmp_path: Path) -> None:
    pickled = tmp_path / "blocks.pt"
    torch.save(_Blocks(), pickled)
    _Blocks.passes = 0
    rows = layer_shapes(pickled, trust_model_file=True, size=(6, 6))
    assert _Blocks.passes == 1  # was 14: one per module once "blocks" made the capture fail
    listed = {name: (kind, shape) for name, kind, shape in rows}
    assert listed["blocks"] == ("ModuleList", "-")  # a container that is never called
    assert listed["blocks.2.0"] == ("Conv2d", "(1, 4, 6, 6)")
    assert listed["head"] == ("Linear", "(1, 2)")
    assert len(rows) == 13
