"""How raw examples become model inputs: resize, value range, normalisation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing applied before the model.

    Attributes:
        size: ``(height, width)`` the images are resized to, or ``None`` to keep the size.
        value_range: pixel values are scaled linearly from [0, 255] to this range.
        mean: per-channel mean subtracted after scaling (``None``: no normalisation).
        std: per-channel standard deviation divided by after subtracting ``mean``.
        channels_last: produce ``(n, H, W, C)`` instead of ``(n, C, H, W)``.
    """

    size: tuple[int, int] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels_last: bool = False

    def fingerprint(self) -> str:
        """A canonical string of every field; part of the activation cache key."""
        return json.dumps(asdict(self), sort_keys=True)
