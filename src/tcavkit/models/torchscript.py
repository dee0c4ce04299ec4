"""Adapter for TorchScript models whose top module is an ``nn.Sequential``.

Scripted modules do not run forward hooks, so :class:`~tcavkit.models.adapter.TorchModel`
cannot capture their layers. A scripted ``nn.Sequential`` however only calls its children
in order, so this adapter calls them itself and keeps the outputs it needs. Children that
are themselves scripted ``nn.Sequential`` modules are walked the same way, which makes
nested names such as ``2.0`` or ``features.3`` available. The inner modules of any other
child (a scripted ``Bottleneck``, say) run inside compiled code and cannot be captured;
the child itself can.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tcavkit.errors import LayerError, ModelError
from tcavkit.models.adapter import (
    ModelAdapter,
    OutputSelector,
    StopForward,
    first_tensor,
    module_fingerprint,
    module_kind,
)

SUPPORTED_STRUCTURES = (
    "TorchScript models are supported when the top module is an nn.Sequential (nested "
    "Sequentials allowed); export your model with torch.save(model) and --trust-model-file, "
    "or use model.factory + weights"
)

_SEQUENTIAL_PREFIX = "__torch__.torch.nn.modules.container."


def is_scripted_sequential(module: Any) -> bool:
    """Whether ``module`` is a scripted or traced ``torch.nn.Sequential`` (not a look-alike).

    A user class that happens to be called ``Sequential`` has its own ``forward`` and is
    not accepted: only ``torch.nn.Sequential`` is known to call its children in order.
    """
    if not isinstance(module, torch.jit.ScriptModule):
        return False
    if getattr(module, "original_name", None) != "Sequential":
        return False
    try:
        qualified = module._c._type().qualified_name()
    except Exception:  # pragma: no cover - private type API unavailable: trust original_name
        return True
    return qualified.startswith(_SEQUENTIAL_PREFIX) and qualified.endswith(".Sequential")


@dataclass(frozen=True)
class _Step:
    """One child of a scripted Sequential; ``steps`` is set when it is a Sequential too."""

    name: str
    module: Any
    steps: tuple[_Step, ...] | None
    names: frozenset[str]  # this step's name and every capturable name below it


def _plan(module: Any, prefix: str = "") -> tuple[_Step, ...]:
    steps = []
    for child_name, child in module.named_children():
        name = f"{prefix}{child_name}"
        if is_scripted_sequential(child):
            sub = _plan(child, f"{name}.")
            names = frozenset({name}).union(*(step.names for step in sub))
            steps.append(_Step(name, child, sub, names))
        else:
            steps.append(_Step(name, child, None, frozenset({name})))
    return tuple(steps)


def _walk(steps: Sequence[_Step]) -> list[str]:
    names: list[str] = []
    for step in steps:
        names.append(step.name)
        if step.steps is not None:
            names.extend(_walk(step.steps))
    return names


def script_fingerprint(module: torch.jit.ScriptModule) -> str:
    """SHA-256 of every submodule's compiled code and constants, and every state_dict tensor.

    Structure and weights both count; the numbers TorchScript adds to mangled type names do
    not, so the same model scripted in two sessions keeps one fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(module_fingerprint(module).encode())
    for name, sub in module.named_modules():
        digest.update(f"\0{name}:{getattr(sub, 'original_name', '')}\0".encode())
        try:
            code, constants = sub.code_with_constants
        except (RuntimeError, AttributeError):  # no forward (e.g. a ModuleList)
            continue
        digest.update(code.encode())
        for key, value in sorted(constants.const_mapping.items()):
            digest.update(f"{key}=".encode())
            if isinstance(value, torch.Tensor):
                tensor = value.detach().cpu().contiguous()
                digest.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()


class ScriptedSequentialModel(ModelAdapter):
    """Adapter for a ``torch.jit.ScriptModule`` whose top module is an ``nn.Sequential``.

    Layers are named as in ``named_modules()``: every module at a Sequential level, nested
    Sequentials included (``2``, ``2.0``, ``features.3``). The module is put in eval mode
    and moved to ``device``.

    A scripted module of another kind is accepted only for its output (``logits()``):
    asking for any layer raises :class:`LayerError` saying which structures are supported.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        logits_layer: str | None = None,
        output: OutputSelector = None,
        device: str | torch.device = "auto",
    ) -> None:
        if not isinstance(module, torch.jit.ScriptModule):
            raise ModelError(
                f"expected a TorchScript module (torch.jit.ScriptModule), got "
                f"{type(module).__name__}"
            )
        self.module = module
        self.sequential = is_scripted_sequential(module)
        self._steps = _plan(module) if self.sequential else ()
        self._names = _walk(self._steps)
        super().__init__(logits_layer=logits_layer, output=output, device=device)
        self.module.eval().to(self.device)

    # -- ModelAdapter -----------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return list(self._names)

    def layer_kinds(self) -> dict[str, str]:
        modules = dict(self.module.named_modules())
        return {name: module_kind(modules[name]) for name in self._names if name in modules}

    def fingerprint(self) -> str:
        return script_fingerprint(self.module)

    def check_layers(self, layers: Sequence[str]) -> None:
        if not layers:
            return
        if not self.sequential:
            kind = getattr(self.module, "original_name", type(self.module).__name__)
            raise LayerError(
                f"cannot capture layer {layers[0]!r}: the TorchScript model's top module is "
                f"a {kind}, and scripted modules run no forward hooks. {SUPPORTED_STRUCTURES}"
            )
        known = set(self._names)
        all_modules = {name for name, _ in self.module.named_modules() if name}
        for layer in layers:
            if layer in known or layer not in all_modules:
                continue
            parent = max((n for n in known if layer.startswith(f"{n}.")), key=len, default=None)
            inside = f" it runs inside {parent!r}, which is not an nn.Sequential;" if parent else ""
            raise LayerError(
                f"layer {layer!r} of the TorchScript model cannot be captured:{inside} only "
                f"modules at an nn.Sequential level can (choose {parent or 'a listed layer'!r} "
                f"instead). {SUPPORTED_STRUCTURES}"
            )
        super().check_layers(layers)

    def run(
        self, x: torch.Tensor, layers: Sequence[str], *, need_output: bool
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        wanted = set(layers)
        captured: dict[str, torch.Tensor] = {}
        if not self.sequential:
            self.check_layers(list(layers))
            return self.module(x), captured
        tracking = torch.is_grad_enabled()

        def keep(name: str, value: Any) -> Any:
            if name in captured:  # the same module twice in a Sequential: keep the first
                return value
            tensor = first_tensor(value, name)
            # Hand the model a copy so that later in-place ops cannot alter what we keep.
            captured[name] = tensor if tracking else tensor.detach().clone()
            if not need_output and wanted.issubset(captured):
                raise StopForward
            if not tracking:
                return value
            replaced = tensor.clone()
            if isinstance(value, torch.Tensor):
                return replaced
            if isinstance(value, list):
                return [replaced, *value[1:]]
            return (replaced, *value[1:])

        def forward(steps: Sequence[_Step], value: Any) -> Any:
            for step in steps:
                if step.steps is not None and not wanted.isdisjoint(step.names - {step.name}):
                    value = forward(step.steps, value)
                else:
                    value = step.module(value)
                if step.name in wanted:
                    value = keep(step.name, value)
            return value

        output = None
        with contextlib.suppress(StopForward):
            output = forward(self._steps, x)
        missing = wanted.difference(captured)
        if missing:
            raise LayerError(
                f"layer(s) {sorted(missing)} did not run in the model's forward pass: "
                "choose layers that the forward pass calls"
            )
        return output, captured
