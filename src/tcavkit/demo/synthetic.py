"""Synthetic images with planted ground truth: colour and texture concepts, random
counterexamples and "starter creatures".

The creature classes (fire, water, grass) are decided *only* by the body colour (red, blue,
green). A creature's texture overlay (its pattern and its colour) is drawn independently of
the class, and backgrounds and overlays avoid the three class colours, so a model that
separates the classes must use the body colour; TCAV should then find the class colour
significant for its class and the textures not. Texture and random images use
colours drawn uniformly from the RGB cube, so they favour no colour.

All randomness comes from a :class:`numpy.random.Generator`; sizes are ``(height, width)``
and images are RGB :class:`PIL.Image.Image`. :func:`make_dataset` writes the folder layout
of the original tensorflow/tcav (``<root>/<name>/*.png``), deterministic given the seed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tcavkit.errors import ConfigError

RGB = tuple[int, int, int]
Size = tuple[int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
}
TEXTURES: tuple[str, ...] = ("striped", "dotted", "zigzag")
CREATURE_COLOURS: dict[str, str] = {"fire": "red", "water": "blue", "grass": "green"}
DEFAULT_CONCEPTS: tuple[str, ...] = ("red", "green", "blue", "yellow", "black", "white", *TEXTURES)
MIN_SIZE = 16
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp")

# Creature backgrounds: greys, browns, sand, yellow, purple, pastels; none near red/green/blue.
_BACKGROUNDS: tuple[RGB, ...] = (
    (200, 200, 200),
    (128, 128, 128),
    (75, 75, 75),
    (120, 85, 55),
    (160, 120, 80),
    (220, 200, 160),
    (235, 215, 70),
    (130, 70, 160),
    (190, 170, 220),
    (245, 240, 215),
)
# Creature texture overlays: class-neutral colours (near-black, near-white, grey, yellow,
# purple), drawn independently of the class so that texture pixels carry no class cue.
_OVERLAYS: tuple[RGB, ...] = (
    (25, 25, 25),
    (240, 240, 240),
    (128, 128, 128),
    (235, 215, 70),
    (130, 70, 160),
)
_COLOUR_JITTER = 20  # per-channel jitter of a concept's or body's base colour
_NOISE = 6  # light pixel noise (uniform, +-6) added to every image


# ---------------------------------------------------------------------------------------
# small helpers


def _check_size(size: Size | int) -> Size:
    """Validate ``(height, width)`` (an int means square) and return it as a tuple."""
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"image size must be (height, width), got {size!r}") from None
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ConfigError(f"image size {size!r} is too small; use at least {MIN_SIZE}x{MIN_SIZE}")
    return h, w


def _valid_kinds() -> list[str]:
    return [*COLOURS, *TEXTURES, "random", *CREATURE_COLOURS]


def _unknown(what: str, name: str, valid: Iterable[str]) -> ConfigError:
    return ConfigError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: int = _COLOUR_JITTER) -> RGB:
    """``rgb`` with independent uniform jitter of at most ``amount`` per channel."""
    c = np.asarray(rgb, dtype=np.int64) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def _random_rgb(rng: np.random.Generator) -> RGB:
    """A colour drawn uniformly from the RGB cube."""
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def _contrasting_rgb(other: Sequence[int], rng: np.random.Generator, min_dist: float = 110) -> RGB:
    """A uniform random colour at least ``min_dist`` away from ``other`` (channel-symmetric)."""
    ref = np.asarray(other, dtype=float)
    for _ in range(32):
        c = _random_rgb(rng)
        if np.linalg.norm(np.asarray(c, dtype=float) - ref) >= min_dist:
            return c
    return (0, 0, 0) if ref.mean() > 127 else (255, 255, 255)


def _finish(arr: np.ndarray, rng: np.random.Generator, noise: int = _NOISE) -> Image.Image:
    """Add light uniform integer noise (at most ``noise``) to ``(h, w, 3)`` pixels; to RGB."""
    out = arr.astype(np.int16) + rng.integers(-noise, noise + 1, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _random_box(
    h: int, w: int, rng: np.random.Generator, lo: float, hi: float
) -> tuple[float, float, float, float]:
    """A box whose sides are ``lo``..``hi`` of the image sides, anywhere (may overhang)."""
    bw, bh = rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h
    x0, y0 = rng.uniform(-bw / 3, w - 2 * bw / 3), rng.uniform(-bh / 3, h - 2 * bh / 3)
    return x0, y0, x0 + bw, y0 + bh


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    fill: RGB,
    rng: np.random.Generator,
) -> None:
    """Draw an ellipse, rectangle or triangle filling ``box``."""
    x0, y0, x1, y1 = box
    kind = int(rng.integers(3))
    if kind == 0:
        draw.ellipse(box, fill=fill)
    elif kind == 1:
        draw.rectangle(box, fill=fill)
    else:
        xs = rng.uniform(x0, x1, size=3)
        ys = rng.uniform(y0, y1, size=3)
        draw.polygon([(float(x), float(y)) for x, y in zip(xs, ys, strict=True)], fill=fill)


# ---------------------------------------------------------------------------------------
# texture masks (vectorised)


def _rotated_grid(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle`` (radians) about the image centre."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= w / 2
    y -= h / 2
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * c + y * s, -x * s + y * c


def _stripes_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = min(h, w)
    period = rng.uniform(max(4.0, m / 12), max(6.0, m / 4))
    duty = rng.uniform(0.35, 0.6)
    u, _ = _rotated_grid(h, w, rng.uniform(0, np.pi))
    return np.mod(u + rng.uniform(0, period), period) < duty * period


def _dots_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = min(h, w)
    spacing = rng.uniform(max(5.0, m / 9), max(7.0, m / 3.5))
    radius = max(1.2, rng.uniform(0.2, 0.38) * spacing)
    u, v = _rotated_grid(h, w, rng.uniform(0, np.pi / 2))
    du = np.mod(u + rng.uniform(0, spacing), spacing) - spacing / 2
    dv = np.mod(v + rng.uniform(0, spacing), spacing) - spacing / 2
    return du * du + dv * dv < radius * radius


def _zigzag_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = min(h, w)
    period = rng.uniform(max(5.0, m / 9), max(7.0, m / 3.5))
    width = rng.uniform(0.3, 0.5) * period
    wavelength = rng.uniform(0.8, 2.0) * period
    amplitude = rng.uniform(0.5, 1.0) * period
    u, v = _rotated_grid(h, w, rng.uniform(0, np.pi))
    t = u / wavelength
    tri = 2.0 * np.abs(t - np.floor(t + 0.5))  # triangle wave in [0, 1]
    return np.mod(v + amplitude * tri + rng.uniform(0, period), period) < width


_TEXTURE_MASKS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "striped": _stripes_mask,
    "dotted": _dots_mask,
    "zigzag": _zigzag_mask,
}


def texture_mask(texture: str, size: Size, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(height, width)`` mask of a random instance of ``texture`` (True = pattern)."""
    if texture not in _TEXTURE_MASKS:
        raise _unknown("texture", texture, TEXTURES)
    h, w = _check_size(size)
    return _TEXTURE_MASKS[texture](h, w, rng)


# ---------------------------------------------------------------------------------------
# public generators


def colour_image(colour: str, size: Size, rng: np.random.Generator) -> Image.Image:
    """An image dominated by ``colour``: shaded patches of it plus a few small other shapes."""
    if colour not in COLOURS:
        raise _unknown("colour", colour, COLOURS)
    h, w = _check_size(size)
    base = _jitter(COLOURS[colour], rng)
    img = Image.new("RGB", (w, h), base)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):  # large patches in shades of the colour
        _draw_shape(draw, _random_box(h, w, rng, 0.3, 0.8), _jitter(base, rng, 15), rng)
    for _ in range(int(rng.integers(1, 4))):  # small distractors of random colours
        _draw_shape(draw, _random_box(h, w, rng, 0.08, 0.2), _random_rgb(rng), rng)
    return _finish(np.asarray(img), rng)


def _texture_array(texture: str, size: Size, rng: np.random.Generator) -> np.ndarray:
    """``(h, w, 3)`` uint8 texture in a random colour on a contrasting random background."""
    mask = texture_mask(texture, size, rng)
    background = _random_rgb(rng)
    pattern = _contrasting_rgb(background, rng)
    arr = np.empty((*mask.shape, 3), dtype=np.uint8)
    arr[...] = background
    arr[mask] = pattern
    return arr


def texture_image(texture: str, size: Size, rng: np.random.Generator) -> Image.Image:
    """``texture`` drawn in a random colour over a contrasting random background."""
    return _finish(_texture_array(texture, size, rng), rng)


def random_image(size: Size, rng: np.random.Generator) -> Image.Image:
    """A random background (sometimes textured) with random shapes, all in uniform colours.

    Every call draws from the same distribution, so all random sets are alike.
    """
    h, w = _check_size(size)
    if rng.random() < 0.25:
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        img = Image.fromarray(_texture_array(texture, (h, w), rng))
    else:
        img = Image.new("RGB", (w, h), _random_rgb(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        _draw_shape(draw, _random_box(h, w, rng, 0.1, 0.5), _random_rgb(rng), rng)
    return _finish(np.asarray(img), rng)


def _creature_background(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A background from :data:`_BACKGROUNDS` with a few same-palette blobs."""
    idx = rng.integers(len(_BACKGROUNDS), size=4)
    img = Image.new("RGB", (w, h), _jitter(_BACKGROUNDS[idx[0]], rng, 12))
    draw = ImageDraw.Draw(img)
    for i in idx[1 : 1 + int(rng.integers(0, 4))]:
        _draw_shape(
            draw, _random_box(h, w, rng, 0.15, 0.45), _jitter(_BACKGROUNDS[i], rng, 12), rng
        )
    return img


def _draw_body(
    h: int, w: int, rng: np.random.Generator
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """Body mask (mode "L": body, limbs and tail) and the body ellipse box."""
    cx = w * (0.5 + rng.uniform(-0.08, 0.08))
    cy = h * (0.5 + rng.uniform(-0.06, 0.06))
    rx, ry = w * rng.uniform(0.28, 0.38), h * rng.uniform(0.24, 0.34)
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse(box, fill=255)
    n_limbs = int(rng.integers(2, 5))
    for i in range(n_limbs):  # legs under the body
        lx = cx - rx * 0.7 + 1.4 * rx * (i + 0.5) / n_limbs
        lw, lh = rx * 0.12, ry * rng.uniform(0.35, 0.6)
        draw.ellipse((lx - lw, cy + ry * 0.6, lx + lw, cy + ry * 0.6 + 2 * lh), fill=255)
    side = 1 if rng.random() < 0.5 else -1  # tail on one side
    tx = cx + side * rx * 0.9
    tip = (tx + side * rx * rng.uniform(0.35, 0.6), cy - ry * rng.uniform(0.2, 0.8))
    draw.polygon([(tx, cy - ry * 0.15), (tx, cy + ry * 0.25), tip], fill=255)
    return mask, box


def _draw_eyes(
    img: Image.Image,
    box: tuple[float, float, float, float],
    rng: np.random.Generator,
    mask: Image.Image | None = None,
) -> None:
    """Two white eyes with dark pupils in the upper part of the body (also drawn, in 255,
    on ``mask`` when given)."""
    x0, y0, x1, y1 = box
    rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
    cx, ey = (x0 + x1) / 2, y0 + ry * rng.uniform(0.55, 0.75)
    r = max(1.5, min(rx, ry) * rng.uniform(0.14, 0.2))
    draw = ImageDraw.Draw(img)
    marks = ImageDraw.Draw(mask) if mask is not None else None
    for ex in (cx - rx * 0.35, cx + rx * 0.35):
        draw.ellipse((ex - r, ey - r, ex + r, ey + r), fill=(245, 245, 245))
        if marks is not None:
            marks.ellipse((ex - r, ey - r, ex + r, ey + r), fill=255)
        p = r * 0.5
        draw.ellipse((ex - p, ey - p, ex + p, ey + p), fill=(15, 15, 15))


@dataclass(frozen=True)
class Creature:
    """A starter creature and its ground truth: boolean ``(height, width)`` masks that
    partition the image.

    Attributes:
        image: the RGB image.
        body: pixels of the body in its plain body colour (the class cue).
        texture: pixels of the body covered by the texture overlay (a class-neutral colour).
        eyes: the eyes (white with dark pupils).
        background: everything else.
    """

    image: Image.Image
    body: np.ndarray
    texture: np.ndarray
    eyes: np.ndarray
    background: np.ndarray


def creature(kind: str, size: Size, rng: np.random.Generator) -> Creature:
    """A creature whose body is the class colour (fire=red, water=blue, grass=green), with
    its ground-truth masks.

    The body has a random texture overlay (or none) in a random class-neutral colour, and
    the background avoids the class colours: the plain body colour is the only class cue.
    """
    if kind not in CREATURE_COLOURS:
        raise _unknown("creature kind", kind, CREATURE_COLOURS)
    h, w = _check_size(size)
    body_rgb = np.asarray(_jitter(COLOURS[CREATURE_COLOURS[kind]], rng), dtype=np.float32)
    arr = np.asarray(_creature_background(h, w, rng), dtype=np.float32).copy()
    mask_img, box = _draw_body(h, w, rng)
    body = np.asarray(mask_img) > 0
    fill = np.empty((h, w, 3), dtype=np.float32)
    fill[...] = body_rgb
    pattern = np.zeros((h, w), dtype=bool)
    choice = int(rng.integers(len(TEXTURES) + 1))  # last choice: plain body
    if choice < len(TEXTURES):
        pattern = texture_mask(TEXTURES[choice], (h, w), rng)
        overlay = _OVERLAYS[int(rng.integers(len(_OVERLAYS)))]
        fill[pattern] = np.asarray(_jitter(overlay, rng, 12), dtype=np.float32)
    arr[body] = fill[body]
    img = Image.fromarray(arr.astype(np.uint8))
    eye_img = Image.new("L", (w, h), 0)
    _draw_eyes(img, box, rng, eye_img)
    eyes = np.asarray(eye_img) > 0
    texture = body & pattern & ~eyes
    return Creature(
        image=_finish(np.asarray(img), rng),
        body=body & ~pattern & ~eyes,
        texture=texture,
        eyes=eyes,
        background=~body & ~eyes,
    )


def creature_image(kind: str, size: Size, rng: np.random.Generator) -> Image.Image:
    """The image of :func:`creature` (the same image for the same generator state)."""
    return creature(kind, size, rng).image


def creatures(kind: str, n: int, size: Size, rng: np.random.Generator) -> list[Creature]:
    """``n`` creatures of ``kind`` with their masks: the images :func:`make_images` makes
    from the same generator state."""
    size = _check_size(size)
    return [creature(kind, size, rng) for _ in range(n)]


def make_images(kind: str, n: int, size: Size, rng: np.random.Generator) -> list[Image.Image]:
    """``n`` images of ``kind``: a colour name, a texture name, "random" or a creature kind."""
    size = _check_size(size)
    if n < 0:
        raise ConfigError(f"number of images must be >= 0, got {n}")
    if kind in COLOURS:
        return [colour_image(kind, size, rng) for _ in range(n)]
    if kind in TEXTURES:
        return [texture_image(kind, size, rng) for _ in range(n)]
    if kind == "random":
        return [random_image(size, rng) for _ in range(n)]
    if kind in CREATURE_COLOURS:
        return [creature_image(kind, size, rng) for _ in range(n)]
    raise _unknown("image kind", kind, _valid_kinds())


# ---------------------------------------------------------------------------------------
# writing data sets


def _check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise _unknown("image format", fmt, IMAGE_FORMATS)
    return fmt


def write_image_set(
    folder: Path, images: list[Image.Image], prefix: str = "img", fmt: str = "png"
) -> list[Path]:
    """Write ``images`` as ``<folder>/<prefix>_<index>.<fmt>`` (creating the folder)."""
    fmt = _check_format(fmt)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(max(len(images) - 1, 0))))
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{prefix}_{i:0{digits}d}.{fmt}"
        if fmt in ("jpg", "jpeg"):
            img.save(path, format="JPEG", quality=95)
        elif fmt == "png":
            img.save(path, format="PNG", compress_level=1)  # noisy pixels: speed over size
        else:
            img.save(path)
        paths.append(path)
    return paths


def _remove_stale(folder: Path, keep: list[Path], prefix: str, fmt: str) -> None:
    """Delete files named like ours (``<prefix>_<digits>.<fmt>``) that are not in ``keep``."""
    pattern = re.compile(rf"{re.escape(prefix)}_\d+\.{re.escape(fmt)}")
    kept = {p.name for p in keep}
    for path in folder.iterdir():
        if path.is_file() and pattern.fullmatch(path.name) and path.name not in kept:
            path.unlink()


def set_rng(seed: int, tag: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and a stable ``tag`` (not on call order)."""
    if int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode())]))


def make_dataset(
    root: Path,
    *,
    size: Size = (64, 64),
    n_per_set: int = 50,
    n_random_sets: int = 20,
    concepts: Sequence[str] = DEFAULT_CONCEPTS,
    targets: Sequence[str] = ("fire", "water", "grass"),
    seed: int = 0,
    random_prefix: str = "random500_",
) -> dict[str, Path]:
    """Write targets, concepts and random sets as ``<root>/<name>/img_NNNN.png``.

    Random sets are named ``<random_prefix>0``, ``<random_prefix>1``, ... Each set has its own
    generator seeded by ``(seed, set tag)``, so a set's images depend only on the seed, its
    name (or random index) and the size. Stale ``img_*.png`` files from earlier runs are removed.

    Returns:
        set name -> folder, targets first, then concepts, then random sets.
    """
    size = _check_size(size)
    if n_per_set < 1 or n_random_sets < 0:
        raise ConfigError(
            f"need n_per_set >= 1 and n_random_sets >= 0, got {n_per_set} and {n_random_sets}"
        )
    for name in targets:
        if name not in CREATURE_COLOURS:
            raise _unknown("target", name, CREATURE_COLOURS)
    for name in concepts:
        if name not in _valid_kinds() or name == "random":
            raise _unknown("concept", name, [*COLOURS, *TEXTURES, *CREATURE_COLOURS])
    # (name, kind, generator tag)
    plan = [(name, name, name) for name in (*targets, *concepts)]
    plan += [(f"{random_prefix}{i}", "random", f"random/{i}") for i in range(n_random_sets)]
    names = [name for name, _, _ in plan]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"set names must be unique; repeated: {', '.join(duplicates)}")
    root = Path(root)
    folders: dict[str, Path] = {}
    for name, kind, tag in plan:
        folder = root / name
        images = make_images(kind, n_per_set, size, set_rng(seed, tag))
        paths = write_image_set(folder, images)
        _remove_stale(folder, paths, "img", "png")
        folders[name] = folder
    return folders


__all__ = [
    "COLOURS",
    "CREATURE_COLOURS",
    "IMAGE_FORMATS",
    "MIN_SIZE",
    "TEXTURES",
    "Creature",
    "colour_image",
    "creature",
    "creature_image",
    "creatures",
    "make_dataset",
    "make_images",
    "random_image",
    "set_rng",
    "texture_image",
    "texture_mask",
    "write_image_set",
]
