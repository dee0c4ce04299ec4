"""``tcavkit sort``'s files: named by concept, layer and sorted folder; captions on the sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from tcavkit.sorter import THUMBNAIL, SortResult, output_stem


def make_result(folder: Path, names: list[str]) -> SortResult:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, name in enumerate(names):
        path = folder / name
        Image.new("RGB", (20, 12), (40 * i % 256, 80, 120)).save(path)
        files.append(path)
    n = len(files)
    cosine = np.linspace(0.9, -0.9, n)
    return SortResult("red", "block2", files, cosine, cosine * 2)


def test_output_names_hold_concept_layer_and_folder(tmp_path: Path) -> None:
    assert output_stem("red", "block2", tmp_path / "holiday pics") == "sort-red-block2-holiday_pics"
    assert output_stem("red", "block2", tmp_path / "a") != output_stem("red", "block2", tmp_path)
    # An ONNX-style layer name stays one file name; "." is the folder it names.
    stem = output_stem("red", "/features/conv.1", tmp_path / "imgs")
    assert "/" not in stem and stem == "sort-red-features_conv.1-imgs"
    assert output_stem("red", "l", ".").endswith(f"-{Path.cwd().name}".replace(" ", "_"))


def test_contact_sheet_captions_name_the_files(tmp_path: Path, monkeypatch) -> None:
    names = [f"img_{i}.png" for i in range(5)]
    names[0] = "a_rather_long_file_name_that_cannot_fit_below_a_thumbnail_0123456789.png"
    result = make_result(tmp_path / "images", names)
    drawn: list[tuple[tuple[float, float], str]] = []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        drawn.append((tuple(xy), str(text)))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    sheet = result.write_contact_sheet(tmp_path / "out" / "sheet.png", 2)
    texts = [text for _, text in drawn]
    for name in ("img_1.png", "img_4.png", "img_3.png"):  # top 2 and bottom 2
        assert name in texts, texts
    long_caption = next(t for t in texts if t.startswith("a_rather"))
    assert "…" in long_caption and long_caption.endswith(".png")
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    assert draw.textlength(long_caption) <= THUMBNAIL
    # Each file name is drawn below its own thumbnail, under its rank and cosine.
    positions = {text: xy for xy, text in drawn}
    assert positions["img_1.png"][0] == positions["#2 +0.45"][0]
    assert positions["img_1.png"][1] > positions["#2 +0.45"][1] >= THUMBNAIL
    with Image.open(sheet) as image:
        assert image.size[0] > 2 * THUMBNAIL and image.size[1] > 2 * THUMBNAIL


def test_table_lists_every_file_by_rank(tmp_path: Path) -> None:
    result = make_result(tmp_path / "images", ["a.png", "b.png", "c.png"])
    path = result.write_csv(tmp_path / "out" / "sort.csv")
    table = pd.read_csv(path)
    assert list(table["rank"]) == [1, 2, 3]
    assert [Path(f).name for f in table["file"]] == ["a.png", "b.png", "c.png"]
    assert table["cosine"].tolist() == pytest.approx([0.9, 0.0, -0.9])
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]
