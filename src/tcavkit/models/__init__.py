"""Model adapters: layers, activations and gradients of any supported model.

The names are imported on first use (PEP 562): importing a sub-module such as
:mod:`tcavkit.models.inspect` does not load the adapter until it is needed.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING
from typing import Any as _Any

if TYPE_CHECKING:
    from tcavkit.models.adapter import (
        ModelAdapter,
        TorchModel,
        module_fingerprint,
        resolve_device,
        select_output,
    )

_LAZY: dict[str, str] = {
    "ModelAdapter": "tcavkit.models.adapter",
    "TorchModel": "tcavkit.models.adapter",
    "module_fingerprint": "tcavkit.models.adapter",
    "resolve_device": "tcavkit.models.adapter",
    "select_output": "tcavkit.models.adapter",
}
"""Public name -> the module it is imported from on first access."""

__all__ = ["ModelAdapter", "TorchModel", "module_fingerprint", "resolve_device", "select_output"]


def __getattr__(name: str) -> _Any:
    """Import a public name on first access and keep it in the module namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
