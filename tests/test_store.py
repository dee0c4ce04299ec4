"""The content-addressed array store: checksummed entries, verified once per process."""

import json
import os

import numpy as np
import pytest

import tcavkit.store as store_module
from tcavkit.errors import CacheError, TcavWarning
from tcavkit.store import INTEGRITY, ArrayStore, cache_key, scan


def test_keys_are_content_and_order_independent():
    a = cache_key(model="m", layer="l", examples="e")
    assert a == cache_key(layer="l", examples="e", model="m")
    assert a != cache_key(model="m2", layer="l", examples="e")
    assert len(a) == 64


def test_round_trip_is_memory_mapped_and_read_only(tmp_path):
    store = ArrayStore(tmp_path / "cache")
    key = cache_key(x=1)
    assert store.get(key) is None
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put(key, array, meta={"set": "red"})
    for reader in (store, ArrayStore(tmp_path / "cache")):  # this process, a fresh one
        loaded = reader.get(key)
        assert isinstance(loaded, np.memmap)
        np.testing.assert_array_equal(loaded, array)
        assert not loaded.flags.writeable
        meta = reader.get_meta(key)
        assert meta["set"] == "red"
        assert meta[INTEGRITY] == {"checksum": scan(array)[0], "shape": [3, 4], "dtype": "<f4"}
    # No temporary files are left behind.
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]


def test_half_precision_round_trip(tmp_path):
    store = ArrayStore(tmp_path)
    key = cache_key(x="half")
    array = np.array([[1e-3, -2.5], [300.0, 0.0]], dtype=np.float32)
    store.put(key, array, dtype="float16")
    np.testing.assert_allclose(ArrayStore(tmp_path).get_float32(key), array, rtol=1e-3)


def entry(tmp_path, array=None, meta=None):
    """A stored entry read by a fresh store: (store, key, array file)."""
    key = cache_key(x=str(tmp_path))
    ArrayStore(tmp_path).put(key, np.arange(8.0) if array is None else array, meta=meta)
    return ArrayStore(tmp_path), key, next(tmp_path.rglob(f"{key}.npy"))


def test_a_checksum_mismatch_is_a_miss_reported_once(tmp_path):
    store, key, path = entry(tmp_path)
    np.save(path, np.arange(8.0) * 2)  # a valid .npy file, other values
    with pytest.warns(TcavWarning, match="checksum mismatch") as caught:
        assert store.get(key) is None
        assert store.get(key) is None  # deleted: a plain miss from now on
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_flipped_bytes_are_a_miss(tmp_path):
    store, key, path = entry(tmp_path)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # one bit of the array's data
    path.write_bytes(bytes(data))
    with pytest.warns(TcavWarning, match="damaged"):
        assert store.get_float32(key) is None


def test_a_damaged_header_is_a_miss_and_is_removed(tmp_path):
    store, key, path = entry(tmp_path)
    path.write_bytes(b"not an npy file")
    with pytest.warns(TcavWarning, match="not a readable .npy file"):
        assert store.get(key) is None
    assert not path.exists()


def test_non_finite_values_are_a_miss_and_never_stored(tmp_path):
    store, key, path = entry(tmp_path)
    bad = np.arange(8.0)
    bad[3] = np.nan
    np.save(path, bad)  # with its checksum: only the finiteness test can tell
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta[INTEGRITY]["checksum"] = scan(bad)[0]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(TcavWarning, match="non-finite"):
        assert store.get(key) is None
    store.put(key, np.array([1.0, np.inf]))
    assert not path.exists() and store.get(key) is None
    store.put(key, np.array([1, 2], dtype=np.int64))  # not floats: nothing to test
    np.testing.assert_array_equal(ArrayStore(tmp_path).get(key), [1, 2])


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta_path: meta_path.unlink(),
        lambda meta_path: meta_path.write_text('{"set": "red", "arr'),
        lambda meta_path: meta_path.write_text('{"set": "red"}'),  # no checksum
        lambda meta_path: meta_path.write_text("[1, 2]"),
    ],
    ids=["missing", "truncated", "no-checksum", "not-a-dict"],
)
def test_an_array_without_valid_metadata_is_a_miss(tmp_path, damage):
    store, key, path = entry(tmp_path, meta={"set": "red", "skipped": ["a.png"]})
    damage(path.with_suffix(".json"))
    with pytest.warns(TcavWarning, match="metadata"):
        assert store.get(key) is None
    assert store.get_meta(key) == {} and not path.exists()


def test_metadata_without_its_array_is_a_silent_miss(tmp_path):
    # A write interrupted between the metadata and the array.
    store, key, path = entry(tmp_path)
    path.unlink()
    assert store.get(key) is None and store.get_meta(key) == {}


def test_a_mismatched_shape_is_a_miss(tmp_path):
    store, key, path = entry(tmp_path)
    np.save(path, np.arange(8.0).reshape(2, 4))
    with pytest.warns(TcavWarning, match="shape"):
        assert store.get(key) is None


def test_an_unchanged_entry_is_verified_once_per_store(tmp_path, monkeypatch):
    calls = []

    def counting_scan(array):
        calls.append(array.shape)
        return scan(array)

    monkeypatch.setattr(store_module, "scan", counting_scan)
    store, key, path = entry(tmp_path)
    calls.clear()
    for _ in range(3):
        assert store.get(key) is not None
        assert store.get(key, writable_copy=True) is not None
        assert store.get_float32(key) is not None
        assert store.get_meta(key)[INTEGRITY]
    assert len(calls) == 1
    # A file that changes is verified again.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert store.get(key) is not None
    assert len(calls) == 2
    # What a store wrote itself is not hashed again when read.
    writer = ArrayStore(tmp_path)
    writer.put(cache_key(y=1), np.ones(4))
    calls.clear()
    assert writer.get(cache_key(y=1)) is not None
    assert calls == []


@pytest.mark.parametrize("failing", [".json", ".npy"])
def test_a_failed_write_leaves_nothing_and_raises_cache_error(tmp_path, monkeypatch, failing):
    real = store_module.atomic_write

    def full_disk(path, content):
        if not str(path).endswith(failing):
            return real(path, content)

        def write(handle):
            handle.write(b"partial")
            raise OSError(28, "No space left on device")

        return real(path, write)

    monkeypatch.setattr(store_module, "atomic_write", full_disk)
    store = ArrayStore(tmp_path)
    with pytest.raises(CacheError, match="No space left"):
        store.put(cache_key(x=3), np.ones(3), meta={"set": "red"})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert store.get(cache_key(x=3)) is None


def test_disabled_store_keeps_nothing(tmp_path):
    store = ArrayStore(None)
    store.put("k", np.ones(3))
    assert store.get("k") is None
    assert store.get_meta("k") == {}
