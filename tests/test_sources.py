"""Image decoding, preprocessing and example sources (tiny images made in tmp_path)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tcavkit.errors import ConfigError, DataError, TcavWarning, TooFewExamplesError
from tcavkit.examples import sources
from tcavkit.examples.base import Selection
from tcavkit.examples.images import (
    IMAGE_EXTENSIONS,
    UnreadableImage,
    decode_image,
    is_image_file,
    preprocess,
)
from tcavkit.examples.sources import (
    ImageFolder,
    SequenceSource,
    TensorSource,
    as_source,
    stable_order,
)
from tcavkit.options import Preprocessing

RED = (220, 20, 30)


def solid(color: tuple[int, ...], size: tuple[int, int] = (6, 4), mode: str = "RGB") -> Image.Image:
    """A one-colour image; ``size`` is (width, height) as PIL has it."""
    return Image.new(mode, size, color)


def make_folder(root: Path, n: int, size: tuple[int, int] = (6, 4)) -> Path:
    """``n`` PNGs of distinct colours: pixel (i, 2i, 3i) * 8 for file i."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        solid((8 * i, 16 * i % 256, 24 * i % 256), size).save(root / f"img_{i:02d}.png")
    return root


def stored(path: Path) -> tuple[str, tuple[int, int], int]:
    """Mode, size and frame count of a file as Pillow opens it (file closed after)."""
    with Image.open(path) as img:
        return img.mode, img.size, getattr(img, "n_frames", 1)


def first_pixels(batch: torch.Tensor) -> list[tuple[int, int, int]]:
    """Pixel (0, 0) of each image of a (n, 3, H, W) batch in [0, 1], as 8-bit tuples."""
    values = torch.round(batch[:, :, 0, 0] * 255).to(torch.int64).tolist()
    return [tuple(v) for v in values]


SEL = Selection(max_examples=None, min_examples=1, seed=0)
PREP = Preprocessing()


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("ext", ["jpg", "jpeg", "png", "bmp", "webp", "gif", "JPG", "PNG"])
def test_every_format_decodes_to_rgb(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    solid(RED, (10, 7)).save(path)
    img = decode_image(path)
    assert img.mode == "RGB" and img.size == (10, 7)
    assert np.abs(np.asarray(img, dtype=int)[3, 3] - RED).max() <= 12  # lossy formats
    assert is_image_file(path)


def test_extensions_and_hidden_files() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"} <= IMAGE_EXTENSIONS
    assert not is_image_file("notes.txt")
    assert not is_image_file(".DS_Store")
    assert not is_image_file("._photo.jpg")


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert stored(path)[2] == 2
    assert tuple(np.asarray(decode_image(path))[0, 0]) == (255, 0, 0)


def test_animated_webp_uses_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.webp"
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    assert tuple(np.asarray(decode_image(path))[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent -> white
        ("LA", (0, 0), (255, 255, 255)),
        ("LA", (40, 255), (40, 40, 40)),
    ],
)
def test_modes_become_rgb(tmp_path: Path, mode: str, color: object, expected: tuple) -> None:
    path = tmp_path / "m.png"
    solid(color, mode=mode).save(path)  # type: ignore[arg-type]
    img = decode_image(path)
    assert img.mode == "RGB"
    assert tuple(np.asarray(img)[0, 0]) == expected


def test_half_transparent_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    solid((0, 0, 0, 128), mode="RGBA").save(path)
    value = np.asarray(decode_image(path)).astype(int)[0, 0]
    assert np.all(np.abs(value - 127) <= 1)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    rgb = Image.new("RGB", (4, 4), (0, 128, 0))
    rgb.putpixel((0, 0), (200, 0, 0))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    assert tuple(np.asarray(decode_image(tmp_path / "p.png"))[0, 0]) == (200, 0, 0)
    red_index = pal.getpixel((0, 0))
    pal.save(tmp_path / "pt.png", transparency=red_index)
    pal.save(tmp_path / "pt.gif", transparency=red_index)
    for name in ("pt.png", "pt.gif"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no Pillow palette-transparency warning
            img = decode_image(tmp_path / name)
        assert tuple(np.asarray(img)[0, 0]) == (255, 255, 255)
        assert tuple(np.asarray(img)[1, 1]) == (0, 128, 0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    solid((0, 255, 255, 0), mode="CMYK").save(path)
    img = decode_image(path)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).astype(int)[2, 2]
    assert r > 200 and g < 50 and b < 50


def test_sixteen_bit_grayscale_is_scaled_not_saturated(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    values = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert stored(path)[0].startswith("I")
    img = decode_image(path)
    assert np.asarray(img)[0, :, 0].tolist() == [0, 128, 255, 4]
    batch = preprocess([img], PREP)
    assert batch[0, 0, 0, 1].item() == pytest.approx(0.5, abs=0.01)
    assert batch[0, :, 0, 2].tolist() == [1.0, 1.0, 1.0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    solid(RED, (40, 20)).save(path, exif=exif)
    assert stored(path)[1] == (40, 20)
    assert decode_image(path).size == (20, 40)


def test_size_hint_decodes_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    solid(RED, (1600, 1000)).save(path, exif=exif)
    assert decode_image(path).size == (1000, 1600)
    small = decode_image(path, size_hint=(100, 120))
    assert small.size == (125, 200)  # 1/8 scale, then rotated; both sides >= 120
    assert np.abs(np.asarray(small, dtype=int)[50, 50] - RED).max() <= 12


@pytest.mark.parametrize("payload", [b"", b"not an image at all", bytes(range(256)) * 8])
def test_garbage_raises_unreadable(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(payload)
    with pytest.raises(UnreadableImage, match=r"x\.jpg"):
        decode_image(path)


def test_truncated_png_raises_unreadable(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UnreadableImage, match=r"cut\.png"):
        decode_image(cut)


# ------------------------------------------------------------------------ preprocessing


def test_value_range_minus_one_to_one() -> None:
    batch = preprocess([solid((0, 255, 51))], Preprocessing(value_range=(-1.0, 1.0)))
    assert batch.dtype == torch.float32 and batch.shape == (1, 3, 4, 6)
    assert batch[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, -0.6])


def test_mean_std_normalisation_by_hand() -> None:
    prep = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 0.1))
    batch = preprocess([solid((255, 102, 0))], prep)
    # (1.0 - 0.5) / 0.25 = 2;  (0.4 - 0.4) / 0.5 = 0;  (0 - 0.3) / 0.1 = -3
    assert batch[0, :, 2, 3].tolist() == pytest.approx([2.0, 0.0, -3.0], abs=1e-6)


def test_single_mean_std_broadcast() -> None:
    prep = Preprocessing(value_range=(0.0, 255.0), mean=(100.0,), std=(50.0,))
    batch = preprocess([solid((200, 100, 0))], prep)
    assert batch[0, :, 0, 0].tolist() == pytest.approx([2.0, 0.0, -2.0])


@pytest.mark.parametrize(
    "prep",
    [
        Preprocessing(mean=(0.5, 0.5)),
        Preprocessing(std=(1.0, 1.0, 1.0, 1.0)),
        Preprocessing(std=(0.0,)),
        Preprocessing(value_range=(1.0, 1.0)),
    ],
)
def test_bad_preprocessing_is_config_error(prep: Preprocessing) -> None:
    with pytest.raises(ConfigError):
        preprocess([solid(RED)], prep)


def test_a_size_out_of_range_is_refused_when_made() -> None:
    with pytest.raises(ConfigError, match=r"model\.input\.size .* from 1 to 4096"):
        Preprocessing(size=(0, 4))


def test_resize_and_channels_last() -> None:
    images = [solid(RED, (6, 4)), solid(RED, (9, 5))]
    assert preprocess(images, Preprocessing(size=(8, 12))).shape == (2, 3, 8, 12)
    last = preprocess(images, Preprocessing(size=(8, 12), channels_last=True))
    assert last.shape == (2, 8, 12, 3) and last.is_contiguous()
    assert last[1, 3, 5].tolist() == pytest.approx([c / 255 for c in RED], abs=1e-6)


def test_different_sizes_without_size_name_the_file() -> None:
    images = [solid(RED, (6, 4)), solid(RED, (6, 4)), solid(RED, (9, 5))]
    with pytest.raises(DataError, match=r"c\.png.*size"):
        preprocess(images, PREP, names=["a.png", "b.png", "c.png"])


def test_folder_of_mixed_sizes_needs_a_size(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 2)
    solid(RED, (9, 9)).save(folder / "big.png")
    chosen = ImageFolder(folder).resolve("c", SEL)
    with pytest.raises(DataError, match=r"big\.png"):
        chosen.load(PREP)
    assert chosen.load(Preprocessing(size=(5, 5))).shape == (3, 3, 5, 5)


# ------------------------------------------------------------------------- image folder


def test_folder_loads_images_only(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "stripes", 3)
    (folder / "notes.txt").write_text("hi")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / ".hidden.png").write_bytes(b"junk")
    (folder / "sub.png").mkdir()
    make_folder(folder / "nested", 2)
    chosen = ImageFolder(folder).resolve("stripes", SEL)
    batch = chosen.load(PREP)
    assert batch.shape == (3, 3, 4, 6) and batch.dtype == torch.float32
    assert sorted(first_pixels(batch)) == [(0, 0, 0), (8, 16, 24), (16, 32, 48)]
    assert chosen.description == str(folder) and chosen.name == "stripes"
    assert chosen.skipped == []


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'red'.*red.*does not exist") as info:
        ImageFolder(tmp_path / "red").resolve("red", SEL)
    assert not isinstance(info.value, TooFewExamplesError)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"'empty'.*no image files"):
        ImageFolder(empty).resolve("empty", SEL)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        ImageFolder(tmp_path / "file.png").resolve("f", SEL)


def test_too_few_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "dots", 3)
    with pytest.raises(
        TooFewExamplesError, match=r"'dots'.*3 image files.*at least 5.*examples\.min"
    ):
        ImageFolder(folder).resolve("dots", Selection(min_examples=5))


def test_corrupt_file_is_skipped_with_warning(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 4)
    (folder / "x.jpg").write_bytes(np.random.default_rng(1).bytes(300))
    chosen = ImageFolder(folder).resolve("c", SEL)
    with pytest.warns(TcavWarning, match=r"skipped.*x\.jpg"):
        batch = chosen.load(PREP)
    assert batch.shape[0] == 4
    assert chosen.skipped == [str(folder / "x.jpg")]


def test_unreadable_files_are_replaced_up_to_max(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 6)
    for name in ("bad1.png", "bad2.jpg", "bad3.gif"):
        (folder / name).write_bytes(b"garbage")
    chosen = ImageFolder(folder).resolve("c", Selection(max_examples=5, min_examples=5, seed=3))
    with pytest.warns(TcavWarning):
        batch = chosen.load(PREP)
    assert batch.shape[0] == 5
    used = [f for f in chosen.files if not f.startswith("bad")][:5]
    expected = [(8 * int(f[4:6]), 16 * int(f[4:6]), 24 * int(f[4:6])) for f in used]
    assert first_pixels(batch) == expected  # the seeded order, unreadable files skipped


def test_only_corrupt_files_is_too_few(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"nope" * i)
    chosen = ImageFolder(folder).resolve("broken", Selection(min_examples=2))
    with (
        pytest.warns(TcavWarning),
        pytest.raises(TooFewExamplesError, match=r"broken.*3 unreadable.*at least 2"),
    ):
        chosen.load(PREP)
    assert len(chosen.skipped) == 3


def test_selection_is_deterministic_and_seeded(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 10)
    source = ImageFolder(folder)
    sel = Selection(max_examples=4, min_examples=2, seed=0)
    a, b = source.resolve("c", sel), source.resolve("c", sel)
    assert a.fingerprint == b.fingerprint and a.files == b.files
    assert torch.equal(a.load(PREP), b.load(PREP))
    other = source.resolve("c", Selection(max_examples=4, min_examples=2, seed=1))
    assert other.fingerprint != a.fingerprint
    assert set(first_pixels(other.load(PREP))) != set(first_pixels(a.load(PREP)))
    renamed = source.resolve("d", sel)
    assert renamed.fingerprint != a.fingerprint and renamed.files != a.files
    assert sorted(a.files) == sorted(f.name for f in folder.iterdir())


def test_stable_order_is_fixed_across_runs() -> None:
    # Pinned: the order must not depend on Python's hash() or library versions.
    keys = [f"f{i}.png" for i in range(6)]
    assert stable_order(keys, 0, "red") == stable_order(list(keys), 0, "red")
    assert sorted(stable_order(keys, 0, "red")) == list(range(6))
    assert stable_order(keys, 0, "red") == [5, 0, 2, 4, 1, 3]


def test_fingerprint_tracks_file_contents(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 4)
    source = ImageFolder(folder)
    sel = Selection(max_examples=2, min_examples=1)
    base = source.resolve("c", sel).fingerprint
    assert source.resolve("c", Selection(max_examples=3, min_examples=1)).fingerprint != base
    solid((1, 2, 3)).save(folder / "img_03.png")  # same name, same size, new bytes
    changed = source.resolve("c", sel).fingerprint
    assert changed != base
    solid((9, 9, 9)).save(folder / "img_99.png")
    added = source.resolve("c", sel).fingerprint
    assert added != changed
    (folder / "img_99.png").unlink()
    assert source.resolve("c", sel).fingerprint == changed
    (folder / "notes.txt").write_text("ignored")
    assert source.resolve("c", sel).fingerprint == changed


def test_fingerprint_does_not_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "c", 3)

    def boom(path: object) -> None:
        raise AssertionError("decoded during resolve")

    monkeypatch.setattr(sources, "decode_image", boom)
    monkeypatch.setattr(Image, "open", boom)
    assert len(ImageFolder(folder).resolve("c", SEL).fingerprint) == 64


@pytest.mark.parametrize("change", ["edit", "remove", "corrupt"])
def test_a_file_changed_after_resolve_is_an_error_naming_it(tmp_path: Path, change: str) -> None:
    """The bytes decoded must be those the fingerprint was made of: an image edited,
    removed or damaged between resolve and load is refused, not decoded (or skipped) under
    the fingerprint of its old content."""
    folder = make_folder(tmp_path / "c", 3)
    resolved = ImageFolder(folder).resolve("c", SEL)
    victim = folder / resolved.files[1]
    if change == "edit":
        Image.new("RGB", (8, 8), (1, 2, 3)).save(victim)
    elif change == "remove":
        victim.unlink()
    else:
        victim.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"'c': file {victim} changed during the run"):
        resolved.load(Preprocessing(size=(8, 8)))


def test_fingerprint_independent_of_folder_location(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a" / "c", 3)
    b = make_folder(tmp_path / "b" / "c", 3)
    assert (
        ImageFolder(a).resolve("c", SEL).fingerprint == ImageFolder(b).resolve("c", SEL).fingerprint
    )


def test_folder_load_with_preprocessing(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 3, size=(7, 5))
    prep = Preprocessing(size=(4, 4), value_range=(-1.0, 1.0), channels_last=True)
    batch = ImageFolder(folder, num_workers=2).resolve("c", SEL).load(prep)
    assert batch.shape == (3, 4, 4, 3)
    assert batch.min() >= -1.0 and batch.max() <= 1.0


@pytest.mark.parametrize("limits", [{"max_examples": 0}, {"max_examples": 3, "min_examples": 5}])
def test_bad_selection_is_config_error(limits: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="examples.max"):
        Selection(**limits)


# ----------------------------------------------------------------------- tensor sources


def test_tensor_source_selection_and_fingerprint() -> None:
    data = np.arange(40, dtype=np.float64).reshape(20, 2)
    source = TensorSource(data)
    sel = Selection(max_examples=5, min_examples=2, seed=0)
    chosen = source.resolve("t", sel)
    rows = chosen.load(PREP)
    assert rows.dtype == torch.float32 and rows.shape == (5, 2)
    assert list(chosen.indices) == sorted(chosen.indices)
    assert torch.equal(rows, torch.as_tensor(data[list(chosen.indices)], dtype=torch.float32))
    assert source.resolve("t", sel).fingerprint == chosen.fingerprint
    assert source.resolve("t", Selection(5, 2, seed=1)).indices != chosen.indices
    assert TensorSource(torch.as_tensor(data)).resolve("t", sel).indices == chosen.indices

    edited = data.copy()
    edited[chosen.indices[0], 1] += 1
    assert TensorSource(edited).resolve("t", sel).fingerprint != chosen.fingerprint
    unused = next(i for i in range(20) if i not in chosen.indices)
    edited = data.copy()
    edited[unused] += 1  # a row that is not chosen does not change the examples
    assert TensorSource(edited).resolve("t", sel).fingerprint == chosen.fingerprint
    assert TensorSource(data.astype(np.float32)).resolve("t", sel).fingerprint != chosen.fingerprint


def test_tensor_source_keeps_integers_and_ignores_preprocessing() -> None:
    tokens = torch.arange(12).reshape(4, 3)
    chosen = TensorSource(tokens).resolve("ids", Selection(min_examples=1))
    out = chosen.load(Preprocessing(value_range=(-1.0, 1.0), mean=(0.5,), std=(0.5,)))
    assert torch.equal(out, tokens)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), 1e300])
def test_tensor_and_sequence_sources_refuse_non_finite_rows(bad: float) -> None:
    data = np.zeros((6, 2))
    data[4, 1] = bad  # 1e300 is finite in float64 but infinite as the float32 the model gets
    with pytest.raises(DataError, match=r"example set 't': row 4 of the tensor holds (nan|-?inf)"):
        TensorSource(data).resolve("t", Selection(min_examples=1))
    with pytest.raises(DataError, match=r"row 4 of the tensor"):
        TensorSource(torch.as_tensor(data)).resolve("t", Selection(min_examples=1))
    items = [torch.as_tensor(row) for row in data]
    with pytest.raises(DataError, match=r"example set 's': row 4 of the sequence holds"):
        SequenceSource(items).resolve("s", Selection(min_examples=1)).load(PREP)
    collated = SequenceSource(list(range(6)), collate=lambda xs: data[xs], fingerprint="v1")
    with pytest.raises(DataError, match=r"row 4 of the sequence \(after collate\)"):
        collated.resolve("s", Selection(min_examples=1)).load(PREP)
    assert TensorSource(np.arange(6)).resolve("t", Selection(min_examples=1)).load(PREP).shape == (
        6,
    )


def test_tensor_source_errors() -> None:
    with pytest.raises(TooFewExamplesError, match=r"'t'.*3 examples.*at least 10"):
        TensorSource(torch.zeros(3, 2)).resolve("t", Selection())
    with pytest.raises(ConfigError):
        TensorSource([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TensorSource(torch.tensor(1.0))


# --------------------------------------------------------------------- sequence sources


def test_sequence_of_tensors_is_stacked() -> None:
    items = [torch.full((2, 2), float(i), dtype=torch.float64) for i in range(8)]
    sel = Selection(max_examples=3, min_examples=1, seed=4)
    chosen = SequenceSource(items).resolve("s", sel)
    out = chosen.load(PREP)
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    assert out[:, 0, 0].tolist() == [float(i) for i in chosen.indices]
    assert SequenceSource(list(items)).resolve("s", sel).fingerprint == chosen.fingerprint
    items[chosen.indices[1]] = items[chosen.indices[1]] + 1
    assert SequenceSource(items).resolve("s", sel).fingerprint != chosen.fingerprint


def test_sequence_of_pil_images_is_preprocessed() -> None:
    items = [solid((i, i, i), (5, 5)) for i in range(4)]
    chosen = SequenceSource(items).resolve("s", SEL)
    out = chosen.load(Preprocessing(size=(3, 3)))
    assert out.shape == (4, 3, 3, 3)
    other = SequenceSource([*items[:3], solid((9, 9, 9), (5, 5))]).resolve("s", SEL)
    assert other.fingerprint != chosen.fingerprint


def test_sequence_of_other_items_needs_fingerprint_and_collate() -> None:
    words = ["a", "bb", "ccc", "dddd"]
    with pytest.raises(ConfigError, match="fingerprint="):
        SequenceSource(words, collate=lambda xs: torch.zeros(len(xs))).resolve("w", SEL)
    with pytest.raises(ConfigError, match="collate="):
        SequenceSource(words, fingerprint="words-v1").resolve("w", SEL)

    def lengths(xs: list[str]) -> torch.Tensor:
        return torch.tensor([[len(x)] for x in xs], dtype=torch.float64)

    source = SequenceSource(words, collate=lengths, fingerprint="words-v1")
    chosen = source.resolve("w", SEL)
    out = chosen.load(PREP)
    assert out.dtype == torch.float32 and out[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    v2 = SequenceSource(words, collate=lengths, fingerprint="words-v2").resolve("w", SEL)
    assert v2.fingerprint != chosen.fingerprint

    bad = SequenceSource(words, collate=lambda xs: torch.zeros(2), fingerprint="x")
    with pytest.raises(ConfigError, match="first dimension"):
        bad.resolve("w", SEL).load(PREP)


def test_sequence_errors() -> None:
    with pytest.raises(ConfigError, match="mixes"):
        SequenceSource([solid(RED), torch.zeros(3)]).resolve("m", SEL)
    with pytest.raises(TooFewExamplesError):
        SequenceSource([torch.zeros(1)]).resolve("m", Selection(min_examples=2))
    with pytest.raises(DataError, match="item 1"):
        SequenceSource([torch.zeros(2), torch.zeros(3)]).resolve("m", SEL).load(PREP)


# ---------------------------------------------------------------------------- as_source


def test_as_source_dispatch(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path)
    assert as_source(folder) is folder
    assert isinstance(as_source(str(tmp_path)), ImageFolder)
    assert isinstance(as_source(tmp_path), ImageFolder)
    assert isinstance(as_source(torch.zeros(3, 2)), TensorSource)
    assert isinstance(as_source(np.zeros((3, 2))), TensorSource)
    assert isinstance(as_source([torch.zeros(2)]), SequenceSource)
    assert isinstance(as_source((torch.zeros(2),)), SequenceSource)
    with pytest.raises(ConfigError, match="dict"):
        as_source({"a": 1})


# ------------------------------------------------------------------ huge images, symlinks


def old_pipeline(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode and resize the way tcavkit did before large images were shrunk first:
    JPEG draft, EXIF orientation, RGB (alpha on white), one bilinear resize."""
    from PIL import ImageOps

    from tcavkit.examples.images import resize_image, to_rgb

    with Image.open(path) as img:
        img.seek(0)
        img.draft(None, (max(size), max(size)))
        img.load()
        oriented = ImageOps.exif_transpose(img)
    return np.asarray(resize_image(to_rgb(oriented), size), dtype=np.uint8)


def noise_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Random pixels (``size`` = (width, height)) in ``mode``."""
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(32)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16))
    return rgba.convert(mode)


@pytest.mark.parametrize(
    ("mode", "ext"),
    [("RGB", "png"), ("RGBA", "png"), ("L", "png"), ("LA", "png"), ("P", "png"),
     ("I;16", "png"), ("RGB", "jpg"), ("L", "jpg"), ("RGBA", "webp"), ("P", "gif")],
)  # fmt: skip
@pytest.mark.parametrize("orientation", [1, 6])
def test_normal_size_images_decode_bit_identical(
    tmp_path: Path, mode: str, ext: str, orientation: int
) -> None:
    # Images less than 4x the target in some dimension take the exact path, unchanged.
    folder = tmp_path / "c"
    folder.mkdir()
    shapes = [(50, 40), (127, 95), (30, 130), (12, 12), (300, 100)]
    for i, shape in enumerate(shapes):
        exif = Image.Exif()
        if orientation != 1 and ext != "gif":
            exif[0x0112] = orientation
        noise_image(mode, shape, i).save(folder / f"img_{i}.{ext}", exif=exif)
    size = (32, 32)
    prep = Preprocessing(size=size, channels_last=True)
    chosen = ImageFolder(folder, num_workers=3).resolve("c", SEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TcavWarning)  # 300x100 has 29x the pixels of 32x32
        batch = chosen.load(prep)
    expected = [old_pipeline(folder / name, size) for name in chosen.files]
    assert torch.equal(batch, sources.arrays_to_tensor(expected, prep))


def test_huge_image_is_shrunk_close_to_exact_resize_and_rotated(tmp_path: Path) -> None:
    # 8x the target: shrunk 4x (box filter), then resized; EXIF rotation still applies.
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (8, 16, 3), np.uint8), np.ones((32, 32, 1), np.uint8))
    path = tmp_path / "big.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth).save(path, exif=exif)  # 512x256 stored, 256x512 displayed
    size = (64, 32)
    img = decode_image(path, size_hint=size)
    assert img.mode == "RGB" and img.size == (64, 128)
    exact = old_pipeline(path, size).astype(int)
    shrunk = np.asarray(sources.read_image(path, size).array, dtype=int)
    assert shrunk.shape == exact.shape == (64, 32, 3)
    assert np.abs(shrunk - exact).max() <= 8 and np.abs(shrunk - exact).mean() < 1.0


def test_huge_image_loads_with_one_warning_naming_it(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 3, size=(40, 40))
    Image.new("L", (6000, 6000), 90).save(folder / "huge.png")  # ~40 KB on disk
    assert (folder / "huge.png").stat().st_size < 200_000
    prep = Preprocessing(size=(32, 32))
    chosen = ImageFolder(folder, num_workers=4).resolve("c", SEL)
    with pytest.warns(TcavWarning) as record:
        batch = chosen.load(prep)
    assert batch.shape == (4, 3, 32, 32)
    assert not chosen.skipped
    row = list(chosen.files).index("huge.png")
    assert torch.allclose(batch[row], torch.full((3, 32, 32), 90 / 255))
    messages = [str(w.message) for w in record if issubclass(w.category, TcavWarning)]
    assert len(messages) == 1
    assert str(folder / "huge.png") in messages[0] and "6000x6000" in messages[0]
    assert "32x32" in messages[0]


def test_large_jpeg_decoded_at_reduced_scale_is_not_reported(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 2, size=(40, 40))
    solid(RED, (2000, 1600)).save(folder / "photo.jpg")  # decoded at 1/8: 250x200
    prep = Preprocessing(size=(64, 64))  # 250x200 has 12x its pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", TcavWarning)
        batch = ImageFolder(folder).resolve("c", SEL).load(prep)
    assert batch.shape == (3, 3, 64, 64)


def test_huge_images_are_decoded_one_at_a_time_and_shrunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcavkit.examples import images

    folder = make_folder(tmp_path / "c", 4, size=(40, 40))
    colors = {"L": 200, "P": 7, "RGB": (9, 99, 199), "RGBA": (9, 99, 199, 255)}
    for i, (mode, color) in enumerate(colors.items()):
        Image.new(mode, (3000, 3000), color).save(folder / f"huge_{i}.png")
    budget = images.PixelBudget(16_000_000)  # two 9-Mpixel images do not fit at once
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    resized: list[tuple[int, int]] = []
    resize = images.resize_image

    def recording_resize(img: Image.Image, size: tuple[int, int] | None) -> Image.Image:
        resized.append(img.size)
        return resize(img, size)

    monkeypatch.setattr(images, "resize_image", recording_resize)
    prep = Preprocessing(size=(32, 32))
    with pytest.warns(TcavWarning, match="huge_"):
        batch = ImageFolder(folder, num_workers=8).resolve("c", SEL).load(prep)
    assert batch.shape == (8, 3, 32, 32)
    assert 3000 * 3000 <= budget.peak < 2 * 3000 * 3000 and budget.held == 0
    assert max(w * h for w, h in resized) <= (4 * 32) ** 2  # shrunk before the resize


def test_pixel_budget_bounds_concurrent_holders() -> None:
    import threading
    import time

    from tcavkit.examples.images import PixelBudget

    budget = PixelBudget(10)
    inside: list[int] = []
    lock = threading.Lock()
    now = [0]

    def work(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                now[0] += pixels
                inside.append(now[0])
            time.sleep(0.01)
            with lock:
                now[0] -= pixels

    threads = [threading.Thread(target=work, args=(p,)) for p in [4, 4, 4, 25, 4, 1, 6]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert budget.held == 0 and budget.peak == 25  # the oversized one ran alone
    assert max(value for value in inside if value != 25) <= 10


DECODE_PEAK_SCRIPT = """
import resource, sys, warnings
from tcavkit.examples.base import Selection
from tcavkit.examples.sources import ImageFolder
from tcavkit.options import Preprocessing

prep = Preprocessing(size=(32, 32))
sel = Selection(max_examples=None, min_examples=1, seed=0)
ImageFolder(sys.argv[1], num_workers=6).resolve("warm", sel).load(prep)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ImageFolder(sys.argv[2], num_workers=6).resolve("big", sel).load(prep)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc, ru_maxrss in KiB")
def test_peak_memory_of_huge_images_stays_near_one_image(tmp_path: Path) -> None:
    # The rise of the process's peak resident memory while loading 4 huge greyscale PNGs
    # (25 MB each when decoded): decoded all at once, or each converted to RGB at full
    # size, they take 100 MB or more; one at a time and shrunk before conversion, about
    # 25 MB. The subprocess fixes glibc's mmap threshold so that freed image memory goes
    # back to the system at once: resident memory then follows what is alive, on any
    # number of cores, instead of what per-thread malloc arenas keep for reuse.
    side = 5000
    warm = make_folder(tmp_path / "warm", 2, size=(40, 40))
    big = make_folder(tmp_path / "big", 2, size=(40, 40))
    for i in range(4):
        Image.new("L", (side, side), 40 * i).save(big / f"huge_{i}.png")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", DECODE_PEAK_SCRIPT, str(warm), str(big)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    rise = int(out.stdout.split()[-1])
    one_image = side * side
    assert rise < 2 * one_image + 16 * 2**20, f"peak rose {rise / 2**20:.0f} MiB"


def test_symlink_loop_in_folder_is_skipped_with_warning(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "c", 3)
    os.symlink("loop.png", folder / "loop.png")  # points to itself: stat() fails (ELOOP)
    with pytest.warns(TcavWarning, match=r"skipped unreadable file .*loop\.png"):
        chosen = ImageFolder(folder).resolve("c", SEL)
    assert "loop.png" not in chosen.files and len(chosen.files) == 3
    assert chosen.load(PREP).shape == (3, 3, 4, 6)
    with pytest.warns(TcavWarning, match=r"loop\.png"):
        assert sources.list_image_files(folder) == ["img_00.png", "img_01.png", "img_02.png"]
