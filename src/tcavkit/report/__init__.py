"""Plots and the HTML report, from the result tables alone (nothing is recomputed).

The names are imported on first use (PEP 562): importing a sub-module such as
:mod:`tcavkit.report.common` does not load matplotlib.
"""

from typing import TYPE_CHECKING

from tcavkit.lazy import lazy_namespace
from tcavkit.tables import LOW_CAV_ACCURACY, MIN_RANDOM_RUNS

if TYPE_CHECKING:
    from tcavkit.report.build import build_report
    from tcavkit.report.figures import plot_all
    from tcavkit.report.html import render_html

_LAZY: dict[str, str] = {
    "build_report": "tcavkit.report.build",
    "render_html": "tcavkit.report.html",
    "plot_all": "tcavkit.report.figures",
}
"""Public name -> the module it is imported from on first access."""

__all__ = ["LOW_CAV_ACCURACY", "MIN_RANDOM_RUNS", "build_report", "plot_all", "render_html"]


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, __all__)
