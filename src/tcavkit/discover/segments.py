"""Superpixels, crops and patches: the image side of concept discovery (pure).

Each image is segmented with SLIC at several resolutions (one per segment count). A
segment smaller than ``min_area`` of the image is dropped, and so is one that duplicates a
segment kept at an earlier resolution (Jaccard index above :data:`DUPLICATE_JACCARD`).
Every label SLIC returns is visited. A kept segment becomes a *patch*: the full bounding box
of its mask, the pixels outside the mask filled with the preprocessing's mean colour,
resized to the model's input size.

``method: nmf`` (CRAFT) uses square crops instead (:func:`crop_grid`): at each scale ``n``
the image is covered by a grid of square crops of side ``shorter side // n`` (``n`` by
``n`` on a square image; the grid centred, any remainder left out). A crop is a square
segment, so it is a patch exactly as a superpixel is: its bounding box (the crop itself,
nothing to fill), resized.

Arrays: images are ``(H, W, 3)`` uint8, label maps ``(H, W)`` int32, masks ``(H, W)`` bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from PIL import Image

from tcavkit.errors import ConfigError
from tcavkit.options import Preprocessing

DUPLICATE_JACCARD = 0.5
"""A segment whose Jaccard index with a segment kept at an earlier resolution is above this
is a duplicate (ACE's threshold)."""

MIN_PIXELS_PER_SEGMENT = 16
"""An image needs at least this many pixels per requested segment."""

MIN_CROP_SIDE = 4
"""A square crop is at least this many pixels a side."""


def require_skimage() -> ModuleType:
    """``skimage.segmentation``, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        from skimage import segmentation
    except ImportError:
        raise ConfigError(
            "tcavkit discover needs scikit-image, which is not installed: "
            "pip install 'tcavkit[discover]'"
        ) from None
    return segmentation


def fill_colour(preprocessing: Preprocessing) -> tuple[int, int, int]:
    """The RGB pixel value (0-255) that the preprocessing maps to its mean: what ACE fills a
    patch's pixels outside the segment with, so that they carry no signal after
    normalisation. Without a ``mean``, the middle of the value range (128, 128, 128)."""
    if preprocessing.mean is None:
        return (128, 128, 128)
    low, high = preprocessing.value_range
    mean = np.broadcast_to(np.asarray(preprocessing.mean, dtype=np.float64), (3,))
    pixels = np.clip(np.rint((mean - low) / (high - low) * 255.0), 0, 255)
    return tuple(int(v) for v in pixels)  # type: ignore[return-value]


def check_image_size(size: tuple[int, int], segments: Sequence[int], where: str) -> None:
    """Raise a :class:`ConfigError` when ``size`` (height, width) has too few pixels for the
    largest segment count."""
    height, width = size
    largest = max(segments)
    if height * width < MIN_PIXELS_PER_SEGMENT * largest:
        raise ConfigError(
            f"{where}: images of {height}x{width} pixels are too small for {largest} segments "
            f"(SLIC needs at least {MIN_PIXELS_PER_SEGMENT} pixels per segment, "
            f"{MIN_PIXELS_PER_SEGMENT * largest} in all): lower discover.segments to at most "
            f"{height * width // MIN_PIXELS_PER_SEGMENT} or raise model.input.size"
        )


def check_crop_size(size: tuple[int, int], crops: Sequence[int], where: str) -> None:
    """Raise a :class:`ConfigError` when ``size`` (height, width) is too small for crops of
    at least :data:`MIN_CROP_SIDE` pixels at the largest crop count."""
    side = min(size)
    largest = max(crops)
    if side // largest < MIN_CROP_SIDE:
        raise ConfigError(
            f"{where}: images of {size[0]}x{size[1]} pixels are too small for {largest} crops "
            f"a side (each crop needs at least {MIN_CROP_SIDE} pixels a side): lower "
            f"discover.crops to at most {max(1, side // MIN_CROP_SIDE)} or raise model.input.size"
        )


def slic_labels(image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels of ``image`` ``(H, W, 3)`` uint8: labels ``(H, W)`` int32 from 0."""
    segmentation = require_skimage()
    labels = segmentation.slic(
        image, n_segments=n_segments, compactness=compactness, sigma=1.0, start_label=0
    )
    return np.asarray(labels, dtype=np.int32)


@dataclass(frozen=True)
class Segments:
    """The kept segments of one image.

    Attributes:
        labels: ``(R, H, W)`` int32: the label map of each resolution.
        kept: ``(m, 2)`` int32 rows ``(resolution index, label)``, in visiting order.
    """

    labels: np.ndarray
    kept: np.ndarray

    def mask(self, index: int) -> np.ndarray:
        """The ``(H, W)`` bool mask of kept segment ``index``."""
        resolution, label = self.kept[index]
        return self.labels[resolution] == label


def keep_segments(label_maps: Sequence[np.ndarray], min_area: float) -> np.ndarray:
    """The segments to keep from label maps of one image at increasing resolutions.

    Every label ``0..max`` of every map is visited. A segment is dropped when it covers no
    more than ``min_area`` of the image, or when its Jaccard index with a segment kept at an
    earlier resolution is above :data:`DUPLICATE_JACCARD`.

    Args:
        label_maps: ``R`` label maps ``(H, W)`` of non-negative ints.
        min_area: the smallest share of the image a kept segment covers (exclusive).

    Returns:
        ``(m, 2)`` int32 rows ``(resolution index, label)``.
    """
    kept: list[tuple[int, int]] = []
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # map, sizes, kept labels
    for r, labels in enumerate(label_maps):
        labels = np.asarray(labels)
        n_labels = int(labels.max()) + 1
        sizes = np.bincount(labels.ravel(), minlength=n_labels)
        here: list[int] = []
        for label in range(n_labels):
            size = int(sizes[label])
            if size <= min_area * labels.size:
                continue
            mask = labels == label
            if any(_duplicates(mask, size, *previous) for previous in earlier):
                continue
            here.append(label)
        kept.extend((r, label) for label in here)
        earlier.append((labels, sizes, np.asarray(here, dtype=np.int64)))
    return np.asarray(kept, dtype=np.int32).reshape(-1, 2)


def _duplicates(
    mask: np.ndarray, size: int, labels: np.ndarray, sizes: np.ndarray, kept: np.ndarray
) -> bool:
    """Whether ``mask`` (of ``size`` pixels) has a Jaccard index above the threshold with
    one of the ``kept`` labels of an earlier label map (whose label sizes are ``sizes``)."""
    if len(kept) == 0:
        return False
    overlap = np.bincount(labels[mask], minlength=len(sizes))[kept]
    union = sizes[kept] + size - overlap
    return bool(np.any(overlap / union > DUPLICATE_JACCARD))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard index of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def segment_image(
    image: np.ndarray, segments: Sequence[int], compactness: float, min_area: float
) -> Segments:
    """SLIC at each segment count, then :func:`keep_segments`."""
    maps = np.stack([slic_labels(image, n, compactness) for n in segments])
    return Segments(labels=maps, kept=keep_segments(list(maps), min_area))


def crop_grid(shape: tuple[int, int], crops: Sequence[int]) -> Segments:
    """The square crops of an image of ``shape`` (height, width) as :class:`Segments`: one
    label map per crop count ``n`` (``-1`` outside the crops), its ``n * n`` crops labelled
    row by row, every crop kept."""
    height, width = shape
    maps = np.full((len(crops), height, width), -1, dtype=np.int32)
    kept = []
    for r, n in enumerate(crops):
        side = min(height, width) // n
        rows, cols = height // side, width // side
        top0, left0 = (height - rows * side) // 2, (width - cols * side) // 2
        label = 0
        for a in range(rows):
            for b in range(cols):
                top, left = top0 + a * side, left0 + b * side
                maps[r, top : top + side, left : left + side] = label
                kept.append((r, label))
                label += 1
    return Segments(labels=maps, kept=np.asarray(kept, dtype=np.int32).reshape(-1, 2))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of a non-empty mask, ``bottom``/``right`` exclusive:
    ``mask[top:bottom, left:right]`` holds every pixel of the mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def make_patch(
    image: np.ndarray, mask: np.ndarray, fill: tuple[int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """The patch of ``mask``: its bounding box of ``image``, pixels outside the mask set to
    ``fill``, resized (bicubic, as ACE) to ``size = (height, width)``: ``(h, w, 3)`` uint8."""
    top, left, bottom, right = bounding_box(mask)
    crop = image[top:bottom, left:right].copy()
    crop[~mask[top:bottom, left:right]] = fill
    resized = Image.fromarray(crop).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)
