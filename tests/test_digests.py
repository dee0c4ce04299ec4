"""File digests remembered between runs: reused while a file is untouched, never after."""

from __future__ import annotations

import os
import time
from pathlib import Path

from PIL import Image

from tcavkit.examples import digests
from tcavkit.examples.base import Selection
from tcavkit.examples.digests import MEMO_NAME, remembered_digests
from tcavkit.examples.sources import ImageFolder


def folder_of(root: Path, n: int = 4) -> Path:
    folder = root / "set"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(folder / f"{i}.png")
    return folder


def fingerprint(folder: Path, cache: Path | None) -> str:
    with remembered_digests(cache) as memo:
        return (
            ImageFolder(folder).resolve("set", Selection(min_examples=1), digests=memo).fingerprint
        )


def counting(monkeypatch) -> list[Path]:
    hashed: list[Path] = []
    real = digests.file_sha256

    def count(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(digests, "file_sha256", count)
    return hashed


def test_a_second_resolve_hashes_nothing_and_gives_the_same_fingerprint(tmp_path, monkeypatch):
    folder, cache = folder_of(tmp_path), tmp_path / "cache"
    monkeypatch.setattr(digests, "RACY_SECONDS", -60.0)  # the files were just written
    hashed = counting(monkeypatch)
    first = fingerprint(folder, cache)
    assert len(hashed) == 4 and (cache / MEMO_NAME).exists()
    assert fingerprint(folder, cache) == first
    assert len(hashed) == 4  # nothing read again
    assert fingerprint(folder, None) == first  # the memo never changes a fingerprint


def test_a_just_written_file_is_not_remembered(tmp_path, monkeypatch):
    folder, cache = folder_of(tmp_path), tmp_path / "cache"
    hashed = counting(monkeypatch)
    fingerprint(folder, cache)
    fingerprint(folder, cache)
    assert len(hashed) == 8


def test_a_rewritten_file_is_hashed_again_even_with_its_old_size_and_time(tmp_path, monkeypatch):
    folder, cache = folder_of(tmp_path), tmp_path / "cache"
    monkeypatch.setattr(digests, "RACY_SECONDS", -60.0)  # remember even fresh files
    before = fingerprint(folder, cache)
    time.sleep(0.05)  # past the file system's clock tick
    target = folder / "1.png"
    stat = target.stat()
    other = folder / "2.png"
    data = other.read_bytes()
    assert len(data) == stat.st_size  # same-size images: a size check alone would miss it
    target.write_bytes(data)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old modification time
    assert fingerprint(folder, cache) != before
    assert fingerprint(folder, cache) == fingerprint(folder, None)


def test_a_damaged_memo_is_ignored(tmp_path):
    folder, cache = folder_of(tmp_path), tmp_path / "cache"
    cache.mkdir()
    (cache / MEMO_NAME).write_text("{not json")
    assert fingerprint(folder, cache) == fingerprint(folder, None)
    (cache / MEMO_NAME).write_text('{"x": 3}')
    assert fingerprint(folder, cache) == fingerprint(folder, None)
