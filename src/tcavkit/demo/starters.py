"""The "starter creatures" model: a small CNN and its training loop.

Used by ``tcavkit demo`` and by the planted-ground-truth tests: a classifier of fire, water
and grass creatures (decided by body colour only) whose TCAV results are known in advance.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tcavkit.demo.synthetic import CREATURE_COLOURS, make_images, set_rng
from tcavkit.examples.images import preprocess
from tcavkit.options import Preprocessing

CLASSES: tuple[str, ...] = tuple(CREATURE_COLOURS)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, padding=1),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


def starter_cnn(n_classes: int = 3, width: int = 8) -> nn.Sequential:
    """A 3-block CNN; layers ``block1``–``block3`` (each conv, relu, pool), ``pool``, ``logits``.

    Input ``(n, 3, H, W)`` with H, W divisible by 8; output logits ``(n, n_classes)``.
    It is an ``nn.Sequential`` so that its TorchScript export keeps every layer reachable.
    """
    return nn.Sequential(
        OrderedDict(
            block1=_block(3, width),
            block2=_block(width, 2 * width),
            block3=_block(2 * width, 4 * width),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            logits=nn.Linear(4 * width, n_classes),
        )
    )


@dataclass(frozen=True)
class TrainedModel:
    """A trained classifier and its accuracy on held-out generated images."""

    model: nn.Module
    train_accuracy: float
    test_accuracy: float


def creature_tensors(
    n_per_class: int, size: tuple[int, int], seed: int, classes: Sequence[str] = CLASSES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated creature images ``(n, 3, H, W)`` in [0, 1] and labels ``(n,)``."""
    prep = Preprocessing(size=size)
    images, labels = [], []
    for index, kind in enumerate(classes):
        rng = set_rng(seed, f"train-{kind}")
        images.append(preprocess(make_images(kind, n_per_class, size, rng), prep))
        labels.append(torch.full((n_per_class,), index, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def train_starter_cnn(
    size: tuple[int, int] = (32, 32),
    n_per_class: int = 120,
    epochs: int = 8,
    seed: int = 0,
    width: int = 8,
) -> TrainedModel:
    """Train :func:`starter_cnn` on freshly generated creatures (seconds on a CPU)."""
    torch.manual_seed(seed)
    model = starter_cnn(len(CLASSES), width)
    x, y = creature_tensors(n_per_class, size, seed)
    x_test, y_test = creature_tensors(max(20, n_per_class // 4), size, seed + 10_000)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    return TrainedModel(model, _accuracy(model, x, y), _accuracy(model, x_test, y_test))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        predicted = model(x).argmax(dim=1)
    return float(np.mean((predicted == y).numpy()))
