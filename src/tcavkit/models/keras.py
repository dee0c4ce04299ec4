"""Keras 3 models (``.keras``, legacy ``.h5``) run on Keras's PyTorch backend.

Keras 3 with ``KERAS_BACKEND=torch`` computes with torch tensors, so the engine's
activations and gradients work unchanged: for the requested layers the adapter builds a
functional sub-model (``keras.Model(model.inputs, [layer outputs…, logits])``) that returns
every layer and the logits from one forward pass, as torch tensors that autograd can
differentiate through. No hooks are needed.

- **Layer names** are the Keras layer names as ``model.summary()`` prints them
  (``conv2d_1``, ``max_pooling2d``, ``dense``…), top-level layers only.
- **Channels-last**: Keras image models take ``(n, H, W, C)``. The adapter accepts the
  ``(n, C, H, W)`` tensors that tcavkit's preprocessing produces by default as well as
  ``(n, H, W, C)``, and transposes to what the model's input shape says. Activations and
  gradients keep the model's own layout (a conv layer's activations are ``(n, H, W, C)``
  flattened).
- **Softmax**: the TCAV score needs the pre-softmax logits. When no ``logits`` layer is
  named and the selected model output comes from a softmax, the adapter uses the values
  before it: the input of a final ``Softmax``/``Activation('softmax')`` layer (or
  ``keras.ops.softmax``), or, for a final layer with ``activation='softmax'`` (e.g.
  ``Dense(10, activation='softmax')``), the same layer's output without its activation.
  Naming a softmax layer itself as ``logits`` is an error.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tcavkit.errors import LayerError, ModelError, one_line
from tcavkit.models.adapter import ModelAdapter, OutputSelector, resolve_device
from tcavkit.models.extras import require

_FINGERPRINT_VERSION = "tcavkit-keras-1"
_SUBMODEL_CACHE = 16


def import_keras() -> ModuleType:
    """Import Keras on its PyTorch backend (``KERAS_BACKEND=torch`` unless already set).

    Raises:
        ModelError: Keras is not installed (naming ``tcavkit[keras]``), or it was already
            imported, or configured, with another backend.
    """
    if sys.modules.get("keras") is None:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = require("keras", "keras", "loading Keras models")
    version = str(getattr(keras, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
        raise ModelError(
            f"Keras {version} is installed; tcavkit needs Keras 3: pip install 'tcavkit[keras]'"
        )
    backend = keras.backend.backend()
    if backend != "torch":
        raise ModelError(
            f"Keras is running on the {backend!r} backend; tcavkit runs Keras models on "
            "PyTorch: set the environment variable KERAS_BACKEND=torch before Python starts "
            "(or before anything imports keras)"
        )
    return keras


def _serialized_activation(layer: Any) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__.lower()


def _applies_softmax(op: Any) -> bool:
    """Whether ``op`` (a layer or functional op) is a softmax or ends in one."""
    return type(op).__name__ == "Softmax" or _serialized_activation(op) == "softmax"


def _producer(tensor: Any) -> tuple[Any, Any]:
    """The operation that made a symbolic tensor, and the node of that call."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    op = history.operation
    nodes = getattr(op, "_inbound_nodes", [])
    node = nodes[history.node_index] if history.node_index < len(nodes) else None
    return op, node


def _graph_nodes(outputs: Sequence[Any]) -> set[int]:
    """Ids of the call nodes on the paths to ``outputs``: the model's own graph. A layer
    can have other nodes too (Keras rebuilds a loaded Sequential's graph, for one)."""
    seen: set[int] = set()
    stack = list(outputs)
    while stack:
        _, node = _producer(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.input_tensors)
    return seen


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


class KerasModel(ModelAdapter):
    """Adapter for a Keras 3 Functional or Sequential model on the PyTorch backend.

    Args:
        model: a built ``keras.Model`` (Functional or Sequential) with one input.
        logits_layer: the layer whose output is the logits (``None``: the model output,
            taken before its softmax when it ends in one).
        output: which model output holds the logits, for a model with several outputs:
            an index, an output layer name, or a key of a dict output.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…; the model's weights are moved there.
        description: how errors name the model (e.g. its file).

    Attributes:
        channels_last: the model takes images as ``(n, H, W, C)``.
        input_shape: the model's input shape without the batch axis (``None``: any size).
        input_size: ``(H, W)`` of a fixed-size image input, else ``None``.
        logits_source: what the logits are, in words (e.g. ``"output of 'dense' before its
            softmax"``).
    """

    def __init__(
        self,
        model: Any,
        *,
        logits_layer: str | None = None,
        output: OutputSelector = None,
        device: str | torch.device = "auto",
        description: str | None = None,
    ) -> None:
        self.keras = import_keras()
        if not isinstance(model, self.keras.Model):
            raise ModelError(f"expected a keras.Model, got {type(model).__name__}")
        self.model = model
        self.description = description or f"Keras model {model.name!r}"
        inputs = self._graph_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.description} has {len(inputs)} inputs; tcavkit feeds one input tensor "
                "per example: wrap the model so that it takes a single input"
            )
        self._layers = {layer.name: layer for layer in model.layers}
        self._nodes = _graph_nodes(model.outputs)
        self.input_shape: tuple[int | None, ...] = tuple(inputs[0].shape[1:])
        self.channels_last = self._is_channels_last()
        self.input_size = self._fixed_size()
        self._outputs, self._output_keys = self._flat_outputs()
        device = resolve_device(device)
        self._move_to(device)
        super().__init__(
            logits_layer=logits_layer, output=self._normalise_output(output), device=device
        )
        if logits_layer is not None and _applies_softmax(self._layers[logits_layer]):
            raise ModelError(
                f"model.logits {logits_layer!r} applies a softmax, so its output is "
                "probabilities, not logits: name the layer before the softmax, or leave "
                "model.logits unset to use the model's pre-softmax output"
            )
        self._logit_tensors, notes = self._pre_softmax_outputs()
        if logits_layer is not None:
            self.logits_source = f"output of layer {logits_layer!r}"
        else:
            chosen = self.output if isinstance(self.output, int) else 0
            if isinstance(self.output, str):
                chosen = self._output_keys.index(self.output)
            self.logits_source = notes[chosen] if chosen < len(notes) else "the model output"
        self._submodels: dict[tuple[tuple[str, ...], bool], Any] = {}

    # -- set-up -----------------------------------------------------------------------------
    def _graph_inputs(self) -> list[Any]:
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ModelError(
                f"{self.description} has no functional graph (a subclassed model, or a "
                "Sequential model without an input shape): tcavkit needs a Functional or "
                "Sequential model built on keras.Input(shape)"
            )
        return list(inputs)

    def _is_channels_last(self) -> bool:
        if len(self.input_shape) != 3:
            return False
        for layer in self.model.layers:
            data_format = getattr(layer, "data_format", None)
            if data_format in ("channels_last", "channels_first"):
                return data_format == "channels_last"
        return self.keras.config.image_data_format() == "channels_last"

    def _fixed_size(self) -> tuple[int, int] | None:
        if len(self.input_shape) != 3:
            return None
        height, width = self.input_shape[:2] if self.channels_last else self.input_shape[1:]
        return (int(height), int(width)) if height and width else None

    def _flat_outputs(self) -> tuple[list[Any], list[str | int]]:
        """The model's outputs in the order its call returns them, with their keys."""
        struct = getattr(self.model, "_outputs_struct", None)
        if isinstance(struct, dict):
            keys: list[str | int] = sorted(struct)
            return [struct[key] for key in keys], keys
        outputs = list(self.model.outputs)
        return outputs, [getattr(_producer(t)[0], "name", str(i)) for i, t in enumerate(outputs)]

    def _normalise_output(self, output: OutputSelector) -> OutputSelector:
        """Output names become indices; a single output needs no selector."""
        dict_output = isinstance(getattr(self.model, "_outputs_struct", None), dict)
        count = len(self._outputs)
        valid = ", ".join(map(repr, self._output_keys))
        if output is None:
            return None
        if isinstance(output, int) and not isinstance(output, bool):
            if dict_output or not -count <= output < count:
                raise ModelError(
                    f"model.output {output!r}: {self.description} has {count} output(s) named "
                    f"{valid}; give one of these names"
                    + ("" if dict_output else f" or an index below {count}")
                )
            return None if count == 1 else output % count
        if output in self._output_keys:
            if count == 1:
                return None
            return output if dict_output else self._output_keys.index(output)
        close = difflib.get_close_matches(str(output), list(map(str, self._output_keys)), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelError(
            f"model.output {output!r} is not an output of {self.description}{hint} "
            f"Its outputs: {valid}"
        )

    def _pre_softmax_outputs(self) -> tuple[list[Any], list[str]]:
        """Each output as logits: the values before a final softmax, else the output."""
        tensors, notes = [], []
        for tensor in self._outputs:
            op, node = _producer(tensor)
            name = getattr(op, "name", "?")
            if op is not None and node is not None and _applies_softmax(op):
                if type(op).__name__ in ("Softmax", "Activation"):
                    tensors.append(_first(node.input_tensors))
                    notes.append(f"input of the final softmax {name!r}")
                    continue
                if hasattr(op, "get_config") and hasattr(op, "get_weights"):
                    tensors.append(self._without_activation(op, node))
                    notes.append(f"output of {name!r} before its softmax")
                    continue
            tensors.append(tensor)
            notes.append(f"model output {name!r}")
        return tensors, notes

    def _without_activation(self, layer: Any, node: Any) -> Any:
        """``layer`` applied to its own input with a linear activation (same weights)."""
        config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}__logits"}
        try:
            with torch.inference_mode(False), self._device_scope():
                linear = type(layer).from_config(config)
                result = linear(*node.arguments.args, **node.arguments.kwargs)
                linear.set_weights(layer.get_weights())
        except Exception as exc:
            raise ModelError(
                f"cannot take the logits of {self.description} before the softmax of layer "
                f"{layer.name!r} ({one_line(exc)}): name the logits layer with model.logits"
            ) from exc
        return _first(result)

    def _move_to(self, device: torch.device) -> None:
        """Put every weight on ``device`` (a no-op when loaded there)."""
        with torch.no_grad():
            for variable in self.model.variables:
                value = getattr(variable, "_value", None)
                if isinstance(value, torch.Tensor) and value.device != device:
                    value.data = value.data.to(device)

    @contextlib.contextmanager
    def _device_scope(self) -> Iterator[None]:
        device = getattr(self, "device", None)
        if device is None:
            yield
            return
        with self.keras.device(str(device)):
            yield

    # -- ModelAdapter -----------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layer_kinds(self) -> dict[str, str]:
        return {name: type(layer).__name__ for name, layer in self._layers.items()}

    def check_layers(self, layers: Sequence[str]) -> None:
        for layer in layers:
            if layer in self._layers:
                continue
            for outer in self._layers.values():
                inner = getattr(outer, "layers", None)
                if (
                    isinstance(outer, self.keras.Model)
                    and inner
                    and layer in {sub.name for sub in inner}
                ):
                    raise LayerError(
                        f"layer {layer!r} is inside the nested model {outer.name!r}; tcavkit "
                        f"captures top-level layers only: choose {outer.name!r} or another "
                        "listed layer, or build the model flat: "
                        "keras.Model(base.input, head(base.output))"
                    )
        super().check_layers(layers)

    def fingerprint(self) -> str:
        """SHA-256 of the model's architecture (``to_json``) and every weight."""
        digest = hashlib.sha256(_FINGERPRINT_VERSION.encode())
        digest.update(self.model.to_json(sort_keys=True).encode())
        for variable in self.model.weights:
            value = variable.value
            tensor = value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else None
            if tensor is None:
                tensor = torch.as_tensor(self.keras.ops.convert_to_numpy(value))
            digest.update(f"\0{variable.path}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _layer_tensor(self, name: str) -> Any:
        """The symbolic output of layer ``name`` in the model's graph (its first call)."""
        for node in getattr(self._layers[name], "_inbound_nodes", []):
            if id(node) in self._nodes and node.output_tensors:
                return node.output_tensors[0]
        raise LayerError(
            f"layer {name!r} has no output in the graph of {self.description}: choose another layer"
        )

    def _submodel(self, layers: tuple[str, ...], need_output: bool) -> Any:
        key = (layers, need_output)
        sub = self._submodels.get(key)
        if sub is None:
            outputs = [self._layer_tensor(name) for name in layers]
            if need_output:
                outputs += self._logit_tensors
            try:
                with torch.inference_mode(False):
                    sub = self.keras.Model(self.model.inputs, outputs)
            except Exception as exc:
                raise LayerError(
                    f"cannot capture layer(s) {list(layers)} of {self.description}: {one_line(exc)}"
                ) from exc
            if len(self._submodels) >= _SUBMODEL_CACHE:
                self._submodels.pop(next(iter(self._submodels)))
            self._submodels[key] = sub
        return sub

    def to_model_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the layout the model takes: ``(n, C, H, W)`` images become
        ``(n, H, W, C)`` for a channels-last model; anything else is passed as it is."""
        if not self.channels_last or x.ndim != 4:
            return x

        def fits(shape: Sequence[int]) -> bool:
            pairs = zip(self.input_shape, shape, strict=True)
            return all(want is None or want == got for want, got in pairs)

        as_given = fits(x.shape[1:])
        transposed = fits((x.shape[2], x.shape[3], x.shape[1]))
        if as_given and transposed:  # e.g. any-size input: guess from the channel counts
            transposed = x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4)
            as_given = not transposed
        return x.permute(0, 2, 3, 1) if transposed and not as_given else x

    def run(
        self, x: torch.Tensor, layers: Sequence[str], *, need_output: bool
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        names = tuple(dict.fromkeys(layers))
        self.check_layers(names)
        sub = self._submodel(names, need_output)
        x = self.to_model_layout(x)
        try:
            with self._device_scope():
                values = sub(x, training=False)
        except ValueError as exc:
            size = f" (with model.input.size: {list(self.input_size)})" if self.input_size else ""
            raise ModelError(
                f"{self.description} cannot run on inputs of shape {tuple(x.shape)}: expected "
                f"(n, {', '.join(str(d) for d in self.input_shape)}){size}; {one_line(exc)}"
            ) from exc
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        captured = dict(zip(names, values[: len(names)], strict=True))
        output: Any = None
        if need_output:
            logits = values[len(names) :]
            if len(logits) == 1:
                output = logits[0]
            elif isinstance(self._output_keys[0], str) and isinstance(
                getattr(self.model, "_outputs_struct", None), dict
            ):
                output = dict(zip(self._output_keys, logits, strict=True))
            else:
                output = list(logits)
        return output, captured


def load_keras(
    path: Path,
    *,
    logits_layer: str | None = None,
    output: int | str | None = None,
    device: str | torch.device = "auto",
    trusted: bool = False,
) -> KerasModel:
    """Load a Keras 3 model file (``.keras``, or a legacy ``.h5`` that Keras 3 reads).

    Args:
        path: the model file.
        logits_layer: the layer whose output is the logits (see :class:`KerasModel`).
        output: which output holds the logits for a model with several outputs.
        device: where the model runs.
        trusted: allow ``Lambda`` layers, whose code is unpickled from the file
            (Keras's ``safe_mode=False``); the caller's decision (``--trust-model-file``),
            never the experiment file's.

    Raises:
        ModelError: Keras missing or on another backend, or the file cannot be loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist (model.path)")
    keras = import_keras()
    torch_device = resolve_device(device)
    try:
        with keras.device(str(torch_device)):
            model = keras.saving.load_model(path, compile=False, safe_mode=not trusted)
    except Exception as exc:
        message = one_line(exc)
        if "safe_mode" in message:
            raise ModelError(
                f"{path} holds a Keras Lambda layer, whose Python code runs when it is loaded: "
                "if you trust this file, pass --trust-model-file (or set "
                "TCAVKIT_TRUST_MODEL_FILE=1)"
            ) from exc
        hint = ""
        if "custom" in message.lower() or "registered" in message.lower():
            hint = (
                ". The model uses custom layers: import the module that defines them "
                "(decorated with keras.saving.register_keras_serializable) before loading"
            )
        raise ModelError(f"cannot load Keras model file {path}: {message}{hint}") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return KerasModel(
        model,
        logits_layer=logits_layer,
        output=output,
        device=torch_device,
        description=f"Keras model {path.name}",
    )
