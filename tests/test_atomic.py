"""atomic_write: unique temporary names, nothing left behind by a failed write."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tcavkit.atomic import atomic_write


def test_concurrent_writers_of_one_file_do_not_collide(tmp_path: Path) -> None:
    target = tmp_path / "runs.csv"

    def write(i: int) -> None:
        atomic_write(target, f"writer {i}\n" * 1000)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(200)))  # raises if any writer failed
    lines = target.read_text().splitlines()
    assert len(lines) == 1000 and len(set(lines)) == 1  # one writer's whole content, no mix
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.csv"
    atomic_write(target, "old\n")

    def fail(handle) -> None:
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_bytes_text_and_writer_functions(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a", b"\x00\x01")
    atomic_write(tmp_path / "b", "é")
    atomic_write(tmp_path / "c", lambda handle: handle.write(b"xyz"))
    assert (tmp_path / "a").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "c").read_bytes() == b"xyz"
    assert (tmp_path / "c").stat().st_mode & 0o777 != 0o600  # a plain file's permissions


def test_remove_temporaries_removes_only_atomic_writes_leftovers(tmp_path: Path) -> None:
    from tcavkit.atomic import remove_temporaries

    ours = tmp_path / ".tmp-runs.csv.k3_9a0zq.tmp"
    others = [tmp_path / ".tmp-runs.csv", tmp_path / "x.tmp", tmp_path / ".tmp-a.ABCDEFGH.tmp"]
    for path in [ours, *others]:
        path.write_text("x")
    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path, target_is_directory=True)
    assert remove_temporaries(linked) == []  # never through a link
    assert ours.exists()
    assert remove_temporaries(tmp_path) == [ours]
    assert all(path.exists() for path in others)
    assert remove_temporaries(tmp_path / "missing") == []
