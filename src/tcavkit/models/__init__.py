"""Model adapters: layers, activations and gradients of any supported model."""

from tcavkit.models.adapter import (
    ModelAdapter,
    TorchModel,
    module_fingerprint,
    resolve_device,
    select_output,
)

__all__ = ["ModelAdapter", "TorchModel", "module_fingerprint", "resolve_device", "select_output"]
