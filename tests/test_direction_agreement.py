"""The direction of a finding is the direction of the tested statistic, even where the TCAV
score points the other way (the issue's two-slope model)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tcavkit.report.text import finding
from tcavkit.scoring import effect, scores_from_derivatives
from tcavkit.stats import summarize


def two_slope_derivatives(n: int = 50) -> np.ndarray:
    """Directional derivatives ``(n, 1)``: -0.2 for 80% of the examples, +2.8 for 20%."""
    derivs = np.full((n, 1), -0.2)
    derivs[: n // 5] = 2.8
    return derivs


def test_two_slope_model_is_a_positive_finding_whose_score_is_low():
    scores = scores_from_derivatives(two_slope_derivatives())
    assert scores.tcav_score[0] == 0.2  # most examples' logit falls along the CAV
    assert np.isclose(scores.magnitude[0], 0.4)  # but on average it rises: 0.2*2.8 - 0.8*0.2
    rng = np.random.default_rng(0)
    rows = []
    for run in range(20):
        separation = 1.0 + 0.05 * rng.standard_normal()
        rows.append(
            dict(target="A", concept="C", layer="L", random=f"r{run}", run=run,
                 tcav_score=0.2, magnitude=0.4, cav_accuracy=1.0, is_null=False,
                 effect=float(effect(np.float64(0.4), np.float64(separation))))
        )  # fmt: skip
        for j in range(20):  # random pseudo-concepts: scores around 0.5, effects around 0
            rows.append(
                dict(target="A", concept=f"random{j}", layer="L", random=f"r{run}", run=run,
                     tcav_score=float(rng.uniform(0.3, 0.7)), magnitude=0.0, cav_accuracy=0.6,
                     is_null=True, effect=float(0.02 * rng.standard_normal()))
            )  # fmt: skip
    summary = summarize(pd.DataFrame(rows))
    row = summary.iloc[0]
    assert row["mean"] < row["null_mean"]  # the score is below the null ...
    assert bool(row["significant"]) and row["direction"] == "positive"  # ... the test is not
    assert row["statistic_low"] > row["statistic_null_mean"]  # its interval agrees
    text = finding(row)
    assert "raises the logit of class A" in text and "lowers" not in text
    assert "20% of A examples rise along it" in text
