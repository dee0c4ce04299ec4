"""Optional frameworks (Keras, ONNX, …): imported on demand, with an error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from tcavkit.errors import ModelError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`ModelError` naming the pip extra that provides it.

    Args:
        module: the importable name, e.g. ``"onnx2torch"``.
        extra: the tcavkit extra that installs it, e.g. ``"onnx"``.
        purpose: what needs it, e.g. ``"loading .onnx models"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(
            f"{purpose} needs the Python package {module!r}, which is not installed: "
            f"pip install 'tcavkit[{extra}]' ({exc})"
        ) from exc
