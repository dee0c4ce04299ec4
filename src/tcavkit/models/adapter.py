"""Model adapters: named layers, activations and class-logit gradients in one pass.

An adapter runs a model on a batch and hands back the outputs of the requested layers.
:meth:`ModelAdapter.activations` captures every requested layer in one forward pass under
inference mode; :meth:`ModelAdapter.gradients` gets the gradient of one class logit (or of
its log-softmax) with respect to every requested layer from one backward pass.

A batch is a tensor ``(n, ...)`` or a mapping of tensors ``(n, ...)`` passed to the model as
keyword arguments (``input_ids``, ``attention_mask``, …). A layer whose output is a sequence
``(n, T, H)`` is pooled to ``(n, H)`` as its ``pooling`` says (:mod:`tcavkit.models.pooling`),
masked by the batch's ``attention_mask``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

from tcavkit.errors import ConfigError, LayerError, ModelError
from tcavkit.models.pooling import pool, pool_gradient
from tcavkit.options import GRADIENTS, POOLINGS, check_choice

if TYPE_CHECKING:  # torch is imported where a model is made or run
    import torch
    from torch import nn

OutputSelector = int | str | None
ModelInput = Union["torch.Tensor", Mapping[str, "torch.Tensor"]]
"""One batch: a tensor ``(n, ...)``, or tensors ``(n, ...)`` by keyword argument name."""
Pooling = str | Mapping[str, str]
"""One pooling for every layer, or layer name → pooling (unnamed layers: ``none``)."""


def input_rows(x: ModelInput) -> int:
    """The number of examples ``n`` in a batch."""
    if isinstance(x, Mapping):
        if not x:
            raise ModelError("the model inputs are an empty mapping: give at least one tensor")
        return len(next(iter(x.values())))
    return len(x)


def input_mask(x: ModelInput) -> torch.Tensor | None:
    """The batch's ``attention_mask`` ``(n, T)``, or ``None`` (no padding)."""
    return x.get("attention_mask") if isinstance(x, Mapping) else None


def _tracked(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, continued)`` for a layer output while gradients are tracked.

    When the output is not already part of the graph (integer token inputs, frozen
    weights), it is replaced by a detached leaf that requires grad: its gradient is exactly
    d objective / d activation, and no input gradient is needed. The model continues with a
    copy, so that a later in-place operation cannot alter what is kept.
    """
    if tensor.requires_grad or not tensor.is_floating_point():
        return tensor, tensor.clone()
    leaf = tensor.detach().requires_grad_(True)
    return leaf, leaf.clone()


DEVICE_CHOICES = "'auto' (a GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch.

    Raises:
        ModelError: naming ``device`` and the choices: a device torch does not know, or one
            this machine does not have (``cuda`` on a torch built without CUDA, ``cuda:3``
            with two GPUs, ``mps`` off a Mac).
    """
    import torch

    if isinstance(device, torch.device):
        return device
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"device {device!r} is unknown: use {DEVICE_CHOICES}") from exc
    missing = ""
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            missing = (
                "this torch is built without CUDA"
                if torch.version.cuda is None
                else "torch sees no CUDA GPU here"
            )
        elif resolved.index is not None and resolved.index >= count:
            missing = f"torch sees {count} CUDA GPU(s) here, numbered from 0"
    elif resolved.type == "mps" and not has_mps:
        missing = "Apple's MPS is not available here"
    if missing:
        raise ModelError(f"device {device!r} is not available: {missing}; use {DEVICE_CHOICES}")
    return resolved


def _describe(value: Any) -> str:
    """``tensor (2, 3)`` for a tensor, the type name otherwise."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    return type(value).__name__


def output_parts(output: Any) -> dict[int | str, Any] | None:
    """The parts of a structured model output, by the selector that picks each one.

    A mapping (a dict, HuggingFace's ``ModelOutput``) by key; a namedtuple by field name;
    a tuple or list by index; a dataclass by field name; any other object by the names of
    its tensor attributes. ``None`` for a tensor or an object without tensor attributes.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return None
    if isinstance(output, Mapping):
        return dict(output.items())
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # namedtuple
        return dict(zip(output._fields, output, strict=True))
    if isinstance(output, (tuple, list)):
        return dict(enumerate(output))
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
    attributes = getattr(output, "__dict__", None)
    if isinstance(attributes, dict):
        found = {k: v for k, v in attributes.items() if isinstance(v, torch.Tensor)}
        return dict(found) or None
    return None


def _choices(output: Any, parts: dict[int | str, Any]) -> str:
    """``keys 'a': tensor (2, 3), 'b': …`` for the error messages."""
    if isinstance(output, Mapping):
        kind = "keys"
    elif isinstance(output, (tuple, list)) and not hasattr(output, "_fields"):
        kind = "indices"
    elif isinstance(output, tuple) or dataclasses.is_dataclass(output):
        kind = "fields"
    else:
        kind = "attributes"
    shown = [f"{key!r}: {_describe(value)}" for key, value in list(parts.items())[:12]]
    return f"{kind} " + ", ".join(shown) + (" …" if len(parts) > 12 else "")


def _pick(output: Any, part: int | str) -> tuple[bool, Any]:
    """``(found, value)``: one step of a selector into ``output``."""
    if isinstance(output, (tuple, list)):
        index = int(part) if isinstance(part, str) and part.lstrip("-").isdigit() else part
        if isinstance(index, int):
            return (True, output[index]) if -len(output) <= index < len(output) else (False, None)
    parts = output_parts(output)
    if parts is not None and part in parts:
        return True, parts[part]
    if isinstance(part, int) and hasattr(output, "__getitem__"):
        try:  # e.g. HuggingFace's ModelOutput: output[0] is the first field that is set
            return True, output[part]
        except (KeyError, IndexError, TypeError):
            pass
    return False, None


def select_output(output: Any, selector: OutputSelector) -> torch.Tensor:
    """Pick the logits out of whatever the model returns.

    Args:
        output: a tensor, or a tuple/list/namedtuple/dict/dataclass/object holding tensors
            (HuggingFace's ``ModelOutput`` is a dict with attributes: ``"logits"`` works).
        selector: ``None`` (the output must be a tensor); an index into a tuple or list
            (negative counts from the end) or into a stacked ``(heads, n, classes)`` tensor;
            a key, field or attribute name. A dotted selector such as ``"heads.0"`` walks
            into nested outputs when no part has that exact name.

    Raises:
        ModelError: the selector is missing for a structured output, names no part of it,
            or is set for a model that returns one ``(n, classes)`` tensor; the message
            lists the parts there are.
    """
    import torch

    if selector is None:
        if isinstance(output, torch.Tensor):
            return output
        parts = output_parts(output)
        listed = f" with {_choices(output, parts)}" if parts else ""
        raise ModelError(
            f"the model returns a {type(output).__name__}{listed}, not a tensor: say which "
            "output holds the logits with model.output (an index such as 0, or a key such as "
            "'logits')"
        )
    if isinstance(output, torch.Tensor) and output.ndim <= 2:
        raise ModelError(
            f"model.output is {selector!r}, but the model returns one tensor "
            f"{tuple(output.shape)}: remove model.output"
        )
    found, picked = _pick(output, selector)
    if not found and isinstance(selector, str) and "." in selector:
        picked, found = output, True
        for step in selector.split("."):
            found, picked = _pick(picked, step)
            if not found:
                break
    if not found:
        parts = output_parts(output)
        listed = f"; available {_choices(output, parts)}" if parts else ""
        raise ModelError(
            f"model.output {selector!r} does not exist in the model's {type(output).__name__} "
            f"output{listed}"
        )
    if not isinstance(picked, torch.Tensor):
        parts = output_parts(picked)
        if parts:
            raise ModelError(
                f"model.output {selector!r} is a {type(picked).__name__} holding "
                f"{_choices(picked, parts)}, not a tensor: select the logits inside it with a "
                f"dotted selector such as '{selector}.{next(iter(parts))}'"
            )
        raise ModelError(f"model.output {selector!r} is a {type(picked).__name__}, not a tensor")
    return picked


def first_tensor(value: Any, layer: str) -> torch.Tensor:
    """What a forward hook at ``layer`` captured, as a tensor: the output itself, or
    the first element of a tuple or list output (the shape is the layer's).

    Raises:
        LayerError: the output is neither.
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise LayerError(
        f"layer {layer!r} returns a {type(value).__name__}, not a tensor: choose a layer whose "
        "output is a tensor (tcavkit layers MODEL lists them with shapes)"
    )


class StopForward(Exception):
    """Raised from a hook once every requested layer is captured: the rest of the forward
    pass is not needed (the adapter that runs the pass catches it)."""


class ModelAdapter(ABC):
    """A model with named layers.

    Attributes:
        device: where the model runs; inputs are moved there.
        logits_layer: the layer whose output is the logits (``None``: the model's output).
        output: which part of the model's output holds the logits (see :func:`select_output`).
        pooling: how sequence outputs ``(n, T, H)`` become ``(n, H)``: ``none`` (flatten),
            ``cls``, ``mean`` or ``last``, for every layer or by layer name.
    """

    input_gradient = True
    """Make floating-point inputs require grad in :meth:`gradients` (adapters whose
    :meth:`run` makes leaves of the captured outputs need not)."""

    def __init__(
        self,
        *,
        logits_layer: str | None = None,
        output: OutputSelector = None,
        device: str | torch.device = "auto",
        pooling: Pooling = "none",
    ) -> None:
        self.device = resolve_device(device)
        self.logits_layer = logits_layer
        self.output = output
        if logits_layer is not None:
            self.check_layers([logits_layer])
        self.pooling: dict[str, str] | str = "none"
        self.set_pooling(pooling)

    def set_pooling(self, pooling: Pooling) -> None:
        """Set how sequence outputs are pooled: one of ``none``, ``cls``, ``mean``, ``last``
        for every layer, or a mapping of layer names to them (other layers: ``none``).

        Raises:
            ConfigError: an unknown pooling; LayerError: an unknown layer name.
        """
        self.pooling = self._checked_pooling(pooling)

    def _checked_pooling(self, pooling: Pooling) -> dict[str, str] | str:
        if isinstance(pooling, str):
            check_choice(pooling, POOLINGS, "model.pooling")
            return pooling
        if not isinstance(pooling, Mapping):
            raise ConfigError(
                f"model.pooling must be one of {', '.join(POOLINGS)} or a mapping of layer "
                f"names to them, got {type(pooling).__name__}"
            )
        self.check_layers(list(pooling))
        for layer, how in pooling.items():
            check_choice(how, POOLINGS, f"model.pooling of layer {layer!r}")
        return dict(pooling)

    def pooling_of(self, layer: str) -> str:
        """The pooling of ``layer``'s output (``none``: flattened)."""
        if isinstance(self.pooling, str):
            return self.pooling
        return self.pooling.get(layer, "none")

    # -- what a concrete adapter provides -------------------------------------------------
    @abstractmethod
    def layer_names(self) -> list[str]:
        """Every layer that can be requested, in model order."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Hex digest of the model's structure and weights (a cache-key component)."""

    @abstractmethod
    def run(
        self, x: ModelInput, layers: Sequence[str], *, need_output: bool
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run the model on ``x`` capturing ``layers``.

        Captured tensors must stay valid for autograd: a later in-place operation of the
        model must not modify them. With ``need_output=False`` the adapter may stop the
        forward pass early and return ``None`` as the output.

        Returns:
            (model output, {layer: tensor ``(n, ...)``}).
        """

    # -- shared behaviour -----------------------------------------------------------------
    def layer_kinds(self) -> dict[str, str]:
        """Each layer's type (``Conv2d``, ``Dense``, ``Conv``, …) by name, for listings;
        layers of unknown type are left out."""
        return {}

    def capture_what_runs(self, x: ModelInput, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The outputs ``(n, ...)`` of those ``layers`` that run on ``x`` and output a
        tensor (for listing layers): one forward pass capturing all; when it fails (a layer
        that does not run, an output that is not a tensor), one pass per layer. Adapters that
        can capture leniently do it in one pass whatever the layers."""
        try:
            return self.run(x, layers, need_output=True)[1]
        except (LayerError, RuntimeError):
            captured: dict[str, torch.Tensor] = {}
            for name in layers:
                try:
                    captured.update(self.run(x, [name], need_output=True)[1])
                except (LayerError, RuntimeError):
                    continue
            return captured

    def check_layers(self, layers: Sequence[str]) -> None:
        """Raise :class:`LayerError` naming unknown layers and listing the valid ones."""
        valid = self.layer_names()
        valid_set = set(valid)
        for layer in layers:
            if layer not in valid_set:
                close = difflib.get_close_matches(layer, valid, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                shown = ", ".join(valid[:40]) + (" …" if len(valid) > 40 else "")
                raise LayerError(f"unknown layer {layer!r}{hint} Valid layers: {shown}")

    def _inputs(self, x: ModelInput) -> Any:
        if isinstance(x, Mapping):
            return {key: value.to(self.device, non_blocking=True) for key, value in x.items()}
        return x.to(self.device, non_blocking=True)

    def activations(self, x: ModelInput, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of all ``layers`` from one forward pass.

        Args:
            x: model inputs ``(n, ...)``, or a mapping of them (keyword arguments).

        Returns:
            {layer: float32 CPU tensor ``(n, d)``}, each layer pooled (see ``pooling``) or
            flattened per example.
        """
        import torch

        self.check_layers(layers)
        x = self._inputs(x)
        mask = input_mask(x)
        with torch.inference_mode():
            _, captured = self.run(x, layers, need_output=False)
            return {
                name: pool(captured[name], mask, self.pooling_of(name), name).float().cpu()
                for name in layers
            }

    def pooled_activations(
        self, x: torch.Tensor, layers: Sequence[str], *, channels_last: bool = False
    ) -> dict[str, torch.Tensor]:
        """Activations of all ``layers`` from one forward pass, each averaged over its
        spatial positions (the patches of concept discovery).

        Args:
            x: model inputs ``(n, ...)``.
            channels_last: the layers' outputs are ``(n, H, W, C)`` (else ``(n, C, H, W)``).

        Returns:
            {layer: float32 CPU tensor ``(n, C)``}.

        Raises:
            LayerError: a layer's output has no spatial structure (not 4-D).
        """
        import torch

        self.check_layers(layers)
        with torch.inference_mode():
            _, captured = self.run(self._inputs(x), layers, need_output=False)
            out = {}
            for name in layers:
                value = captured[name]
                if value.dim() != 4:
                    raise LayerError(
                        f"layer {name!r} has no spatial structure (its output is "
                        f"{tuple(value.shape)}, not (n, C, H, W)): concept discovery averages "
                        "a layer's activations over positions; choose a convolutional layer "
                        "(tcavkit layers MODEL shows each layer's output shape)"
                    )
                dims = (1, 2) if channels_last else (2, 3)
                out[name] = value.float().mean(dim=dims).cpu()
            return out

    def logits(self, x: ModelInput) -> torch.Tensor:
        """The logits ``(n, n_classes)`` for inputs ``x`` ``(n, ...)`` (or a mapping)."""
        import torch

        with torch.inference_mode():
            return self._logits_of(*self._forward_for_logits(self._inputs(x), [])).float().cpu()

    def _forward_for_logits(
        self, x: ModelInput, layers: Sequence[str]
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        wanted = list(dict.fromkeys([*layers, *([self.logits_layer] if self.logits_layer else [])]))
        return self.run(x, wanted, need_output=self.logits_layer is None)

    def _logits_of(self, output: Any, captured: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.logits_layer is not None:
            logits = first_tensor(captured[self.logits_layer], self.logits_layer)
        else:
            logits = select_output(output, self.output)
        if logits.ndim != 2:
            raise ModelError(
                f"the logits have shape {tuple(logits.shape)}; expected (batch, classes). "
                "Name the layer that outputs the class logits with model.logits"
            )
        return logits

    def gradients(
        self,
        x: ModelInput,
        class_index: int,
        layers: Sequence[str],
        objective: str = "logit",
    ) -> dict[str, torch.Tensor]:
        """Gradients of class ``class_index``'s logit (or log-softmax) w.r.t. all ``layers``,
        one backward pass.

        Args:
            x: model inputs ``(n, ...)``, or a mapping of them (integer token ids work: no
                input gradient is taken).
            class_index: the class k whose output is differentiated.
            objective: ``"logit"``: the logit ``z_k`` (TCAV's definition); ``"log_softmax"``:
                ``log softmax(z)_k = z_k - logsumexp(z)``, minus the cross-entropy loss of
                class k (tensorflow/tcav's default), whose gradient is the logit's minus
                the softmax-weighted mean of every class's logit gradient.

        Returns:
            {layer: float32 CPU tensor ``(n, d)``}; row i is d objective_k(x_i) / d f_l(x_i),
            with f_l the pooled activation (see :mod:`tcavkit.models.pooling`).

        Raises:
            ConfigError: ``objective`` is not one of :data:`~tcavkit.options.GRADIENTS`.
        """
        import torch

        check_choice(objective, GRADIENTS, "gradient")
        self.check_layers(layers)
        x = self._inputs(x)
        mask = input_mask(x)
        if self.input_gradient and isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            output, captured = self._forward_for_logits(x, layers)
            logits = self._logits_of(output, captured)
            n_classes = logits.shape[1]
            if not 0 <= class_index < n_classes:
                raise ModelError(
                    f"class index {class_index} is out of range: the model has {n_classes} "
                    "outputs; check model.labels"
                )
            if objective == "log_softmax":
                logits = torch.log_softmax(logits, dim=1)
            # Examples are independent, so the gradient of the sum is each example's gradient.
            grads = torch.autograd.grad(
                logits[:, class_index].sum(), [captured[name] for name in layers], allow_unused=True
            )
        result = {}
        for name, grad in zip(layers, grads, strict=True):
            if grad is None:
                raise LayerError(
                    f"the logits do not depend on layer {name!r}: choose a layer before the "
                    "logits (or check model.logits)"
                )
            result[name] = pool_gradient(grad, mask, self.pooling_of(name), name).float().cpu()
        return result


class TorchModel(ModelAdapter):
    """Adapter for any ``torch.nn.Module``; layers are named as in ``named_modules()``.

    The module is put in eval mode and moved to ``device``. Forward hooks capture the layers.

    Args:
        memory_format: how image batches ``(n, C, H, W)`` are laid out in memory (values
            and layer outputs are the same either way). ``"auto"``: channels-last for a
            network with 2-D convolutions on the CPU, where oneDNN's convolutions and
            pooling run 1.2-1.8 times faster on it (``bench/``); as given elsewhere.
        pooling: see :class:`ModelAdapter`.

    A mapping batch is passed as keyword arguments (``module(**x)``). While gradients are
    tracked, each captured output that is not already part of the autograd graph becomes a
    leaf, so integer inputs and frozen weights need no input gradient.
    """

    input_gradient = False

    def __init__(
        self,
        module: nn.Module,
        *,
        logits_layer: str | None = None,
        output: OutputSelector = None,
        device: str | torch.device = "auto",
        memory_format: Literal["auto", "channels_last", "contiguous"] = "auto",
        pooling: Pooling = "none",
    ) -> None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self._modules = {name: mod for name, mod in module.named_modules() if name}
        super().__init__(logits_layer=logits_layer, output=output, device=device, pooling=pooling)
        self.module.eval().to(self.device)
        if memory_format not in ("auto", "channels_last", "contiguous"):
            raise ModelError(
                f"memory_format {memory_format!r}: choose 'auto', 'channels_last' or 'contiguous'"
            )
        if memory_format == "auto":
            convolutional = any(isinstance(m, torch.nn.Conv2d) for m in self._modules.values())
            self.channels_last = convolutional and self.device.type == "cpu"
        else:
            self.channels_last = memory_format == "channels_last"

    def _inputs(self, x: ModelInput) -> Any:
        import torch

        x = super()._inputs(x)
        if self.channels_last and isinstance(x, torch.Tensor) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def layer_names(self) -> list[str]:
        return list(self._modules)

    def layer_kinds(self) -> dict[str, str]:
        return {name: module_kind(module) for name, module in self._modules.items()}

    def fingerprint(self) -> str:
        return module_fingerprint(self.module)

    def capture_what_runs(self, x: ModelInput, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass: a module that is not called (a container such as an
        ``nn.ModuleList`` the forward pass iterates over) or whose output is not a tensor is
        left out; a model that fails on ``x`` gives the layers that ran before it failed."""
        captured: dict[str, torch.Tensor] = {}
        with contextlib.suppress(RuntimeError):
            TorchModel.run(self, x, layers, need_output=True, strict=False, into=captured)
        return captured

    def run(
        self,
        x: ModelInput,
        layers: Sequence[str],
        *,
        need_output: bool,
        strict: bool = True,
        into: dict[str, torch.Tensor] | None = None,
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """See :meth:`ModelAdapter.run`. With ``strict=False`` a layer that does not run or
        outputs no tensor is left out instead of raising :class:`LayerError`; ``into``
        receives each output as it is captured (so that it is kept if the model fails)."""
        import torch

        captured: dict[str, torch.Tensor] = {} if into is None else into
        wanted = set(layers)
        tracking = torch.is_grad_enabled()

        def hook_for(name: str) -> Callable[..., Any]:
            def hook(_module: nn.Module, _inputs: Any, out: Any) -> Any:
                if name in captured:  # a module called twice: keep its first output
                    return None
                if not strict and not _holds_tensor(out):
                    return None
                tensor = first_tensor(out, name)
                replaced = None
                if tracking:
                    captured[name], replaced = _tracked(tensor)
                else:
                    # A copy, so that later in-place ops cannot alter what we keep (in the
                    # standard layout: flattening it later then copies nothing).
                    captured[name] = tensor.detach().clone(memory_format=torch.contiguous_format)
                if not need_output and wanted.issubset(captured):
                    raise StopForward
                if replaced is None:
                    return None
                return replaced if isinstance(out, torch.Tensor) else (replaced, *out[1:])

            return hook

        handles = [self._modules[name].register_forward_hook(hook_for(name)) for name in wanted]
        output = None
        try:
            output = self.module(**x) if isinstance(x, Mapping) else self.module(x)
        except StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = wanted.difference(captured)
        if missing and strict:
            raise LayerError(
                f"layer(s) {sorted(missing)} did not run in the model's forward pass: "
                "choose layers that the forward pass calls"
            )
        return output, captured


def _holds_tensor(value: Any) -> bool:
    """Whether :func:`first_tensor` accepts a hook's captured ``value``."""
    import torch

    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return isinstance(value, torch.Tensor)


def module_kind(module: nn.Module) -> str:
    """A module's type name: its class, or a scripted module's original class."""
    return str(getattr(module, "original_name", None) or type(module).__name__)


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 of the module's class, printed structure and every parameter and buffer."""
    import torch

    digest = hashlib.sha256()
    digest.update(type(module).__qualname__.encode())
    digest.update(repr(module).encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
