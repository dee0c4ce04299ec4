"""Damaged cache entries are detected, reported once, recomputed and rewritten: flipped
bytes, a rescaled array, lost or damaged metadata, impossible CAV stats."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import axis_model
from tcavkit import CavOptions, Experiment, ImageFolder, Preprocessing
from tcavkit.demo.starters import starter_cnn
from tcavkit.demo.synthetic import make_dataset
from tcavkit.errors import DataError
from tcavkit.examples.sources import ImageFolderSet
from tcavkit.store import INTEGRITY, scan


def make(inputs, cache: Path, method: str = "mean-difference") -> Experiment:
    targets, concepts, random = inputs
    return Experiment(
        axis_model(),
        targets=targets,
        concepts=concepts,
        random=random,
        layers=["1"],
        labels=["a", "b"],
        runs=10,
        min_examples=5,
        cav=CavOptions(method=method),
        cache_dir=str(cache),
        progress=False,
        device="cpu",
    )


def run(experiment: Experiment):
    """(result, messages of the warnings about the cache)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = experiment.run()
    return result, [str(w.message) for w in caught if "cache file" in str(w.message)]


def entries(cache: Path) -> list[tuple[Path, dict]]:
    """(array file, metadata) of every cache entry."""
    return [
        (path, json.loads(path.with_suffix(".json").read_text()))
        for path in sorted(cache.rglob("*.npy"))
    ]


def activations_of(cache: Path, name: str) -> Path:
    return next(path for path, meta in entries(cache) if meta.get("set") == name)


def cav_coefficients(cache: Path) -> Path:
    return next(path for path, meta in entries(cache) if "method" in meta)


def cav_stats(cache: Path) -> Path:
    return next(
        path
        for path, meta in entries(cache)
        if "cavs" in meta and "method" not in meta and "kind" not in meta
    )


def invert(path: Path, count: int = 64, skip: int = 8) -> None:
    """Invert ``count`` bytes of the array's data (after the .npy header)."""
    data = bytearray(path.read_bytes())
    start = len(data) - np.load(path, mmap_mode="r").nbytes + skip
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def resign(path: Path, array: np.ndarray) -> None:
    """Save ``array`` over an entry with a matching checksum: a valid entry, as far as the
    store can tell."""
    np.save(path, array)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    if INTEGRITY in meta:
        meta[INTEGRITY]["checksum"] = scan(np.load(path))[0]
    meta_path.write_text(json.dumps(meta))


def assert_same_tables(result, reference) -> None:
    pd.testing.assert_frame_equal(result.runs, reference.runs)
    pd.testing.assert_frame_equal(result.summary, reference.summary)


@pytest.mark.parametrize("method", ["mean-difference", "sgd"])
def test_flipped_bytes_are_reported_once_recomputed_and_rewritten(
    axis_experiment_inputs, tmp_path, method
):
    cache = tmp_path / "cache"
    first, notes = run(make(axis_experiment_inputs, cache, method))
    assert notes == []
    damaged = [activations_of(cache, "up"), cav_coefficients(cache)]
    for path in damaged:
        invert(path)
    second, notes = run(make(axis_experiment_inputs, cache, method))
    assert len(notes) == 2  # one line per damaged entry, naming its file
    assert all(sum(str(path) in note for note in notes) == 1 for path in damaged)
    assert all("recomputed" in note and "\n" not in note for note in notes)
    assert second.counts.sets_computed == 1 and second.counts.cavs_trained > 0
    assert_same_tables(second, first)
    assert all(path.exists() for path in damaged)
    third, notes = run(make(axis_experiment_inputs, cache, method))
    assert notes == []
    assert third.counts.sets_computed == 0 and third.counts.cavs_trained == 0
    assert_same_tables(third, first)


def test_a_rescaled_activation_array_is_detected(axis_experiment_inputs, tmp_path):
    cache = tmp_path / "cache"
    first, _ = run(make(axis_experiment_inputs, cache))
    path = activations_of(cache, "side")
    original = np.load(path)
    np.save(path, original * 2)  # finite values, a valid .npy file
    second, notes = run(make(axis_experiment_inputs, cache))
    assert len(notes) == 1 and str(path) in notes[0] and "checksum" in notes[0]
    assert second.counts.sets_computed == 1
    assert_same_tables(second, first)
    np.testing.assert_array_equal(np.load(path), original)  # rewritten
    assert run(make(axis_experiment_inputs, cache))[1] == []


def test_a_whole_entry_swapped_with_another_is_detected(axis_experiment_inputs, tmp_path):
    """Two entries whose arrays and metadata are swapped as pairs are each whole and
    checksummed, but under the other's key: each is reported, deleted and recomputed."""
    cache = tmp_path / "cache"
    first, _ = run(make(axis_experiment_inputs, cache))
    up, side = activations_of(cache, "up"), activations_of(cache, "side")
    for suffix in (".npy", ".json"):
        a, b = up.with_suffix(suffix), side.with_suffix(suffix)
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)
    second, notes = run(make(axis_experiment_inputs, cache))
    assert len(notes) == 2 and all("another key" in note for note in notes)
    assert all(sum(str(path) in note for note in notes) == 1 for path in (up, side))
    assert second.counts.sets_computed == 2
    assert_same_tables(second, first)
    third, notes = run(make(axis_experiment_inputs, cache))
    assert notes == [] and third.counts.sets_computed == 0
    assert_same_tables(third, first)


def test_lost_or_damaged_metadata_makes_the_entry_missing(axis_experiment_inputs, tmp_path):
    cache = tmp_path / "cache"
    first, _ = run(make(axis_experiment_inputs, cache))
    lost, garbled = activations_of(cache, "up"), activations_of(cache, "a")  # a: gradients
    lost.with_suffix(".json").unlink()
    garbled.with_suffix(".json").write_text('{"set": "a", "lay')
    second, notes = run(make(axis_experiment_inputs, cache))
    assert len(notes) == 2
    assert second.counts.sets_computed == 2
    assert_same_tables(second, first)
    assert lost.with_suffix(".json").exists() and garbled.with_suffix(".json").exists()
    assert run(make(axis_experiment_inputs, cache))[1] == []


@pytest.mark.parametrize("accuracy", [1.5, -0.25, np.nan])
def test_impossible_cached_cav_stats_are_retrained(axis_experiment_inputs, tmp_path, accuracy):
    cache = tmp_path / "cache"
    first, _ = run(make(axis_experiment_inputs, cache))
    path = cav_stats(cache)
    stats = np.load(path)
    stats[3, 1] = accuracy
    resign(path, stats)
    second, notes = run(make(axis_experiment_inputs, cache))
    assert len(notes) == 1 and str(path) in notes[0]
    assert second.counts.cavs_trained == first.counts.cavs_trained
    accuracies = second.runs.cav_accuracy
    assert accuracies.notna().all() and accuracies.between(0, 1).all()
    assert_same_tables(second, first)
    third, notes = run(make(axis_experiment_inputs, cache))
    assert notes == [] and third.counts.cavs_trained == 0


SIZE = (16, 16)


def image_data(root: Path) -> dict[str, Path]:
    """Tiny starter-creature folders: fire, red, striped and three random sets of 6."""
    return make_dataset(
        root,
        size=SIZE,
        n_per_set=6,
        n_random_sets=3,
        concepts=("red", "striped"),
        targets=("fire",),
        seed=0,
    )


def image_experiment(data: dict[str, Path], cache: Path) -> Callable[[], Experiment]:
    """A maker of the same small experiment on the starter CNN over ``data``'s folders."""
    folders = {name: ImageFolder(path) for name, path in data.items()}
    torch.manual_seed(0)
    model = starter_cnn()

    def experiment() -> Experiment:
        return Experiment(
            model,
            layers=["block1", "block2"],
            targets={"fire": folders["fire"]},
            concepts={"red": folders["red"], "striped": folders["striped"]},
            random={n: f for n, f in folders.items() if n.startswith("random500_")},
            labels=["fire", "water", "grass"],
            runs=3,
            min_examples=4,
            cav=CavOptions(method="mean-difference"),
            preprocessing=Preprocessing(size=SIZE),
            cache_dir=str(cache),
            progress=False,
            device="cpu",
        )

    return experiment


def test_skipped_files_survive_lost_metadata(tmp_path):
    data = image_data(tmp_path / "data")
    (data["red"] / "zz-broken.png").write_bytes(b"not a png at all")
    cache = tmp_path / "cache"
    experiment = image_experiment(data, cache)

    first, _ = run(experiment())
    for path, meta in entries(cache):
        if meta.get("set") == "red":
            path.with_suffix(".json").unlink()
    second, notes = run(experiment())
    assert len(notes) == 2  # red's activations at both layers
    assert second.counts.sets_computed == 1
    for result in (first, second):
        skipped = result.meta["sets"]["red"]["skipped"]
        assert [p.endswith("zz-broken.png") for p in skipped] == [True]
        assert result.meta["sets"]["red"]["n_examples"] == 6
    assert_same_tables(second, first)


def test_an_image_edited_during_the_run_leaves_no_entry_under_its_old_key(tmp_path, monkeypatch):
    """A file edited between the fingerprint (resolve) and the decode is an error naming
    it, and nothing of the edited bytes is cached under the original bytes' key: once the
    file is restored, a rerun gives the tables of a run that never saw the edit."""
    data = image_data(tmp_path / "data")
    reference = image_experiment(data, tmp_path / "reference")().run()
    victim = sorted(data["red"].glob("*.png"))[0]
    original = victim.read_bytes()
    other = sorted(data["fire"].glob("*.png"))[0].read_bytes()
    decode = ImageFolderSet._decode

    def edited_before_decoding(self, size):
        if self.name == "red":
            victim.write_bytes(other)  # the edit lands after the set was fingerprinted
        return decode(self, size)

    cache = tmp_path / "cache"
    monkeypatch.setattr(ImageFolderSet, "_decode", edited_before_decoding)
    with pytest.raises(DataError, match=rf"'red': file {re.escape(str(victim))} changed during"):
        image_experiment(data, cache)().run()
    assert not [path for path, meta in entries(cache) if meta.get("set") == "red"]
    monkeypatch.undo()
    victim.write_bytes(original)
    again, notes = run(image_experiment(data, cache)())
    assert notes == []
    assert_same_tables(again, reference)
