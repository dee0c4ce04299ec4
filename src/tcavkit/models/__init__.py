"""Model adapters: layers, activations and gradients of any supported model.

The names are imported on first use (PEP 562): importing a sub-module such as
:mod:`tcavkit.models.inspect` does not load the adapter until it is needed.
"""

from typing import TYPE_CHECKING

from tcavkit.lazy import lazy_namespace

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


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, __all__)
