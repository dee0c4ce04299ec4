"""Tiny models and data shared by the tests: everything is generated, nothing downloaded."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

THREAD_TOLERANCE = 1e-5
"""How far a results table's numbers may move when torch runs on another number of threads
(torch splits its sums by thread): a fraction of each column's largest absolute value. The
demo experiment at 1 and 2 threads differed by at most 1.7e-6 of it (README: "Caching and
reproducibility"). Values that are zero up to rounding (a centred mean, 1e-17) may move by
:data:`ROUNDING` more."""

ROUNDING = 1e-12


def assert_tables_agree(
    found: dict[str, bytes], reference: dict[str, bytes], *, same_threads: bool
) -> None:
    """Results tables (file name → CSV bytes) of two runs of one experiment agree: the same
    bytes when torch ran on the same number of threads in both, else every text column
    (names, ``significant``, ``direction``) and whole-number column equal and each float
    column within :data:`THREAD_TOLERANCE` of the column's largest absolute value."""
    assert found.keys() == reference.keys()
    for name, data in reference.items():
        if same_threads or found[name] == data:
            assert found[name] == data, f"{name}: not the same bytes with the same threads"
            continue
        ours, theirs = (pd.read_csv(io.BytesIO(b)) for b in (found[name], data))
        assert list(ours.columns) == list(theirs.columns), name
        for column in theirs.columns:
            if not pd.api.types.is_float_dtype(theirs[column]):
                assert ours[column].equals(theirs[column]), f"{name}: {column} differs"
                continue
            expected = theirs[column].to_numpy(float)
            finite = np.isfinite(expected)
            scale = float(np.abs(expected[finite]).max()) if finite.any() else 0.0
            np.testing.assert_allclose(
                ours[column].to_numpy(float),
                expected,
                rtol=0,
                atol=THREAD_TOLERANCE * scale + ROUNDING,
                err_msg=f"{name}: {column}",
            )


class CountingIdentity(nn.Module):
    """Identity that counts how often the model's forward pass reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def axis_model() -> nn.Sequential:
    """x (4) -> counter -> hidden = x (identity Linear) -> logits = first two coordinates.

    d logit_k / d hidden = e_k for every input: TCAV along a direction v scores
    ``1[v_k > 0]`` and has magnitude ``v_k`` exactly.
    """
    hidden = nn.Linear(4, 4, bias=False)
    head = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        hidden.weight.copy_(torch.eye(4))
        head.weight.copy_(torch.eye(4)[:2])
    return nn.Sequential(CountingIdentity(), hidden, head)


def gaussian_sets(names: list[str], n: int, seed: int, shift: dict[str, int] | None = None):
    """{name: (n, 4) float32}: standard normal, optionally +3 along one axis per name."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        data = rng.normal(size=(n, 4)).astype(np.float32)
        if shift and name in shift:
            data[:, shift[name]] += 3.0
        out[name] = torch.from_numpy(data)
    return out


@pytest.fixture
def axis_experiment_inputs():
    """Targets, concepts and random sets for :func:`axis_model`."""
    random = gaussian_sets([f"random500_{i}" for i in range(12)], 20, seed=1)
    concepts = gaussian_sets(["up", "side"], 20, seed=2, shift={"up": 0, "side": 2})
    targets = gaussian_sets(["a", "b"], 15, seed=3)
    return targets, concepts, random
