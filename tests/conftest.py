"""Tiny models and data shared by the tests: everything is generated, nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


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
