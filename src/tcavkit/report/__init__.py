"""Plots and the HTML report, from the result tables alone (nothing is recomputed).

The names are imported on first use (PEP 562): importing a sub-module such as
:mod:`tcavkit.report.common` does not load matplotlib.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING
from typing import Any as _Any

from tcavkit.tables import LOW_CAV_ACCURACY, MIN_RANDOM_RUNS

if TYPE_CHECKING:
    from tcavkit.report.build import build_report
    from tcavkit.report.html import render_html
    from tcavkit.report.plots import plot_all

_LAZY: dict[str, str] = {
    "build_report": "tcavkit.report.build",
    "render_html": "tcavkit.report.html",
    "plot_all": "tcavkit.report.plots",
}
"""Public name -> the module it is imported from on first access."""

__all__ = ["LOW_CAV_ACCURACY", "MIN_RANDOM_RUNS", "build_report", "plot_all", "render_html"]


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
