"""The engine on image folders: cache invalidation by content and errors that name things."""

from __future__ import annotations

import pytest
import torch

from tcavkit import CavOptions, Experiment, ImageFolder, Preprocessing
from tcavkit.demo.starters import starter_cnn
from tcavkit.demo.synthetic import make_dataset
from tcavkit.errors import DataError, TcavError, TooFewExamplesError

SIZE = (16, 16)


@pytest.fixture
def data(tmp_path):
    return make_dataset(
        tmp_path / "data",
        size=SIZE,
        n_per_set=6,
        n_random_sets=3,
        concepts=("red", "striped"),
        targets=("fire",),
        seed=0,
    )


def experiment(data, tmp_path, model=None, size=SIZE, layers=("block1", "block2"), **sets):
    folders = {name: ImageFolder(path) for name, path in data.items()}
    folders.update(sets)
    torch.manual_seed(0)
    return Experiment(
        model or starter_cnn(),
        layers=list(layers),
        targets={"fire": folders["fire"]},
        concepts={"red": folders["red"], "striped": folders["striped"]},
        random={n: f for n, f in folders.items() if n.startswith("random500_")},
        labels=["fire", "water", "grass"],
        runs=3,
        min_examples=4,
        cav=CavOptions(method="mean-difference"),
        preprocessing=Preprocessing(size=size),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        device="cpu",
    )


def test_cache_is_keyed_by_file_content_and_preprocessing(data, tmp_path):
    model = starter_cnn()
    with pytest.warns(UserWarning, match="only 3 random runs"):
        experiment(data, tmp_path, model).run()
        warm = experiment(data, tmp_path, model).run()
        assert warm.counts.forward_batches == 0 and warm.counts.sets_computed == 0
        # Rewrite one image of the red set: only that set is recomputed.
        image = sorted(data["red"].iterdir())[0]
        from PIL import Image

        Image.new("RGB", SIZE, (0, 255, 0)).save(image)
        changed = experiment(data, tmp_path, model).run()
        assert changed.counts.sets_computed == 1
        # Another input size is another preprocessing: everything is recomputed.
        resized = experiment(data, tmp_path, model, size=(24, 24)).run()
        assert resized.counts.sets_from_cache == 0


def test_missing_folder_is_named(data, tmp_path):
    with pytest.raises(DataError, match="does-not-exist"):
        experiment(data, tmp_path, red=ImageFolder(tmp_path / "does-not-exist")).run()


def test_folder_of_corrupt_files_is_named(data, tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    for i in range(6):
        (bad / f"img{i}.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(TooFewExamplesError, match="broken"), pytest.warns(UserWarning):
        experiment(data, tmp_path, red=ImageFolder(bad)).run()


def test_too_few_examples_is_named(data, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(data["red"].iterdir())[:2]:
        (few / image.name).write_bytes(image.read_bytes())
    with pytest.raises(TooFewExamplesError, match="few") as info:
        experiment(data, tmp_path, red=ImageFolder(few)).run()
    assert isinstance(info.value, TcavError)


def test_skipped_files_are_reported_on_cold_and_warm_runs(data, tmp_path):
    (data["red"] / "zz-broken.png").write_bytes(b"not a png at all")
    for _ in range(2):  # computed, then from the cache
        with pytest.warns(UserWarning, match="zz-broken.png"):
            result = experiment(data, tmp_path).run()
        assert [p.endswith("zz-broken.png") for p in result.meta["sets"]["red"]["skipped"]] == [
            True
        ]
        assert result.meta["sets"]["red"]["n_examples"] == 6


def test_an_input_size_that_does_not_fit_the_model_is_one_line_before_any_pass(data, tmp_path):
    """A flattening model made for 16 x 16 inputs, run at 24 x 24: one line naming
    model.input.size and the model's own error, not a traceback from inside the pass."""
    from torch import nn

    from tcavkit.errors import ModelError

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3)
    )
    with pytest.raises(ModelError) as caught:
        experiment(data, tmp_path, model, size=(24, 24), layers=["1"]).run()
    message = str(caught.value)
    assert "\n" not in message
    assert "model.input.size is [24, 24], which does not fit this model" in message
    assert "mat1 and mat2 shapes cannot be multiplied" in message
    assert not list((tmp_path / "cache").rglob("*.npy"))  # no pass ran
