"""Tests of the synthetic image generators and the dataset writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcavkit.demo.synthetic import (
    COLOURS,
    CREATURE_COLOURS,
    TEXTURES,
    colour_image,
    creature_image,
    make_dataset,
    make_images,
    texture_image,
    write_image_set,
)
from tcavkit.errors import ConfigError

ALL_KINDS = [*COLOURS, *TEXTURES, "random", *CREATURE_COLOURS]
CLASS_COLOURS = ("red", "green", "blue")


def _arrays(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).astype(np.float64)


def _near_fraction(arr: np.ndarray, colour: str, dist: float = 60.0) -> float:
    """Fraction of pixels within Euclidean RGB distance ``dist`` of ``COLOURS[colour]``."""
    d = np.linalg.norm(arr - np.asarray(COLOURS[colour], dtype=np.float64), axis=-1)
    return float((d < dist).mean())


def _hue(rgb: tuple[int, int, int]) -> float:
    """Hue in degrees, as PIL's HSV conversion computes it."""
    return float(np.asarray(Image.new("RGB", (1, 1), rgb).convert("HSV"))[0, 0, 0]) / 256 * 360


def _hue_bias(images: list[Image.Image]) -> tuple[float, float]:
    """Saturation-weighted circular mean of the pixel hues: (strength in [0, 1], degrees).

    Strength is |mean(s * e^{i*hue})| / mean(s): about 0 when hues are spread evenly around
    the colour wheel (no colour favoured), 1 when every saturated pixel has the same hue.
    """
    hsv = np.stack([np.asarray(im.convert("HSV")) for im in images]).astype(np.float64)
    hue = hsv[..., 0] / 256 * 2 * np.pi
    sat = hsv[..., 1] / 255
    z = (sat * np.exp(1j * hue)).mean() / sat.mean()
    return float(abs(z)), float(np.degrees(np.angle(z)) % 360)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_same_pixels_different_seed_different(kind: str) -> None:
    a = _arrays(make_images(kind, 3, (24, 24), np.random.default_rng(7)))
    b = _arrays(make_images(kind, 3, (24, 24), np.random.default_rng(7)))
    c = _arrays(make_images(kind, 3, (24, 24), np.random.default_rng(8)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", [(16, 16), (20, 33), (64, 48)])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_sizes_and_mode(kind: str, size: tuple[int, int]) -> None:
    images = make_images(kind, 2, size, np.random.default_rng(0))
    assert len(images) == 2
    for im in images:
        assert im.mode == "RGB"
        assert (im.height, im.width) == size


def test_too_small_size_is_config_error() -> None:
    with pytest.raises(ConfigError, match="too small"):
        colour_image("red", (15, 32), np.random.default_rng(0))


@pytest.mark.parametrize("colour", list(COLOURS))
def test_colour_image_mean_is_closest_to_its_colour(colour: str) -> None:
    rng = np.random.default_rng(1)
    palette = np.asarray(list(COLOURS.values()), dtype=np.float64)
    names = list(COLOURS)
    for im in make_images(colour, 10, (32, 32), rng):
        mean = np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0)
        assert names[int(np.linalg.norm(palette - mean, axis=1).argmin())] == colour


@pytest.mark.parametrize("kind", list(CREATURE_COLOURS))
def test_creature_body_colour_matches_class(kind: str) -> None:
    own = CREATURE_COLOURS[kind]
    others = [c for c in CLASS_COLOURS if c != own]
    images = make_images(kind, 30, (32, 32), np.random.default_rng(2))
    for arr in _arrays(images):
        # the (textured) body covers about a third of the image; its plain part is near the
        # class colour, while the background avoids all three class colours
        assert _near_fraction(arr, own) > 0.1
        for other in others:
            assert _near_fraction(arr, other) < 0.02
    strength, hue = _hue_bias(images)  # positive control for the texture check below
    assert strength > 0.3
    assert _angle_diff(hue, _hue(COLOURS[own])) < 30


@pytest.mark.parametrize("kind", [*TEXTURES, "random"])
def test_textures_and_random_images_favour_no_colour(kind: str) -> None:
    # Colours are uniform in the RGB cube, so pixel hues spread evenly over the colour wheel:
    # the saturation-weighted mean hue vector is near zero (creature sets give > 0.3) ...
    images = make_images(kind, 200, (24, 24), np.random.default_rng(3))
    strength, _ = _hue_bias(images)
    assert strength < 0.15
    # ... and the mean colour is grey: per-image means vary by ~55 per channel, so the mean
    # of 200 images has a standard error of ~4; 15 is ~4 standard errors.
    mean = _arrays(images).mean(axis=(0, 1, 2))
    assert np.all(np.abs(mean - 127.5) < 15)


def test_texture_image_uses_two_contrasting_colours() -> None:
    rng = np.random.default_rng(4)
    for texture in TEXTURES:
        arr = np.asarray(texture_image(texture, (32, 32), rng), dtype=np.float64)
        assert arr.reshape(-1, 3).std(0).max() > 25  # a visible pattern, not a flat fill


def test_make_dataset_layout_and_counts(tmp_path: Path) -> None:
    folders = make_dataset(
        tmp_path, size=(20, 20), n_per_set=4, n_random_sets=3, concepts=("red", "striped")
    )
    expected = ["fire", "water", "grass", "red", "striped", *(f"random500_{i}" for i in range(3))]
    assert list(folders) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    for name, folder in folders.items():
        assert folder == tmp_path / name
        files = sorted(folder.glob("*.png"))
        assert len(files) == 4
        with Image.open(files[0]) as im:
            assert im.size == (20, 20) and im.mode == "RGB"


def _pixels(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_make_dataset_deterministic_and_order_independent(tmp_path: Path) -> None:
    kw = {"size": (20, 20), "n_per_set": 3, "n_random_sets": 2, "targets": ("fire",)}
    a = make_dataset(tmp_path / "a", concepts=("red", "blue"), **kw)
    b = make_dataset(tmp_path / "b", concepts=("blue",), **kw)
    c = make_dataset(tmp_path / "c", concepts=("blue",), seed=1, **kw)
    for name in ("fire", "blue", "random500_0", "random500_1"):
        assert np.array_equal(_pixels(a[name]), _pixels(b[name]))
        assert not np.array_equal(_pixels(a[name]), _pixels(c[name]))
    assert not np.array_equal(_pixels(a["random500_0"]), _pixels(a["random500_1"]))


def test_make_dataset_rerun_removes_stale_files(tmp_path: Path) -> None:
    make_dataset(tmp_path, size=(16, 16), n_per_set=5, n_random_sets=0, concepts=())
    (tmp_path / "fire" / "mine.txt").write_text("keep")
    make_dataset(tmp_path, size=(16, 16), n_per_set=2, n_random_sets=0, concepts=())
    assert len(list((tmp_path / "fire").glob("*.png"))) == 2
    assert (tmp_path / "fire" / "mine.txt").exists()


def test_random_sets_are_statistically_alike(tmp_path: Path) -> None:
    folders = make_dataset(
        tmp_path, size=(32, 32), n_per_set=100, n_random_sets=2, concepts=(), targets=()
    )
    m0 = _pixels(folders["random500_0"]).astype(np.float64)
    m1 = _pixels(folders["random500_1"]).astype(np.float64)
    # per-image channel means vary by ~55, so a difference of two 100-image means has a
    # standard error of ~8; 30 is ~4 standard errors
    assert np.all(np.abs(m0.mean(axis=(0, 1, 2)) - m1.mean(axis=(0, 1, 2))) < 30)
    assert abs(m0.std() - m1.std()) < 10


def test_write_image_set_names_and_formats(tmp_path: Path) -> None:
    images = make_images("dotted", 3, (16, 16), np.random.default_rng(0))
    paths = write_image_set(tmp_path / "x", images, prefix="dot", fmt="jpg")
    assert [p.name for p in paths] == ["dot_0000.jpg", "dot_0001.jpg", "dot_0002.jpg"]
    assert all(p.is_file() for p in paths)
    with pytest.raises(ConfigError, match="tiff"):
        write_image_set(tmp_path / "y", images, fmt="tiff")


def test_unknown_kind_is_config_error_listing_valid_kinds() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError) as info:
        make_images("tartan", 1, (16, 16), rng)
    message = str(info.value)
    assert "tartan" in message
    assert all(k in message for k in ALL_KINDS)
    with pytest.raises(ConfigError, match=r"'magenta'.*red"):
        colour_image("magenta", (16, 16), rng)
    with pytest.raises(ConfigError, match=r"'ice'.*fire"):
        creature_image("ice", (16, 16), rng)


def test_make_dataset_rejects_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tartan"):
        make_dataset(tmp_path, concepts=("tartan",))
    with pytest.raises(ConfigError, match="red"):
        make_dataset(tmp_path, targets=("red",))
    with pytest.raises(ConfigError, match="repeated: fire"):
        make_dataset(tmp_path, concepts=("fire",))
    assert not any(tmp_path.iterdir())  # nothing written before validation
