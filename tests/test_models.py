"""The torch adapter: activations, closed-form gradients, logits, errors, fingerprint."""

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from torch import nn

from conftest import CountingIdentity
from tcavkit.errors import LayerError, ModelError
from tcavkit.models import TorchModel


def linear_model() -> nn.Sequential:
    """x (3) -> hidden = W1 x + b1 (2) -> relu -> logits = W2 h (2)."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.5]))
        model[2].weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    return model


X = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.0, 2.0]])
# hidden pre-activation: [[1, 2.5], [-1, -1.5]]


def test_activations_of_all_layers_in_one_pass():
    adapter = TorchModel(linear_model(), device="cpu")
    acts = adapter.activations(X, ["0", "1"])
    torch.testing.assert_close(acts["0"], torch.tensor([[1.0, 2.5], [-1.0, -1.5]]))
    torch.testing.assert_close(acts["1"], torch.tensor([[1.0, 2.5], [0.0, 0.0]]))


def test_gradients_match_closed_form():
    adapter = TorchModel(linear_model(), device="cpu")
    # d logit_0 / d relu output = W2[0] = [2, -1] for every example;
    # d logit_0 / d pre-activation = W2[0] * 1[pre > 0].
    grads = adapter.gradients(X, 0, ["0", "1"])
    torch.testing.assert_close(grads["1"], torch.tensor([[2.0, -1.0], [2.0, -1.0]]))
    torch.testing.assert_close(grads["0"], torch.tensor([[2.0, -1.0], [0.0, 0.0]]))
    grads = adapter.gradients(X, 1, ["1"])
    torch.testing.assert_close(grads["1"], torch.tensor([[0.5, 3.0], [0.5, 3.0]]))


def test_log_softmax_gradients_match_closed_form():
    adapter = TorchModel(linear_model(), device="cpu")
    w2 = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    relu = torch.tensor([[1.0, 2.5], [0.0, 0.0]])  # the relu output of X
    p = torch.softmax(relu @ w2.T, dim=1)
    for k in range(2):
        # d log softmax(W2 h)_k / d h = W2[k] - softmax(W2 h) @ W2, per example.
        grads = adapter.gradients(X, k, ["1"], objective="log_softmax")
        torch.testing.assert_close(grads["1"], w2[k] - p @ w2)


def test_log_softmax_is_taken_of_the_logits_not_of_a_final_softmax():
    plain = TorchModel(linear_model(), device="cpu")
    ending = TorchModel(SoftmaxNet(), logits_layer="body.2", device="cpu")
    expected = plain.gradients(X, 1, ["1"], objective="log_softmax")["1"]
    got = ending.gradients(X, 1, ["body.1"], objective="log_softmax")["body.1"]
    torch.testing.assert_close(got, expected)
    dict_output = TorchModel(TupleNet(), output="logits", device="cpu")
    got = dict_output.gradients(X, 1, ["body.1"], objective="log_softmax")["body.1"]
    torch.testing.assert_close(got, expected)


def test_inplace_relu_does_not_corrupt_gradients_or_activations():
    model = linear_model()
    model[1] = nn.ReLU(inplace=True)
    adapter = TorchModel(model, device="cpu")
    torch.testing.assert_close(adapter.activations(X, ["0"])["0"][1], torch.tensor([-1.0, -1.5]))
    grads = adapter.gradients(X, 0, ["0"])
    torch.testing.assert_close(grads["0"], torch.tensor([[2.0, -1.0], [0.0, 0.0]]))


def test_forward_stops_after_the_last_requested_layer():
    tail = CountingIdentity()
    model = nn.Sequential(nn.Linear(3, 2), tail, nn.Linear(2, 2))
    adapter = TorchModel(model, device="cpu")
    adapter.activations(X, ["0"])
    assert tail.calls == 0  # nothing after layer "0" ran
    adapter.gradients(X, 0, ["0"])
    assert tail.calls == 1  # gradients need the logits: the full pass


class SoftmaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = linear_model()
        self.probs = nn.Softmax(dim=1)

    def forward(self, x):
        return self.probs(self.body(x))


def test_logits_layer_for_models_ending_in_softmax():
    adapter = TorchModel(SoftmaxNet(), logits_layer="body.2", device="cpu")
    grads = adapter.gradients(X, 0, ["body.1"])
    torch.testing.assert_close(grads["body.1"], torch.tensor([[2.0, -1.0], [2.0, -1.0]]))


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = linear_model()

    def forward(self, x):
        logits = self.body(x)
        return {"aux": logits * 0, "logits": logits}


def test_output_selector_for_dict_outputs():
    with pytest.raises(ModelError, match="model.output"):
        TorchModel(TupleNet(), device="cpu").gradients(X, 0, ["body.1"])
    adapter = TorchModel(TupleNet(), output="logits", device="cpu")
    grads = adapter.gradients(X, 1, ["body.1"])
    torch.testing.assert_close(grads["body.1"], torch.tensor([[0.5, 3.0], [0.5, 3.0]]))
    with pytest.raises(ModelError, match="'nope'.*available keys"):
        TorchModel(TupleNet(), output="nope", device="cpu").gradients(X, 1, ["body.1"])


def test_unknown_layer_lists_valid_names():
    adapter = TorchModel(linear_model(), device="cpu")
    with pytest.raises(LayerError, match=r"unknown layer 'conv9'.*Valid layers: 0, 1, 2"):
        adapter.activations(X, ["conv9"])
    with pytest.raises(LayerError, match="unknown layer"):
        TorchModel(linear_model(), logits_layer="missing", device="cpu")


def test_class_index_out_of_range():
    with pytest.raises(ModelError, match="out of range"):
        TorchModel(linear_model(), device="cpu").gradients(X, 5, ["1"])


def test_fingerprint_follows_weights_and_structure():
    model = linear_model()
    first = TorchModel(model, device="cpu").fingerprint()
    assert TorchModel(linear_model(), device="cpu").fingerprint() == first
    with torch.no_grad():
        model[2].weight[0, 0] += 1e-3
    assert TorchModel(model, device="cpu").fingerprint() != first
    other = linear_model()
    other[1] = nn.Tanh()
    assert TorchModel(other, device="cpu").fingerprint() != first


# -- outputs wrapped in tuples, lists, namedtuples, dicts, dataclasses, objects ----------------
class Pair(NamedTuple):
    aux: torch.Tensor
    logits: torch.Tensor


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class ModelOutput(OrderedDict):
    """Like HuggingFace's ModelOutput: a dict whose keys are attributes, ``[0]`` positional."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class Plain:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.note = "not a tensor"


WRAPPERS = {
    "tuple": lambda z: (z * 0, z),
    "list": lambda z: [z * 0, z],
    "namedtuple": lambda z: Pair(z * 0, z),
    "dict": lambda z: {"aux": z * 0, "logits": z},
    "dataclass": lambda z: Output(logits=z, hidden=z * 0),
    "model_output": lambda z: ModelOutput(logits=z, hidden=z * 0),
    "object": lambda z: Plain(z),
    "nested": lambda z: {"heads": (z * 0, {"main": z})},
}
SELECTORS = {
    "tuple": [1, -1, "1"],
    "list": [1, -1],
    "namedtuple": ["logits", 1],
    "dict": ["logits"],
    "dataclass": ["logits"],
    "model_output": ["logits", 0],
    "object": ["logits"],
    "nested": ["heads.1.main"],
}


class Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body = linear_model()
        self.kind = kind

    def forward(self, x):
        return WRAPPERS[self.kind](self.body(x))


@pytest.mark.parametrize("kind", list(WRAPPERS))
def test_output_selectors_for_each_kind_of_output(kind):
    expected = torch.tensor([[0.5, 3.0], [0.5, 3.0]])
    for selector in SELECTORS[kind]:
        adapter = TorchModel(Wrapped(kind), output=selector, device="cpu")
        grads = adapter.gradients(X, 1, ["body.1"])
        torch.testing.assert_close(grads["body.1"], expected)
        torch.testing.assert_close(adapter.logits(X), linear_model()(X).detach())
    with pytest.raises(ModelError, match="not a tensor: say which output holds the logits"):
        TorchModel(Wrapped(kind), device="cpu").logits(X)


def test_output_selector_errors_list_what_there_is():
    def error(kind, selector):
        with pytest.raises(ModelError) as info:
            TorchModel(Wrapped(kind), output=selector, device="cpu").logits(X)
        return str(info.value)

    assert "available indices 0: tensor (2, 2), 1: tensor (2, 2)" in error("tuple", 2)
    assert "available fields 'aux': tensor (2, 2), 'logits'" in error("namedtuple", "logit")
    assert "available fields 'logits': tensor (2, 2), 'hidden'" in error("dataclass", "out")
    assert "available keys 'logits'" in error("model_output", "scores")
    assert "available attributes 'logits': tensor (2, 2)" in error("object", "x")
    message = error("nested", "heads")
    assert "is a tuple holding indices 0: tensor (2, 2), 1: dict" in message
    assert "'heads.0'" in message
    assert "returns a dict with keys 'heads': tuple" in error("nested", None)
    with pytest.raises(ModelError, match="returns one tensor .2, 2.: remove model.output"):
        TorchModel(linear_model(), output=0, device="cpu").logits(X)


def test_output_index_into_stacked_heads():
    class Stacked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = linear_model()

        def forward(self, x):
            z = self.body(x)
            return torch.stack([z * 0, z])  # (heads, n, classes)

    adapter = TorchModel(Stacked(), output=1, device="cpu")
    torch.testing.assert_close(adapter.logits(X), linear_model()(X).detach())


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def test_channels_last_inputs_give_the_same_activations_and_gradients():
    net = conv_net()
    auto = TorchModel(net, device="cpu")
    plain = TorchModel(net, device="cpu", memory_format="contiguous")
    assert auto.channels_last and not plain.channels_last
    assert auto._inputs(torch.zeros(2, 3, 16, 16)).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(5, 3, 16, 16)
    layers = ["1", "3"]
    for ours, theirs in [
        (auto.activations(x, layers), plain.activations(x, layers)),
        (auto.gradients(x, 2, layers), plain.gradients(x, 2, layers)),
    ]:
        for layer in layers:
            # Flattened in the logical (C, H, W) order whatever the memory layout.
            assert ours[layer].shape == theirs[layer].shape == (5, theirs[layer].shape[1])
            torch.testing.assert_close(ours[layer], theirs[layer], rtol=1e-5, atol=1e-6)


def test_channels_last_only_for_convolutional_networks_unless_asked():
    assert not TorchModel(linear_model(), device="cpu").channels_last
    forced = TorchModel(linear_model(), device="cpu", memory_format="channels_last")
    assert forced.channels_last
    x = torch.rand(4, 3)  # not an image batch: passed through as it is
    assert forced._inputs(x).is_contiguous()
    with pytest.raises(ModelError, match="memory_format 'channel_last': choose"):
        TorchModel(linear_model(), device="cpu", memory_format="channel_last")
