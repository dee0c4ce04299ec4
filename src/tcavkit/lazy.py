"""Lazy package namespaces (PEP 562): public names imported on first access.

``import tcavkit`` then costs almost nothing, so the command line starts at once; each name
is imported from its module the first time it is used and kept in the package.
:func:`is_tensor` tells a torch tensor apart without importing torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_namespace(
    package: str, names: Mapping[str, str], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``names`` maps each lazy public
    name to the module it is imported from; ``public`` is the package's ``__all__``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(import_module(package))) | set(public))

    return __getattr__, __dir__


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor``, without importing torch: a tensor can exist
    only once torch is imported, so with torch not yet imported the answer is ``False``."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
