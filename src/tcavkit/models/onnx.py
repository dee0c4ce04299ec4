"""ONNX models (``.onnx``): converted to a PyTorch module with onnx2torch, then run with hooks.

`onnx2torch <https://github.com/ENOT-AutoDL/onnx2torch>`_ turns every ONNX node into one
PyTorch submodule of a ``torch.fx.GraphModule``. tcavkit hooks those submodules, so an ONNX
model gets the same activations and gradients as any PyTorch module.

**Layer names are the ONNX node names**, exactly as the graph stores them and as Netron
shows them, e.g. ``/features/features.3/Conv`` for a model exported by ``torch.onnx.export``.
A node without a name, or whose name is shared by several nodes, is named by its first
output tensor (e.g. ``conv1_out``). ``tcavkit layers model.onnx`` lists them in graph order.
Also accepted in ``model.layers`` and ``model.logits``, and translated to the listed name:

- any output tensor name of a node (Netron shows them on the edges);
- the submodule name onnx2torch gave the node: the node name with ``.`` replaced by ``/``
  and the leading ``/`` dropped (``features/features/3/Conv``), or the op type for an
  unnamed node, with ``_1``, ``_2``… for repeats (``Conv_1``).

``Constant`` nodes and nodes whose output is not floating point (shape arithmetic such as
``Shape``/``Gather``) are not layers. A node with several outputs gives its first one.

The model must take one input tensor. With several outputs, ``model.output`` names the one
holding the logits, by index in the graph's output list or by output name. A model whose
input has a fixed batch size that its graph really depends on (a ``Reshape`` to
``[1, -1]``, say) is run that many examples at a time, padding the last batch.

onnx2torch imports torchvision for its ``NonMaxSuppression`` and ``RoiAlign`` converters
only. When torchvision cannot be imported (it is not installed, or it was built for another
torch, as PyPI's CUDA wheels are next to a CPU-only torch), onnx2torch is imported with an
inert stand-in for torchvision, and a model that uses one of those two operators is refused
with an error saying so; every other model converts exactly as with torchvision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcavkit.errors import ModelError, one_line
from tcavkit.models.adapter import OutputSelector, TorchModel, module_fingerprint
from tcavkit.models.extras import require

EXTRA = "onnx"
PURPOSE = "loading .onnx models"
TORCHVISION_OPS = frozenset({"NonMaxSuppression", "RoiAlign"})
_NOT_LAYERS = frozenset({"Constant"})
# ONNX TensorProto element types that PyTorch runs as floating point.
_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}

# Why onnx2torch was imported without torchvision (None: with it, or not imported yet).
_torchvision_problem: str | None = None


# -- importing onnx2torch -------------------------------------------------------------------
class _TorchvisionAbsent(types.ModuleType):
    """What onnx2torch sees of torchvision when torchvision cannot be imported.

    Only onnx2torch's ``NonMaxSuppression`` and ``RoiAlign`` converters use torchvision,
    and :func:`load_onnx` refuses models with those operators first; should a function of
    it be called all the same, it raises :class:`ModelError` instead of computing anything.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(name)
        self._problem = problem

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        if attr.startswith("__"):
            raise AttributeError(attr)
        what = f"{self.__name__}.{attr}"
        problem = self._problem

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise ModelError(
                f"this ONNX model needs {what}, but torchvision {problem}: install the "
                f"torchvision release built for the installed torch {torch.__version__}"
            )

        return unavailable


def _torchvision_import_problem() -> str | None:
    """``None`` when torchvision imports; otherwise why it does not."""
    present = sys.modules.get("torchvision")
    if present is not None and not isinstance(present, _TorchvisionAbsent):
        return None
    if importlib.util.find_spec("torchvision") is None:
        return "is not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("torchvision")
    except Exception as exc:  # e.g. "operator torchvision::nms does not exist"
        return f"does not import ({type(exc).__name__}: {one_line(exc)})"
    return None


@contextlib.contextmanager
def _without_torchvision(problem: str) -> Iterator[None]:
    """Stand-ins for ``torchvision`` and ``torchvision.ops`` in ``sys.modules``, removed after."""
    names = ("torchvision", "torchvision.ops")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    root = _TorchvisionAbsent("torchvision", problem)
    ops = _TorchvisionAbsent("torchvision.ops", problem)
    root.__dict__["ops"] = ops
    sys.modules.update({"torchvision": root, "torchvision.ops": ops})
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def import_onnx2torch() -> types.ModuleType:
    """Import ``onnx2torch`` (and check ``onnx``), with or without torchvision (see above).

    Raises:
        ModelError: ``onnx`` or ``onnx2torch`` is missing; the message names the extra.
    """
    global _torchvision_problem
    require("onnx", EXTRA, PURPOSE)
    loaded = sys.modules.get("onnx2torch")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("onnx2torch") is None:
        return require("onnx2torch", EXTRA, PURPOSE)  # raises, naming the extra
    problem = _torchvision_import_problem()
    if problem is None:
        return require("onnx2torch", EXTRA, PURPOSE)
    with _without_torchvision(problem):
        module = require("onnx2torch", EXTRA, PURPOSE)
    _torchvision_problem = problem
    return module


# -- the graph ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OnnxLayer:
    """One ONNX node offered as a layer.

    Attributes:
        name: the name tcavkit shows and records (the node name, or its first output).
        module: the name of the submodule onnx2torch made of the node.
        op_type: the ONNX operator, e.g. ``Conv``.
        node_name: the node's name in the graph (may be empty).
        outputs: the node's output tensor names.
    """

    name: str
    module: str
    op_type: str
    node_name: str
    outputs: tuple[str, ...]


def _layers_of(nodes: Mapping[str, Any], elem_types: Mapping[str, int]) -> list[OnnxLayer]:
    """The layers of a graph: ``nodes`` is onnx2torch's {module name: OnnxNode}, in order."""
    counts: dict[str, int] = {}
    for node in nodes.values():
        if node.proto.name:
            counts[node.proto.name] = counts.get(node.proto.name, 0) + 1
    layers: list[OnnxLayer] = []
    taken: set[str] = set()
    for module_name, node in nodes.items():
        proto = node.proto
        outputs = tuple(proto.output)
        first_type = elem_types.get(outputs[0]) if outputs else None
        if proto.op_type in _NOT_LAYERS or (first_type and first_type not in _FLOAT_TYPES):
            continue
        candidates = [proto.name] if proto.name and counts[proto.name] == 1 else []
        candidates += [outputs[0]] if outputs and outputs[0] else []
        name = next((c for c in candidates if c not in taken), module_name)
        taken.add(name)
        layers.append(OnnxLayer(name, module_name, proto.op_type, proto.name, outputs))
    return layers


def _aliases(layers: Sequence[OnnxLayer]) -> dict[str, str]:
    """Other names a user may give for a layer → the listed name (first come, first kept)."""
    listed = {layer.name for layer in layers}
    aliases: dict[str, str] = {}
    for layer in layers:
        for alias in (layer.module, *layer.outputs, layer.node_name):
            if alias and alias not in listed and alias not in aliases:
                aliases[alias] = layer.name
    return aliases


def _output_selectors(
    graph_outputs: Sequence[str], producers: Mapping[str, Any]
) -> dict[str, OutputSelector]:
    """Graph output name → the selector of it in what the converted module returns.

    onnx2torch returns the output of each distinct producing node, in graph-output order:
    one node's output as it is, several nodes' outputs as a list; a node with several
    outputs gives a tuple.
    """
    nodes: list[str] = []
    for name in graph_outputs:
        node = producers[name]
        if node.unique_name not in nodes:
            nodes.append(node.unique_name)
    selectors: dict[str, OutputSelector] = {}
    for name in graph_outputs:
        node = producers[name]
        path = [] if len(nodes) == 1 else [nodes.index(node.unique_name)]
        if len(node.output_values) > 1:
            path.append(list(node.output_values).index(name))
        if not path:
            selectors[name] = None
        else:
            selectors[name] = path[0] if len(path) == 1 else f"{path[0]}.{path[1]}"
    return selectors


def _initializer_identities_folded(proto: Any) -> Any:
    """``proto`` with every ``Identity`` node that copies an initializer replaced by a copy
    of that initializer under the node's output name.

    ``torch.onnx.export`` stores equal weights once and hands them on through ``Identity``
    nodes (the folded BatchNorm of an untrained network, tied weights); onnx2torch wants a
    ``Conv``'s weights and bias as initializers and fails on those graphs otherwise.
    """
    import onnx

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {value.name for value in graph.output}
    kept = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and len(node.input) == 1
            and node.input[0] in initializers
            and node.output[0] not in graph_outputs
        ):
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    return proto


def _dims(value_info: Any) -> list[int | None]:
    """The dimensions of a graph input; ``None`` where symbolic or unknown."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the adapter ----------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Whether two model outputs (tensors, or lists/tuples of them) agree to float tolerance."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def _rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a tensor, or of each tensor in a dict, list or tuple."""
    if isinstance(value, torch.Tensor):
        return value[start:stop]
    if isinstance(value, dict):
        return {key: _rows(v, start, stop) for key, v in value.items()}
    return type(value)(_rows(v, start, stop) for v in value)


def _cat(parts: Sequence[Any]) -> Any:
    """The inverse of :func:`_rows`: the parts' rows joined, structure kept."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts))
    if isinstance(first, dict):
        return {key: _cat([part[key] for part in parts]) for key in first}
    return type(first)(_cat([part[i] for part in parts]) for i in range(len(first)))


class OnnxModel(TorchModel):
    """Adapter for an ONNX model converted by onnx2torch; build it with :func:`load_onnx`.

    Layers are the ONNX node names (see the module docstring); aliases are translated to
    them. ``model.output`` may be an index in the graph's output list or an output name.

    Attributes:
        path: the ``.onnx`` file.
        onnx_layers: every layer with its node, op type and outputs, in graph order.
        output_names: the graph's output tensor names.
        input_shape: the shape of one example the graph declares, e.g. ``(3, 32, 32)``
            (``None`` when a dimension is symbolic).
        input_size: ``(height, width)`` of a declared image input, else ``None``.
        fixed_batch: the batch size every forward pass uses (``None``: any batch size).
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[OnnxLayer],
        *,
        path: Path,
        output_names: Sequence[str],
        output_selectors: Mapping[str, OutputSelector],
        input_shape: tuple[int, ...] | None = None,
        input_dtype: torch.dtype = torch.float32,
        fixed_batch: int | None = None,
        fingerprint: str,
        logits_layer: str | None = None,
        output: OutputSelector = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.path = Path(path)
        self.onnx_layers = tuple(layers)
        self._listed = [layer.name for layer in self.onnx_layers]
        self._aliases = _aliases(self.onnx_layers)
        self.output_names = tuple(output_names)
        self._output_selectors = dict(output_selectors)
        self.input_shape = input_shape
        self.input_size = self._image_size(input_shape)
        self.input_dtype = input_dtype
        self.fixed_batch = fixed_batch
        self._fingerprint = fingerprint
        self._chose_output = output is not None
        super().__init__(
            module,
            logits_layer=self.canonical(logits_layer) if logits_layer else None,
            output=self._selector_for(output),
            device=device,
        )
        children = dict(module.named_children())
        by_layer = {layer.name: children[layer.module] for layer in self.onnx_layers}
        self._modules = {
            **by_layer,
            **{alias: by_layer[name] for alias, name in self._aliases.items()},
        }

    @staticmethod
    def _image_size(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
        if shape is None or len(shape) != 3:
            return None
        return (shape[1], shape[2]) if shape[0] <= 4 else None

    def canonical(self, layer: str) -> str:
        """The listed name of ``layer`` (itself, or the layer an alias stands for)."""
        return self._aliases.get(layer, layer)

    def _selector_for(self, output: OutputSelector) -> OutputSelector:
        names = self.output_names
        listed = ", ".join(f"{i} {name!r}" for i, name in enumerate(names))
        if output is None:
            return None
        if isinstance(output, int) and -len(names) <= output < len(names):
            return self._output_selectors[names[output]]
        if isinstance(output, str) and output in self._output_selectors:
            return self._output_selectors[output]
        raise ModelError(
            f"model.output {output!r} is not an output of {self.path.name}: it has "
            f"{len(names)} output(s): {listed} (give an index or a name)"
        )

    # -- ModelAdapter -----------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return list(self._listed)

    def check_layers(self, layers: Sequence[str]) -> None:
        super().check_layers([self.canonical(layer) for layer in layers])

    def layer_kinds(self) -> dict[str, str]:
        return {layer.name: layer.op_type for layer in self.onnx_layers}

    def capture_what_runs(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        n, batch = len(x), self.fixed_batch
        if batch is None or n >= batch:
            return super().capture_what_runs(x, layers)
        captured = super().capture_what_runs(self._pad(x), layers)
        return {name: value[:n] for name, value in captured.items()}

    def fingerprint(self) -> str:
        return self._fingerprint

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, dtype=self.input_dtype, non_blocking=True)

    def _logits_of(self, output: Any, captured: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.logits_layer is None and not self._chose_output and len(self.output_names) > 1:
            listed = ", ".join(f"{i} {name!r}" for i, name in enumerate(self.output_names))
            raise ModelError(
                f"{self.path.name} has {len(self.output_names)} outputs ({listed}): say which "
                "holds the logits with model.output (its index or name)"
            )
        return super()._logits_of(output, captured)

    def run(
        self, x: torch.Tensor, layers: Sequence[str], *, need_output: bool
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        n, batch = len(x), self.fixed_batch
        if batch is None or n == batch:
            return super().run(x, layers, need_output=need_output)
        if n > batch or torch.is_grad_enabled():
            raise ModelError(
                f"{self.path.name} takes batches of exactly {batch} examples; "
                "use activations(), gradients() or logits(), which split the inputs"
            )
        output, captured = super().run(self._pad(x), layers, need_output=need_output)
        return (
            _rows(output, 0, n) if output is not None else None,
            {name: value[:n] for name, value in captured.items()},
        )

    # -- inputs in batches of the fixed size ------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        assert self.fixed_batch is not None
        missing = self.fixed_batch - len(x)
        return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])]) if missing > 0 else x

    def _batched(self, x: torch.Tensor, compute: Callable[[torch.Tensor], Any]) -> Any:
        """``compute`` on ``x`` in chunks of the fixed batch size, rows joined again."""
        batch = self.fixed_batch
        if batch is None or len(x) == batch:
            return compute(x)
        parts = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            parts.append(_rows(compute(self._pad(chunk)), 0, len(chunk)))
        return _cat(parts)

    def activations(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._batched(x, lambda chunk: super(OnnxModel, self).activations(chunk, layers))

    def gradients(
        self,
        x: torch.Tensor,
        class_index: int,
        layers: Sequence[str],
        objective: str = "logit",
    ) -> dict[str, torch.Tensor]:
        return self._batched(
            x,
            lambda chunk: super(OnnxModel, self).gradients(chunk, class_index, layers, objective),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(x, lambda chunk: super(OnnxModel, self).logits(chunk))


def _batches_differ(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether ``module`` fails on, or gives other numbers for, 2 examples run together than
    for the same examples run one at a time. ``shape``: one example's, e.g. ``(3, 32, 32)``."""
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(dtype)
    try:
        with torch.inference_mode():
            together = module(x)
            apart = _cat([module(x[:1]), module(x[1:])])
    except Exception:
        return True
    return not _same(together, apart)


# -- loading --------------------------------------------------------------------------------
def load_onnx(
    path: Path,
    *,
    logits_layer: str | None = None,
    output: OutputSelector = None,
    device: str | torch.device = "auto",
) -> OnnxModel:
    """Load an ``.onnx`` file as an adapter whose layers are the ONNX node names.

    Args:
        path: the ONNX file (external data files are read from its folder).
        logits_layer: the node whose output is the logits (for a model ending in softmax).
        output: which graph output holds the logits: index or output name.
        device: where the converted module runs.

    Raises:
        ModelError: onnx/onnx2torch missing (names ``pip install 'tcavkit[onnx]'``), the file
            is missing or not ONNX, the graph cannot be converted or has several inputs.
        LayerError: ``logits_layer`` is not a node of the graph.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist (model.path)")
    onnx2torch = import_onnx2torch()
    import onnx
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX file: {one_line(exc)}") from exc
    proto = _initializer_identities_folded(proto)
    ops = {node.op_type for node in proto.graph.node}
    if _torchvision_problem is not None and ops & TORCHVISION_OPS:
        raise ModelError(
            f"{path} uses {', '.join(sorted(ops & TORCHVISION_OPS))}, which onnx2torch runs "
            f"with torchvision, but torchvision {_torchvision_problem}: install the torchvision "
            f"release built for the installed torch {torch.__version__}"
        )
    # Shapes only help to skip non-float nodes; onnx2torch infers them again when converting.
    with contextlib.suppress(Exception):
        proto = safe_shape_inference(proto)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(repr(value.name) for value in inputs) or "none"
        raise ModelError(
            f"{path} has {len(inputs)} inputs ({names}); tcavkit feeds the model one input "
            "tensor: export a model that takes one"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch.convert(proto)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"onnx2torch cannot convert {path}: {type(exc).__name__}: {one_line(exc)} (export "
            "the model again with an older opset, e.g. torch.onnx.export(..., "
            "opset_version=17), or simplify it with onnxsim)"
        ) from exc

    graph = OnnxGraph(proto.graph)
    elem_types = {name: info.type.tensor_type.elem_type for name, info in graph.value_info.items()}
    children = dict(module.named_children())
    nodes = {name: node for name, node in graph.nodes.items() if name in children}
    layers = _layers_of(nodes, elem_types)
    producers = {out: node for node in graph.nodes.values() for out in node.output_values}
    outputs = [value.name for value in proto.graph.output]
    missing = [name for name in outputs if name not in producers]
    if missing:
        raise ModelError(
            f"{path}: graph output(s) {missing} are not computed by a node (an input or a "
            "constant passed through); tcavkit needs outputs computed from the input"
        )

    dims = _dims(inputs[0])
    shape = tuple(dims[1:]) if dims and all(d is not None for d in dims[1:]) else None
    dtype = _FLOAT_TYPES.get(inputs[0].type.tensor_type.elem_type, torch.float32)
    # A declared batch size is kept unless the graph is seen to work with others: a batch
    # size of 1 with a known example shape is tried with 2 examples.
    fixed = dims[0] if dims else None
    if fixed == 1 and shape is not None and not _batches_differ(module.eval(), shape, dtype):
        fixed = None

    digest = hashlib.sha256(b"onnx\0")
    digest.update(getattr(onnx2torch, "__version__", "").encode())
    digest.update(_file_digest(path).encode())
    digest.update(module_fingerprint(module).encode())  # weights in external data files too
    return OnnxModel(
        module,
        layers,
        path=path,
        output_names=outputs,
        output_selectors=_output_selectors(outputs, producers),
        input_shape=shape,
        input_dtype=dtype,
        fixed_batch=fixed,
        fingerprint=digest.hexdigest(),
        logits_layer=logits_layer,
        output=output,
        device=device,
    )


__all__ = ["OnnxLayer", "OnnxModel", "import_onnx2torch", "load_onnx"]
