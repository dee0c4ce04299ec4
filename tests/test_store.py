"""The content-addressed array store."""

import numpy as np

from tcavkit.store import ArrayStore, cache_key


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
    loaded = store.get(key)
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, array)
    assert not loaded.flags.writeable
    # No temporary files are left behind.
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]


def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path):
    store = ArrayStore(tmp_path)
    key = cache_key(x=2)
    store.put(key, np.ones(3))
    path = next(tmp_path.rglob(f"{key}.npy"))
    path.write_bytes(b"not an npy file")
    assert store.get(key) is None
    assert not path.exists()


def test_disabled_store_keeps_nothing(tmp_path):
    store = ArrayStore(None)
    store.put("k", np.ones(3))
    assert store.get("k") is None
