"""Small stand-ins for torchvision and timm networks, for ``model.factory`` tests.

torchvision and timm do not import next to the CPU-only torch of the test environment, so
these modules copy what matters to tcavkit: the factory signatures
(``torchvision.models.resnet18(*, weights=None, num_classes=1000)``,
``timm.create_model(model_name, pretrained=False, num_classes=1000, **kwargs)``) and the
module names (``layer3.1.conv2``, ``layer2.0.downsample.0``, ``fc``; ``blocks.5``,
``blocks.5.mlp.fc1``, ``head``), including torchvision's one ``relu`` module called twice
per block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


# -- torchvision.models.resnet -----------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv1, bn1, relu, conv2, bn2, downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetLike(nn.Module):
    """torchvision's ResNet-18 layout at a small width: stem, layer1-4 of 2 blocks, fc."""

    def __init__(self, num_classes: int = 1000, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [width, width * 2, width * 4, width * 8]
        c_in = width
        for i, c_out in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out))
            setattr(self, f"layer{i}", layer)
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_like(*, weights: Any = None, num_classes: int = 1000, width: int = 4) -> ResNetLike:
    """Like ``torchvision.models.resnet18``; ``weights`` must be None (nothing downloads)."""
    if weights is not None:
        raise ValueError(f"no pretrained weights here: got weights={weights!r}")
    return ResNetLike(num_classes=num_classes, width=width)


# -- timm ----------------------------------------------------------------------------------
class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A residual MLP block over tokens ``(n, tokens, dim)``, named like timm's."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TimmLike(nn.Module):
    """timm's layout: ``patch_embed``, ``blocks`` (an nn.Sequential), ``norm``, ``head``."""

    def __init__(self, num_classes: int = 1000, depth: int = 6, dim: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(*(Block(dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, tokens, dim)
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(1))


_MODELS = {"mlp_tiny": dict(depth=6, dim=8), "mlp_small": dict(depth=8, dim=12)}


def create_model(
    model_name: str, pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> TimmLike:
    """Like ``timm.create_model``; ``pretrained=True`` is refused (nothing downloads)."""
    if model_name not in _MODELS:
        raise RuntimeError(f"Unknown model ({model_name})")
    if pretrained:
        raise RuntimeError("no pretrained weights here")
    return TimmLike(num_classes=num_classes, **{**_MODELS[model_name], **kwargs})
