"""Plots and the HTML report, from the result tables alone (nothing is recomputed)."""

from tcavkit.report.build import build_report
from tcavkit.report.html import render_html
from tcavkit.report.plots import plot_all
from tcavkit.tables import LOW_CAV_ACCURACY, MIN_RANDOM_RUNS

__all__ = ["LOW_CAV_ACCURACY", "MIN_RANDOM_RUNS", "build_report", "plot_all", "render_html"]
