"""Decode image files to RGB and turn them into model-input tensors.

Decoding rules (:func:`decode_image`):

* animated images (GIF, WebP) use their first frame;
* the EXIF orientation tag is applied, so a portrait photo stays portrait;
* every mode becomes 8-bit RGB. Transparent pixels (modes ``RGBA``, ``LA``, ``PA``, or a
  palette/grey image with a transparency key) are **composited on white**, the way an
  image viewer shows them, rather than exposing whatever colour hides under alpha 0;
* 16-bit greyscale (``I;16*``, and ``I`` as older Pillow reads 16-bit PNGs) is scaled
  linearly from [0, 65535] to [0, 255] (value / 257, rounded), so 32768 becomes 128;
  float images (``F``) are clipped to [0, 255].

Files that cannot be decoded raise :class:`UnreadableImage`; a source turns that into a
skip with a :class:`~tcavkit.errors.TcavWarning`.

Large files are decoded no larger than needed. Given the size the image will be resized to,
a JPEG is decoded at a reduced scale (draft mode), and any image still at least
``2 * REDUCING_GAP`` times larger than that size in both dimensions is shrunk by an integer
factor (:meth:`PIL.Image.Image.reduce`, a box filter) before it is converted to RGB, to no
less than ``REDUCING_GAP`` times the target size, as :meth:`PIL.Image.Image.thumbnail`
does. Smaller images take the exact path (no shrink), so their pixels do not change. The
pixels being decoded at once, across all threads, are bounded by :data:`DECODE_BUDGET`.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps

from tcavkit.errors import ConfigError, DataError
from tcavkit.options import Preprocessing

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})
"""File extensions read as images (lower case; matching is case-insensitive)."""

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Modes whose pixels can be averaged before the conversion to RGB (not palette indices,
# nor a colour key that averaging would no longer match).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

REDUCING_GAP = 2.0
"""A large image is shrunk by an integer factor to no less than this many times the target
size in each dimension; the final (bilinear, antialiased) resize does the rest."""

MAX_DECODE_PIXELS = 64 * 1024 * 1024
"""Pixels (width x height as decoded) that may be decoded at once across all threads; one
image larger than this is decoded alone."""


class PixelBudget:
    """A bound on the pixels held by decodes running at once, shared by threads.

    :meth:`hold` blocks while the pixels already held plus the new ones exceed ``limit``;
    a single request larger than ``limit`` waits until nothing else is held, then runs
    alone, so every request is served.

    Attributes:
        limit: the most pixels held at once (except by one oversized request).
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._held = 0
        self._peak = 0
        self._changed = threading.Condition()

    @property
    def held(self) -> int:
        """Pixels held now."""
        with self._changed:
            return self._held

    @property
    def peak(self) -> int:
        """The most pixels ever held at once."""
        with self._changed:
            return self._peak

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` for the duration of the ``with`` block."""
        pixels = max(0, int(pixels))
        with self._changed:
            while self._held and self._held + pixels > self.limit:
                self._changed.wait()
            self._held += pixels
            self._peak = max(self._peak, self._held)
        try:
            yield
        finally:
            with self._changed:
                self._held -= pixels
                self._changed.notify_all()


DECODE_BUDGET = PixelBudget(MAX_DECODE_PIXELS)
"""The budget every :func:`decode_image` call holds its image's pixels in while decoding."""


class UnreadableImage(DataError):
    """A file is not an image Pillow can decode (corrupt, truncated or another format).

    Attributes:
        path: the file.
        reason: what Pillow reported.
        sha256: the digest of the bytes that failed to decode (``None``: the file could not
            be read at all).
    """

    def __init__(self, path: str, reason: str, sha256: str | None = None) -> None:
        super().__init__(f"cannot decode image {path} ({reason})")
        self.path = path
        self.reason = reason
        self.sha256 = sha256


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has an image extension and is not a hidden file."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class DecodedImage:
    """One file decoded and resized for the model (see :func:`read_image`).

    Attributes:
        array: ``(H, W, 3)`` uint8 pixels.
        stored_size: ``(width, height)`` of the image as stored in the file.
        decoded_size: ``(width, height)`` actually decoded (smaller than ``stored_size``
            for a JPEG decoded at a reduced scale).
        sha256: the digest of the file's bytes that were decoded (the file is read once).
    """

    array: np.ndarray
    stored_size: tuple[int, int]
    decoded_size: tuple[int, int]
    sha256: str = ""


def decode_image(
    path: str | os.PathLike[str], size_hint: tuple[int, int] | None = None
) -> Image.Image:
    """Read one image file as an RGB image (see the module docstring for the rules).

    Args:
        path: the file.
        size_hint: ``(height, width)`` the image will be resized to. A JPEG much larger
            than that is decoded at a reduced scale (1/2, 1/4 or 1/8, never below
            ``max(height, width)`` on either side), which is several times faster for
            large photos; an image still at least ``2 * REDUCING_GAP`` times larger than
            ``size_hint`` in both dimensions is shrunk by an integer factor to no less than
            ``REDUCING_GAP`` times it. ``None`` decodes at full size.

    Raises:
        UnreadableImage: the file is missing, corrupt, truncated or not an image.
    """
    return _decode(path, size_hint)[0]


def read_image(path: str | os.PathLike[str], size: tuple[int, int] | None) -> DecodedImage:
    """Decode one file and resize it to ``size = (height, width)`` (``None``: as stored).

    The file is read once, and the digest of exactly the bytes decoded is returned with the
    pixels (``sha256``), so that a caller can tell a file changed since it was hashed.

    Raises:
        UnreadableImage: the file is missing, corrupt, truncated or not an image (with the
            digest of the bytes read, when they could be read).
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise UnreadableImage(os.fspath(path), f"{type(exc).__name__}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        img, stored_size, decoded_size = _decode(io.BytesIO(data), size, os.fspath(path))
    except UnreadableImage as error:
        error.sha256 = digest
        raise
    array = to_uint8_array(resize_image(img, size))
    return DecodedImage(array, stored_size, decoded_size, digest)


def _decode(
    path: str | os.PathLike[str] | io.BytesIO,
    size_hint: tuple[int, int] | None,
    label: str | None = None,
) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """The RGB image, its stored ``(width, height)`` and its decoded ``(width, height)``
    (``path``: a file, or its bytes with ``label`` naming it in errors).

    The decoded pixels are held in :data:`DECODE_BUDGET` until the image is RGB and, for a
    large one, shrunk.
    """
    try:
        with Image.open(path) as img:
            img.seek(0)
            stored_size = img.size
            if size_hint is not None:
                side = max(size_hint)
                img.draft(None, (side, side))
            decoded_size = img.size
            with DECODE_BUDGET.hold(decoded_size[0] * decoded_size[1]):
                img.load()
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                factor = _reduce_factor(img.size, size_hint, orientation)
                if factor < 2:
                    return to_rgb(ImageOps.exif_transpose(img)), stored_size, decoded_size
                small = _reduce(img, factor)
                method = _TRANSPOSE.get(orientation)
                if method is not None:
                    small = small.transpose(method)
                return small, stored_size, decoded_size
    except Exception as exc:  # Pillow raises many types on corrupt data
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        name = label if label is not None else os.fspath(path)  # type: ignore[arg-type]
        raise UnreadableImage(name, reason) from exc


def _reduce_factor(size: tuple[int, int], target: tuple[int, int] | None, orientation: int) -> int:
    """The integer factor that shrinks ``size = (width, height)`` (as stored) to no less
    than ``REDUCING_GAP`` times ``target = (height, width)`` (as displayed) per dimension;
    ``1`` when there is no target."""
    if target is None:
        return 1
    height, width = target
    if orientation in (5, 6, 7, 8):  # stored sideways
        height, width = width, height
    return max(1, int(min(size[0] / (REDUCING_GAP * width), size[1] / (REDUCING_GAP * height))))


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """``img`` shrunk ``factor`` times (box filter), as RGB."""
    if img.mode in _REDUCIBLE_MODES and "transparency" not in img.info:
        return to_rgb(img.reduce(factor))
    return to_rgb(img).reduce(factor)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any mode to 8-bit RGB (alpha composited on white)."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float64), 0.0, 255.0)
        return Image.fromarray(np.round(grey).astype(np.uint8), mode="L").convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    return img.convert("RGB")


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    """Scale a 16-bit greyscale image from [0, 65535] to 8-bit RGB."""
    values = np.asarray(img).astype(np.float64)
    scaled = np.round(np.clip(values, 0.0, 65535.0) / 257.0).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _composite_on_white(img: Image.Image) -> Image.Image:
    """Blend an image with alpha (or a transparency key) onto a white background."""
    rgba = img.convert("RGBA") if img.mode != "La" else img.convert("LA").convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def resize_image(img: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Resize to ``size = (height, width)`` with antialiased bilinear filtering.

    ``None`` or the current size returns the image unchanged.
    """
    if size is None:
        return img
    height, width = size
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.BILINEAR)


def check_preprocessing(prep: Preprocessing) -> None:
    """Validate size, value range, mean and std of ``prep``.

    Raises:
        ConfigError: a field has the wrong length or an impossible value.
    """
    size = prep.size
    if size is not None and (len(size) != 2 or not all(_is_positive_int(s) for s in size)):
        raise ConfigError(
            f"preprocessing size must be (height, width) with two positive integers, got {size!r}"
        )
    low, high = prep.value_range
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(
            f"preprocessing value_range must be (low, high) with low < high, "
            f"got {prep.value_range!r}"
        )
    _channel_values(prep.mean, "mean", 0.0)
    std = _channel_values(prep.std, "std", 1.0)
    if np.any(std <= 0):
        raise ConfigError(f"preprocessing std must be positive, got {prep.std!r}")


def _is_positive_int(value: object) -> bool:
    """True for an ``int`` (not ``bool``) of at least 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _channel_values(values: Sequence[float] | None, field: str, default: float) -> np.ndarray:
    """Per-channel values ``(3,)``: 3 given, 1 broadcast, ``None`` -> ``default``."""
    if values is None:
        return np.full(3, default, dtype=np.float64)
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 1:
        return np.repeat(array, 3)
    if array.size != 3:
        raise ConfigError(
            f"preprocessing {field} needs 3 values (one per RGB channel) or 1 for all "
            f"channels, got {len(array)}: {tuple(values)!r}"
        )
    return array


def to_uint8_array(img: Image.Image) -> np.ndarray:
    """An RGB image as a ``(H, W, 3)`` uint8 array."""
    return np.asarray(to_rgb(img), dtype=np.uint8)


def arrays_to_tensor(
    arrays: Sequence[np.ndarray],
    prep: Preprocessing,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Stack ``(H, W, 3)`` uint8 arrays of one size into a normalised float32 tensor.

    Values are mapped linearly from [0, 255] to ``prep.value_range``, then
    ``(x - mean) / std`` per channel.

    Args:
        arrays: ``n`` arrays ``(H, W, 3)``, uint8, already resized.
        prep: the preprocessing (``size`` is not applied here, only checked).
        names: file names of the arrays, for error messages.

    Returns:
        float32 ``(n, 3, H, W)``, or ``(n, H, W, 3)`` with ``prep.channels_last``.

    Raises:
        ConfigError: ``prep`` is invalid.
        DataError: the arrays differ in size.
    """
    import torch

    check_preprocessing(prep)
    if not arrays:
        height, width = prep.size if prep.size is not None else (0, 0)
        shape = (0, height, width, 3) if prep.channels_last else (0, 3, height, width)
        return torch.zeros(shape, dtype=torch.float32)
    _check_same_size(arrays, names)
    batch = torch.from_numpy(np.stack(arrays))  # (n, H, W, 3) uint8
    scale, offset = _affine(prep)
    if not prep.channels_last:
        batch = batch.permute(0, 3, 1, 2)
        scale, offset = scale[:, None, None], offset[:, None, None]
    out = batch.to(torch.float32, memory_format=torch.contiguous_format)
    return out.mul_(scale).add_(offset)


def _affine(prep: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale, offset`` ``(3,)`` with ``out = pixel * scale + offset``.

    ``pixel`` in [0, 255] maps to ``((pixel / 255 * (high - low) + low) - mean) / std``.
    """
    import torch

    low, high = prep.value_range
    mean = _channel_values(prep.mean, "mean", 0.0)
    std = _channel_values(prep.std, "std", 1.0)
    scale = (high - low) / 255.0 / std
    offset = (low - mean) / std
    return torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(offset, dtype=torch.float32)


def _check_same_size(arrays: Sequence[np.ndarray], names: Sequence[str] | None) -> None:
    """Raise a DataError naming the first array whose size differs from the first one."""
    first = arrays[0].shape
    for index, array in enumerate(arrays):
        if array.shape != first:
            label = names[index] if names is not None else f"image #{index}"
            first_label = names[0] if names is not None else "image #0"
            raise DataError(
                f"{label} is {array.shape[1]}x{array.shape[0]} (width x height) but "
                f"{first_label} is {first[1]}x{first[0]}; images of different sizes cannot "
                f"be batched: set the model input size (preprocessing size) so they are resized"
            )


def preprocess(
    images: Sequence[Image.Image],
    prep: Preprocessing,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Resize, rescale and normalise PIL images into one float32 tensor.

    Args:
        images: ``n`` PIL images of any mode (converted to RGB).
        prep: resize to ``prep.size = (H, W)`` (bilinear, antialiased), map [0, 255] to
            ``prep.value_range``, then ``(x - mean) / std`` per channel.
        names: file names of the images, for error messages.

    Returns:
        float32 ``(n, 3, H, W)``, or ``(n, H, W, 3)`` with ``prep.channels_last``.

    Raises:
        ConfigError: ``prep`` is invalid (e.g. mean with 2 values).
        DataError: ``prep.size`` is ``None`` and the images differ in size.
    """
    check_preprocessing(prep)
    arrays = [to_uint8_array(resize_image(to_rgb(img), prep.size)) for img in images]
    return arrays_to_tensor(arrays, prep, names)
