"""Concept discovery (``tcavkit discover``): the pure parts with hand-checked numbers, the
one-line errors, and planted ground truth on the starter creatures.

Planted ground truth: the starter CNN is trained in the test on creatures whose class is
decided by body colour alone (fire = red). Discovering on ``fire`` must find a concept whose
patches are at least 80% plain body-colour pixels (measured with the generator's own
masks), significant and positive for fire, and no concept dominated by background or texture
pixels may be significant (the texture overlay's pattern and colour are independent of the
class). The same seed gives the same ``concepts.json``, and a second run reads
every patch activation from the cache.

Overlap: on a cold run the images are segmented and the patch batches built in a background
thread while the model runs; the batches, and so the activations and ``concepts.json``, are
those of the serial order.
"""

from __future__ import annotations

import json
import shutil
import threading
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tcavkit.cli import app
from tcavkit.config import parse_config
from tcavkit.demo.run import run_discover_demo
from tcavkit.demo.synthetic import creatures, set_rng
from tcavkit.discover import discover
from tcavkit.discover import run as discover_run
from tcavkit.discover.clusters import acceptable, keep_clusters, nmf
from tcavkit.discover.segments import (
    bounding_box,
    crop_grid,
    fill_colour,
    jaccard,
    keep_segments,
    make_patch,
    segment_image,
)
from tcavkit.errors import ConfigError, DataError, LayerError, TooFewExamplesError
from tcavkit.examples.images import arrays_to_tensor
from tcavkit.models.adapter import ModelAdapter
from tcavkit.options import DiscoverOptions, Preprocessing
from tcavkit.store import ArrayStore

needs_skimage = pytest.mark.skipif(
    find_spec("skimage") is None, reason="scikit-image is not installed (tcavkit[discover])"
)

# ------------------------------------------------------------------ segments


def test_every_slic_label_is_visited_the_last_one_included():
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[:, 4:] = 1
    labels[6:, 6:] = 2  # the last label: ACE's own loop (range(max)) skips it
    kept = keep_segments([labels], min_area=0.001)
    assert kept.tolist() == [[0, 0], [0, 1], [0, 2]]


@needs_skimage
def test_segment_image_keeps_the_highest_label_of_each_resolution():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    segs = segment_image(image, (4, 9), compactness=20, min_area=0.0001)
    first = segs.labels[0]
    assert [0, int(first.max())] in segs.kept.tolist()
    # every pixel of the first resolution is in a kept segment
    covered = np.zeros(first.shape, dtype=bool)
    for index in range(len(segs.kept)):
        if segs.kept[index, 0] == 0:
            covered |= segs.mask(index)
    assert covered.all()


def test_tiny_segments_are_dropped():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[0, 0] = 1  # 1% of the image
    assert keep_segments([labels], min_area=0.01).tolist() == [[0, 0]]
    assert keep_segments([labels], min_area=0.005).tolist() == [[0, 0], [0, 1]]


def test_jaccard_deduplication_against_earlier_resolutions():
    coarse = np.zeros((10, 10), dtype=np.int32)
    coarse[:, 5:] = 1  # two halves of 50 pixels
    fine = np.zeros((10, 10), dtype=np.int32)
    fine[:, 4:] = 1  # left 40 px: Jaccard 40/50 = 0.8 with the left half -> duplicate
    fine[:, 8:] = 2  # middle 40 px: 10/80 and 30/60 = 0.5 -> kept; right 20 px: 20/50 -> kept
    assert jaccard(coarse == 0, fine == 0) == pytest.approx(0.8)
    kept = keep_segments([coarse, fine], min_area=0.001)
    assert kept.tolist() == [[0, 0], [0, 1], [1, 1], [1, 2]]
    # at exactly 0.5 a segment is not a duplicate (ACE: "> 0.5")
    half = np.zeros((10, 10), dtype=np.int32)
    half[:, 5:] = 1
    quarter = np.zeros((10, 10), dtype=np.int32)
    quarter[:5, :] = 1
    quarter[5:, 5:] = 2
    quarter[:5, 5:] = 3  # label 0: left-bottom 25 px: Jaccard with left half 25/50 = 0.5
    assert [1, 0] in keep_segments([half, quarter], min_area=0.001).tolist()


def test_patch_is_the_full_bounding_box_filled_with_the_mean_colour():
    image = np.full((6, 6, 3), 200, dtype=np.uint8)
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[3, 4] = True
    assert bounding_box(mask) == (1, 1, 4, 5)  # rows 1..3, columns 1..4, inclusive
    patch = make_patch(image, mask, (10, 20, 30), (3, 4))  # no resampling: same size
    assert patch.shape == (3, 4, 3)
    assert patch[0, 0].tolist() == [200, 200, 200]
    assert patch[2, 3].tolist() == [200, 200, 200]
    assert patch[1, 1].tolist() == [10, 20, 30]


def test_crop_grid_is_square_crops_on_a_centred_grid():
    crops = crop_grid((6, 8), [2, 3])
    # 2 a side: crops of 3 pixels; 2 rows of 2 columns, left over columns 0 and 7
    assert crops.kept[:4].tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    first = crops.labels[0]
    assert first[:, 0].tolist() == [-1] * 6 and first[:, 7].tolist() == [-1] * 6
    assert bounding_box(crops.mask(0)) == (0, 1, 3, 4)
    assert bounding_box(crops.mask(1)) == (0, 4, 3, 7)
    assert bounding_box(crops.mask(3)) == (3, 4, 6, 7)
    # 3 a side: crops of 2 pixels, a 3 x 4 grid covering the image
    assert len(crops.kept) == 4 + 12
    assert crops.kept[4].tolist() == [1, 0] and crops.kept[-1].tolist() == [1, 11]
    assert bounding_box(crops.mask(len(crops.kept) - 1)) == (4, 6, 6, 8)
    assert (crops.labels[1] >= 0).all()
    # a crop is a patch with nothing to fill
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    patch = make_patch(image, crops.mask(1), (0, 0, 0), (3, 3))
    np.testing.assert_array_equal(patch, image[0:3, 4:7])


def test_fill_colour_is_the_pixel_the_preprocessing_maps_to_its_mean():
    imagenet = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert fill_colour(imagenet) == (124, 116, 104)
    assert fill_colour(Preprocessing(value_range=(-1, 1), mean=(0.0, 0.0, 0.0))) == (128,) * 3
    assert fill_colour(Preprocessing()) == (128, 128, 128)


# ------------------------------------------------------------------ clusters


def test_filter_on_hand_built_cluster_assignments():
    # 10 segmented images. Cluster 0: 12 patches from 8 images (highly common: 8 > 6).
    # Cluster 1: 20 patches from one image (dropped). Cluster 2: 4 patches from 4 images,
    # below min_images 5 (dropped). Cluster 3: 30 patches from 6 images: 6 > 30/10 and
    # 6 > 10/2 (present in most images) -> kept.
    sources = [*range(8), 0, 1, 2, 3] + [9] * 20 + [0, 1, 2, 3] + [i % 6 for i in range(30)]
    labels = [0] * 12 + [1] * 20 + [2] * 4 + [3] * 30
    distances = np.linspace(1.0, 0.0, len(labels))  # later patches nearer their centre
    kept = keep_clusters(
        np.asarray(labels),
        distances,
        np.asarray(sources),
        n_discovery=10,
        min_images=5,
        max_patches=3,
    )
    assert [c.label for c in kept] == [0, 3]
    assert kept[0].n_images == 8
    assert kept[0].nearest.tolist() == [11, 10, 9]  # nearest the centre first
    assert len(kept[1].members) == 30


def test_nmf_refuses_negative_activations():
    acts = np.abs(np.random.default_rng(0).normal(size=(20, 4)))
    acts[3, 2] = -0.5
    with pytest.raises(ConfigError) as error:
        nmf(acts, 2, seed=0, layer="block2.conv")
    message = str(error.value)
    assert "\n" not in message
    assert "'block2.conv' has negative activations" in message
    assert "post-ReLU (non-negative)" in message


def test_nmf_assigns_crops_to_their_planted_component():
    # two non-negative directions, and 12 crops: 0-5 are multiples of the first (with a
    # little of the second), 6-11 of the second; crop 5 and crop 11 are the strongest.
    first = np.array([1.0, 1.0, 0.0, 0.0, 0.5])
    second = np.array([0.0, 0.0, 1.0, 1.0, 0.5])
    weights = [1, 2, 3, 4, 5, 6]
    acts = np.array(
        [w * first + 0.1 * second for w in weights] + [w * second + 0.1 * first for w in weights]
    )
    labels, distances = nmf(acts, 2, seed=0, layer="block3")
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1
    assert labels[0] != labels[6]
    # a component's crops are kept largest coefficient first
    sources = np.arange(12)  # each crop from its own image
    kept = keep_clusters(labels, distances, sources, n_discovery=12, min_images=2, max_patches=3)
    nearest = sorted(c.nearest.tolist() for c in kept)
    assert nearest == [[5, 4, 3], [11, 10, 9]]
    # a crop with no activation belongs to no component
    labels, _ = nmf(np.vstack([acts, np.zeros(5)]), 2, seed=0, layer="block3")
    assert labels[-1] == -1
    assert [
        len(c.members)
        for c in keep_clusters(
            labels, np.zeros(13), np.arange(13), n_discovery=13, min_images=2, max_patches=3
        )
    ] == [6, 6]


def test_ace_filter_conditions():
    assert acceptable(10, 6, 40, 5)  # highly common
    assert not acceptable(10, 4, 40, 2)  # 4 <= 5 (n/2), 4 <= 10 (N/4), 4 <= 20 (N/2)
    assert acceptable(20, 11, 40, 5)  # 11 > 10: highly common
    assert not acceptable(40, 9, 40, 5)  # 9 <= 10 (n/4) and 9 <= 20 (N/2)
    assert acceptable(40, 11, 40, 5)  # mildly common and mildly populated
    assert not acceptable(100, 11, 40, 5)  # 11 <= 25 and 11 <= 20
    assert acceptable(100, 21, 40, 5)  # 21 > 10 and 21 > 20: present in most images
    assert not acceptable(3, 3, 40, 5)  # too few images


# ------------------------------------------------------------------ options


def test_discover_block_is_typed_and_checked():
    raw = {
        "model": {"path": "m.pt", "layers": ["a"]},
        "data": "d",
        "targets": ["fire"],
        "discover": {"segments": [15, 50], "clusters": 10},
    }
    config = parse_config(raw, Path("."))
    assert config.discover == DiscoverOptions(segments=(15, 50), clusters=10)
    bad = {**raw, "discover": {"segmnts": [15]}}
    with pytest.raises(ConfigError, match="did you mean 'segments'"):
        parse_config(bad, Path("."))
    with pytest.raises(ConfigError, match="discover.clusters: expected a number"):
        parse_config({**raw, "discover": {"clusters": True}}, Path("."))
    with pytest.raises(ConfigError, match="unknown discover.method 'craft'"):
        DiscoverOptions(method="craft")
    assert DiscoverOptions(method="nmf", crops=[2, 4]).crops == (2, 4)
    with pytest.raises(ConfigError, match="discover.crops must be whole numbers"):
        DiscoverOptions(crops=(0,))
    with pytest.raises(ConfigError, match="discover.crops: expected a number"):
        parse_config({**raw, "discover": {"crops": [True]}}, Path("."))
    # the crop settings, not the SLIC ones, key an nmf run's cached patches
    assert DiscoverOptions(method="nmf").fingerprint() != DiscoverOptions().fingerprint()
    assert (
        DiscoverOptions(method="nmf", segments=(9,)).fingerprint()
        == DiscoverOptions(method="nmf").fingerprint()
    )
    with pytest.raises(ConfigError, match="min_images"):
        DiscoverOptions(images=4, min_images=5)


# ------------------------------------------------------------------ overlap


class RecordingModel:
    """A stand-in model: records each batch and whether it ran in the main thread; a
    patch's activation at any layer is its mean value per channel."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.in_main: list[bool] = []

    def pooled_activations(self, x, layers, *, channels_last=False):
        self.batches.append(x.clone())
        self.in_main.append(threading.current_thread() is threading.main_thread())
        return {layer: x.mean(dim=(2, 3)) for layer in layers}


@needs_skimage
@pytest.mark.parametrize("overlap", [True, False])
def test_patch_batches_are_the_serial_ones_whether_made_in_the_background_or_not(
    monkeypatch, overlap
):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8) for _ in range(4)]
    options = DiscoverOptions(segments=(4, 9), compactness=20, min_area=0.001)
    prep = Preprocessing(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    fill, batch_size = (10, 20, 30), 5
    segmented_in_main: list[bool] = []

    def recording(*args):
        segmented_in_main.append(threading.current_thread() is threading.main_thread())
        return segment_image(*args)

    monkeypatch.setattr(discover_run, "segment_image", recording)
    monkeypatch.setattr(discover_run, "OVERLAP", overlap)
    model = RecordingModel()
    patch_model = discover_run._PatchModel(
        model, "fp", ["a", "b"], prep, fill, batch_size, ArrayStore(None)
    )
    decoded = discover_run._Decoded("fire", [f"{i}.png" for i in range(4)], arrays, "key")
    segments: list = []
    clock: dict[str, float] = {}
    segment = discover_run._segmenter(options)
    acts = discover_run._forward(decoded, segments, segment, patch_model, False, clock)

    # the serial reference: every image segmented, every patch made, cut into batches
    reference = [segment_image(a, (4, 9), 20, 0.001) for a in arrays]
    patches = [
        make_patch(a, s.mask(j), fill, (16, 16))
        for a, s in zip(arrays, reference, strict=True)
        for j in range(len(s.kept))
    ]
    expected = [
        arrays_to_tensor(patches[k : k + batch_size], prep)
        for k in range(0, len(patches), batch_size)
    ]
    assert len(patches) % batch_size  # the last batch is a short one
    assert [len(x) for x in model.batches] == [len(x) for x in expected]
    for got, want in zip(model.batches, expected, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(segments, reference, strict=True):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.kept, want.kept)
    want_acts = torch.cat([x.mean(dim=(2, 3)) for x in expected]).numpy()
    np.testing.assert_array_equal(acts["a"], want_acts)
    np.testing.assert_array_equal(acts["b"], want_acts)
    assert all(model.in_main)
    assert segmented_in_main == [not overlap] * 4
    assert set(clock) == {"segment", "patches", "forward", "waiting"}


def test_patch_activation_keys_change_with_everything_that_decides_them():
    prep = Preprocessing(size=(16, 16))
    base = {
        "adapter": None,
        "fingerprint": "model",
        "layers": ["a"],
        "prep": prep,
        "fill": (1, 2, 3),
        "batch_size": 4,
        "store": ArrayStore(None),
    }
    decoded = discover_run._Decoded("fire", [], [], "segments-key")
    key = discover_run._PatchModel(**base).keys(decoded)["a"]
    changed = [
        {"fingerprint": "other model"},
        {"layers": ["b"]},
        {"prep": Preprocessing(size=(16, 16), mean=(0.5, 0.5, 0.5))},
        {"fill": (1, 2, 4)},
    ]
    others = [
        next(iter(discover_run._PatchModel(**{**base, **change}).keys(decoded).values()))
        for change in changed
    ]
    other_images = discover_run._Decoded("fire", [], [], "other segments-key")
    others.append(discover_run._PatchModel(**base).keys(other_images)["a"])
    assert len({key, *others}) == len(changed) + 2


# ------------------------------------------------------------------ end to end

DEMO = {
    "size": 64,
    "images": 25,
    "n_random": 10,
    "n_per_set": 25,
    "segments": (15, 50),
    "clusters": 10,
    "epochs": 5,
    "n_train_per_class": 60,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("discover")
    return run_discover_demo(root, progress=False, echo=lambda _t: None, **DEMO)


def _shares(root: Path, concept) -> dict[str, float]:
    """Mean share of each ground-truth kind among the pixels of a concept's patches."""
    files = sorted(p.name for p in (root / "data" / "fire").glob("*.png"))
    truth = creatures("fire", len(files), (DEMO["size"],) * 2, set_rng(0, "fire"))
    kinds = ("body", "texture", "background", "eyes")
    shares = []
    for patch in concept.patches:
        creature = truth[files.index(patch.source)]
        n = patch.mask.sum()
        shares.append([(patch.mask & getattr(creature, k)).sum() / n for k in kinds])
    return dict(zip(kinds, np.mean(shares, axis=0), strict=True))


def _forward_calls(monkeypatch) -> list[int]:
    """The batch sizes of every forward pass of the patches (and of the layer check)."""
    calls: list[int] = []
    original = ModelAdapter.pooled_activations

    def counting(self, x, layers, **kwargs):
        calls.append(len(x))
        return original(self, x, layers, **kwargs)

    monkeypatch.setattr(ModelAdapter, "pooled_activations", counting)
    return calls


def _planted_body(concepts, shares: dict[str, dict[str, float]]) -> list:
    """The concepts at least 80% plain body colour, significant and positive (asserted
    non-empty, showing every concept's shares and direction when it is not)."""
    body = [
        c
        for c in concepts
        if shares[c.name]["body"] >= 0.8
        and c.result["significant"]
        and c.result["direction"] == "positive"
    ]
    assert body, {c.name: (shares[c.name], c.result["direction"]) for c in concepts}
    return body


@pytest.mark.slow
@needs_skimage
def test_planted_body_colour_is_discovered_and_background_is_not(demo):
    root = demo.experiment_file.parent
    outcome = demo.discovery
    assert demo.test_accuracy > 0.9
    shares = {c.name: _shares(root, c) for c in outcome.concepts}
    body = _planted_body(outcome.concepts, shares)
    for kind in ("background", "texture"):
        dominated = [c for c in outcome.concepts if shares[c.name][kind] > 0.5]
        assert dominated, f"expected a {kind} concept among the discovered ones"
        assert not any(c.result["significant"] for c in dominated), kind
    # the gallery and the concept folders
    report = outcome.report.read_text(encoding="utf-8")
    assert 'id="discovered"' in report
    assert body[0].name in report
    first = outcome.concepts[0]
    assert first.result["direction"] == "positive"
    assert sorted(p.name for p in first.folder.iterdir())[0] == "patch_000.png"
    assert len(list(first.folder.glob("*.png"))) == len(first.patches)
    assert (outcome.out_dir / "gallery" / f"{first.name}.png").is_file()


@pytest.mark.slow
@needs_skimage
def test_same_seed_same_concepts_and_no_forward_pass_when_warm(demo, tmp_path, monkeypatch):
    calls = _forward_calls(monkeypatch)
    again = discover(demo.experiment_file, out=tmp_path / "again", progress=False)
    assert calls == [1]  # the layer check's single input: every patch came from the cache
    first = json.loads(demo.discovery.concepts_file.read_text())
    second = json.loads(again.concepts_file.read_text())
    assert first == second
    assert demo.discovery.concepts_file.read_bytes() == again.concepts_file.read_bytes()


@pytest.mark.slow
@needs_skimage
def test_gallery_is_shown_only_beside_its_own_tables(demo, tmp_path):
    from tcavkit.report import build_report

    folder = tmp_path / "copy"
    shutil.copytree(demo.discovery.out_dir, folder)
    assert 'id="discovered"' in build_report(folder).read_text(encoding="utf-8")
    document = json.loads((folder / "concepts.json").read_text())
    document["summary_sha256"] = "0" * 64  # as if left by another run
    (folder / "concepts.json").write_text(json.dumps(document))
    text = build_report(folder).read_text(encoding="utf-8")
    assert 'id="discovered"' not in text
    assert "does not go with this folder&#39;s summary.csv" in text


NMF_CROPS = [3, 5]


@pytest.mark.slow
@needs_skimage
def test_nmf_finds_the_planted_body_colour_and_writes_the_same_outputs(demo, tmp_path):
    root = demo.experiment_file.parent
    path = _experiment(demo, tmp_path, **{"discover.method": "nmf", "discover.crops": NMF_CROPS})
    outcome = discover(path, out=tmp_path / "out", progress=False)
    shares = {c.name: _shares(root, c) for c in outcome.concepts}
    _planted_body(outcome.concepts, shares)  # asserts the planted body concept is found
    dominated = [
        c
        for c in outcome.concepts
        if shares[c.name]["background"] > 0.5 or shares[c.name]["texture"] > 0.5
    ]
    # None raises the class logit. A pure-background crop may lower it, significantly: the
    # creatures' backgrounds avoid the class colours while random images do not (README,
    # "Concept discovery"); the measured null is strong enough to see that at crops [3, 5].
    assert not any(c.result["direction"] == "positive" for c in dominated), [
        (c.name, {k: round(float(v), 2) for k, v in shares[c.name].items()}, c.result["direction"])
        for c in dominated
    ]
    # every patch is a square crop of its grid
    for concept in outcome.concepts:
        for patch in concept.patches:
            top, left, bottom, right = patch.box
            assert bottom - top == right - left == DEMO["size"] // patch.resolution
            assert patch.mask.sum() == (bottom - top) ** 2
    document = json.loads(outcome.concepts_file.read_text())
    assert document["method"] == "nmf"
    assert document["settings"]["crops"] == NMF_CROPS
    assert document["concepts"][0]["patches"][0]["crops"] in NMF_CROPS
    first = outcome.concepts[0]
    assert len(list(first.folder.glob("*.png"))) == len(first.patches)
    assert (outcome.out_dir / "gallery" / f"{first.name}.png").is_file()
    assert first.name in outcome.report.read_text(encoding="utf-8")
    again = discover(path, out=tmp_path / "again", progress=False)  # same seed, warm cache
    assert again.concepts_file.read_bytes() == outcome.concepts_file.read_bytes()


def _with_demo_cache(demo, tmp_path: Path, *, cold_discovery: bool = False) -> Path:
    """The demo's experiment on a copy of its (warm) cache; with ``cold_discovery``, the
    copy has no segments and no patch activations (the experiment's entries stay)."""
    path = _experiment(demo, tmp_path)
    shutil.copytree(demo.experiment_file.parent / ".tcavkit-cache", tmp_path / "cache")
    if cold_discovery:
        for name, (_, meta) in _discovery_entries(tmp_path / "cache").items():
            for suffix in (".npy", ".json"):
                (meta.parent / name).with_suffix(suffix).unlink()
    return path


def _discovery_entries(cache: Path, kind: str = "discover-") -> dict[str, tuple[np.ndarray, Path]]:
    """Every cached array of discovery (segments, patch activations), with its metadata file,
    by file name."""
    found = {}
    for meta in cache.rglob("*.json"):
        if str(json.loads(meta.read_text()).get("kind", "")).startswith(kind):
            found[meta.stem] = (np.load(meta.with_suffix(".npy")), meta)
    return found


@pytest.mark.slow
@needs_skimage
def test_serial_reference_gives_the_same_activations_and_concepts(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(discover_run, "OVERLAP", False)
    path = _with_demo_cache(demo, tmp_path, cold_discovery=True)
    serial = discover(path, out=tmp_path / "serial", progress=False)
    assert serial.concepts_file.read_bytes() == demo.discovery.concepts_file.read_bytes()
    overlapped = _discovery_entries(demo.experiment_file.parent / ".tcavkit-cache")
    reference = _discovery_entries(tmp_path / "cache")
    kinds = [json.loads(meta.read_text())["kind"] for _, meta in reference.values()]
    assert sorted(kinds) == ["discover-activations"] * 2 + ["discover-segments"] * 2
    assert set(reference) == set(overlapped)
    for name, (array, _) in reference.items():
        np.testing.assert_array_equal(overlapped[name][0], array)


@pytest.mark.slow
@needs_skimage
def test_an_error_while_segmenting_in_the_background_keeps_its_message(demo, tmp_path, monkeypatch):
    path = _experiment(demo, tmp_path)  # a cold cache: images are segmented beside the model
    in_main: list[bool] = []

    def failing(*args):
        in_main.append(threading.current_thread() is threading.main_thread())
        if len(in_main) == 3:
            raise DataError("discover: image 3 cannot be segmented")
        return segment_image(*args)

    monkeypatch.setattr(discover_run, "segment_image", failing)
    with pytest.raises(DataError) as info:
        discover(path, out=tmp_path / "out", progress=False)
    assert str(info.value) == "discover: image 3 cannot be segmented"
    assert in_main == [False, False, False]


@pytest.mark.slow
@needs_skimage
def test_cached_activations_whose_segments_were_lost_need_no_forward_pass(
    demo, tmp_path, monkeypatch
):
    path = _with_demo_cache(demo, tmp_path)
    monkeypatch.setattr(discover_run, "_cached_segments", lambda store, decoded: None)
    calls = _forward_calls(monkeypatch)
    again = discover(path, out=tmp_path / "again", progress=False)
    assert calls == [1]  # segmented again (no model beside), every patch from the cache
    assert again.result.meta["timings"]["discover fire: activations, segment"] > 0
    assert again.concepts_file.read_bytes() == demo.discovery.concepts_file.read_bytes()


@pytest.mark.slow
@needs_skimage
def test_cached_activations_of_other_content_are_computed_again(demo, tmp_path, monkeypatch):
    path = _with_demo_cache(demo, tmp_path)
    # as if the cached segments no longer matched what the activations were made from
    monkeypatch.setattr(discover_run, "_content_digest", lambda images: "0" * 64)
    calls = _forward_calls(monkeypatch)
    again = discover(path, out=tmp_path / "again", progress=False)
    entries = _discovery_entries(tmp_path / "cache", "discover-activations").values()
    n_patches = {len(array) for array, _ in entries}
    assert [sum(calls[1:])] == list(n_patches)  # every patch through the model again
    assert again.concepts_file.read_bytes() == demo.discovery.concepts_file.read_bytes()


# ------------------------------------------------------------------ bad input


def _experiment(demo, tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(demo.experiment_file.read_text())
    root = demo.experiment_file.parent
    raw["model"]["path"] = str(root / raw["model"]["path"])
    raw["data"] = str(root / "data")
    raw["cache"] = str(tmp_path / "cache")
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@needs_skimage
def test_too_few_target_images_is_one_line_naming_the_fix(demo, tmp_path):
    data = tmp_path / "data"
    source = demo.experiment_file.parent / "data"
    for name in ["fire", *(f"random500_{i}" for i in range(DEMO["n_random"]))]:
        (data / name).mkdir(parents=True)
        files = sorted((source / name).glob("*.png"))[: 3 if name == "fire" else None]
        for file in files:
            (data / name / file.name).write_bytes(file.read_bytes())
    path = _experiment(demo, tmp_path, data=str(data))
    with pytest.raises(DataError, match=r"has 3 images .* lower discover.min_images"):
        discover(path, out=tmp_path / "out", progress=False)


@pytest.mark.slow
@needs_skimage
def test_small_concepts_do_not_lower_the_other_sets_minimum(demo, tmp_path):
    """Concepts of 6 patches are tested although examples.min is 10, but a random set of 8
    images is still refused: only the concept folders get the lower minimum."""
    settings = {"discover.max_patches": 6, "discover.min_images": 5}
    outcome = discover(_experiment(demo, tmp_path, **settings), out=tmp_path / "ok", progress=False)
    assert outcome.concepts and all(len(c.patches) <= 6 for c in outcome.concepts)
    data = tmp_path / "data"
    shutil.copytree(demo.experiment_file.parent / "data", data)
    for file in sorted((data / "random500_0").glob("*.png"))[8:]:
        file.unlink()
    path = _experiment(demo, tmp_path, data=str(data), **settings)
    with pytest.raises(
        TooFewExamplesError, match=r"'random500_0'.* 8 image files .* 10 are needed"
    ):
        discover(path, out=tmp_path / "out", progress=False)


def test_concept_folder_lowers_only_its_own_minimum(tmp_path):
    from PIL import Image

    from tcavkit.discover.run import ConceptFolder
    from tcavkit.examples.base import Selection
    from tcavkit.examples.sources import ImageFolder

    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"patch_{i:03d}.png")
    selection = Selection(min_examples=10)
    with pytest.raises(TooFewExamplesError, match="3 image files but at least 10"):
        ImageFolder(tmp_path).resolve("c", selection)
    resolved = ConceptFolder(tmp_path, 3).resolve("c", selection)
    assert len(resolved.files) == 3 and resolved.min_examples == 3
    # a folder that lost patches since discovery is still refused at the usual minimum
    with pytest.raises(TooFewExamplesError, match="3 image files but at least 10"):
        ConceptFolder(tmp_path, 50).resolve("c", selection)


@pytest.mark.slow
@needs_skimage
def test_layer_without_spatial_structure_is_one_line(demo, tmp_path):
    path = _experiment(demo, tmp_path, **{"model.layers": ["block3", "logits"]})
    with pytest.raises(LayerError, match="'logits' has no spatial structure.*convolutional"):
        discover(path, out=tmp_path / "out", progress=False)


@pytest.mark.slow
@needs_skimage
def test_images_too_small_for_the_segment_count(demo, tmp_path):
    path = _experiment(demo, tmp_path, **{"discover.segments": [15, 400]})
    with pytest.raises(ConfigError, match=r"too small for 400 segments.*lower discover.segments"):
        discover(path, out=tmp_path / "out", progress=False)


@pytest.mark.slow
@needs_skimage
def test_images_too_small_for_the_crop_count(demo, tmp_path):
    path = _experiment(demo, tmp_path, **{"discover.method": "nmf", "discover.crops": [4, 32]})
    with pytest.raises(ConfigError, match=r"too small for 32 crops a side.*lower discover.crops"):
        discover(path, out=tmp_path / "out", progress=False)


@pytest.mark.slow
@needs_skimage
def test_cli_errors_print_one_line(demo, tmp_path):
    path = _experiment(demo, tmp_path, **{"discover.segments": [15, 400]})
    result = CliRunner().invoke(app, ["discover", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    result = CliRunner().invoke(app, ["discover", str(path), "--target", "dragon"])
    assert result.exit_code == 1
    assert "discover target 'dragon' is not a target of the experiment" in result.output


def test_missing_scikit_image_is_named_in_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    from tcavkit.discover.segments import require_skimage

    with pytest.raises(ConfigError, match=r"pip install 'tcavkit\[discover\]'") as info:
        require_skimage()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ what discover deletes


def _one_concept(out: Path):
    """A target 'fire' of one 8x8 image and a concept of its one patch, to be written
    into ``out``."""
    from tcavkit.discover.segments import Segments

    labels = np.zeros((1, 8, 8), dtype=np.int32)
    labels[0, 2:6, 2:6] = 1
    segments = Segments(labels, np.asarray([[0, 1]], dtype=np.int32))
    images = discover_run._TargetImages(
        "fire", ["a.png"], [np.full((8, 8, 3), 200, dtype=np.uint8)], [segments]
    )
    mask = segments.mask(0)
    patch = discover_run.Patch("a.png", 0, 15, 1, bounding_box(mask), mask)
    folder = out / "discovered" / "fire" / "l" / "fire-l-c01"
    concept = discover_run.DiscoveredConcept("fire-l-c01", "fire", "l", folder, [patch], 1, 1)
    return [concept], images


def _write(out: Path) -> None:
    concepts, images = _one_concept(out)
    discover_run._write_concepts(concepts, images, (0, 0, 0), (8, 8), out)


@needs_skimage
def test_discover_never_deletes_through_a_link(tmp_path):
    """``discovered`` linked to the user's images: refused in one line naming the link,
    and not one of the user's files is touched."""
    mine = tmp_path / "mine"
    (mine / "fire").mkdir(parents=True)
    for i in range(3):
        (mine / "fire" / f"img_{i}.png").write_bytes(b"the user's image")
    out = tmp_path / "out"
    out.mkdir()
    (out / "discovered").symlink_to(mine, target_is_directory=True)
    with pytest.raises(DataError, match=rf"{out / 'discovered'} is a symbolic link") as info:
        _write(out)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in (mine / "fire").iterdir()) == [f"img_{i}.png" for i in range(3)]
    (out / "discovered").unlink()
    (out / "gallery").symlink_to(mine, target_is_directory=True)
    (mine / "fire-holiday.png").write_bytes(b"named like a gallery image")
    with pytest.raises(DataError, match=rf"{out / 'gallery'} is a symbolic link"):
        _write(out)
    assert (mine / "fire-holiday.png").is_file()


@needs_skimage
def test_discover_replaces_only_folders_it_wrote(tmp_path):
    """A non-empty ``discovered/<target>`` without tcavkit's marker is refused, naming it;
    an empty one, or one discover wrote, is replaced."""
    out = tmp_path / "out"
    theirs = out / "discovered" / "fire"
    theirs.mkdir(parents=True)
    (theirs / "keep.png").write_bytes(b"not tcavkit's")
    with pytest.raises(DataError, match=rf"{theirs} is not empty and was not written by"):
        _write(out)
    assert (theirs / "keep.png").read_bytes() == b"not tcavkit's"
    (theirs / "keep.png").unlink()  # empty: tcavkit may use it
    _write(out)
    assert (theirs / discover_run.OWN_MARKER).is_file()
    stale = theirs / "old-layer" / "fire-old-c01"
    stale.mkdir(parents=True)
    _write(out)  # its own folder: emptied and written again
    assert not stale.exists()
    assert (theirs / "l" / "fire-l-c01" / "patch_000.png").is_file()
    assert (out / "gallery" / "fire-l-c01.png").is_file()


def test_copies_of_one_image_count_once(tmp_path):
    """20 copies of one image are one image: too few for discover.min_images, in one line;
    beside different images they are used once, with a warning."""
    from PIL import Image

    from tcavkit.errors import TcavWarning
    from tcavkit.examples.sources import ImageFolder

    folder = tmp_path / "fire"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / f"copy_{i:02d}.png")
    options = DiscoverOptions(min_images=5, images=50)

    def decode():
        return discover_run._decode_target(
            "fire", ImageFolder(folder), options, Preprocessing(size=(8, 8)), 0, ArrayStore(None)
        )

    with pytest.raises(DataError, match=r"has 20 images .* only 1 distinct image .*min_images = 5"):
        decode()
    for i in range(6):
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(folder / f"other_{i}.png")
    with pytest.warns(TcavWarning, match=r"19 of the 26 images of target 'fire' .* copies"):
        decoded = decode()
    assert len(decoded.arrays) == 7
    assert len({array.tobytes() for array in decoded.arrays}) == 7


@needs_skimage
def test_discover_into_a_held_folder_fails_in_one_line_before_the_model_loads(tmp_path):
    from tcavkit.results import output_lock

    raw = {"model": {"path": "missing.pt", "layers": ["a"]}, "data": "d", "targets": ["fire"]}
    config = parse_config(raw, tmp_path)
    out = tmp_path / "out"
    with output_lock(out), pytest.raises(DataError) as info:
        discover(config, out=out, progress=False)
    message = str(info.value)
    assert f"results folder {out} is in use by another tcavkit run" in message
    assert "\n" not in message
