"""Image decoding, preprocessing and example sources (tiny images made in tmp_path)."""

from __future__ import annotations

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
        Preprocessing(size=(0, 4)),
    ],
)
def test_bad_preprocessing_is_config_error(prep: Preprocessing) -> None:
    with pytest.raises(ConfigError):
        preprocess([solid(RED)], prep)


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
