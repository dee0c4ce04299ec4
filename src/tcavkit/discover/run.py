"""``tcavkit discover``: find the concepts a class uses, from its own images (ACE, or
CRAFT with ``method: nmf``).

For each target: its images are segmented into superpixels at several resolutions
(:mod:`~tcavkit.discover.segments`), every kept segment becomes a patch, the patches go
through the model in batches (activations averaged over positions, all layers at once),
and at each layer the patches are clustered (:mod:`~tcavkit.discover.clusters`). Each kept
cluster's patches are written as a concept folder, ``discovered/<target>/<layer>/<concept>``
(the tensorflow/tcav layout: rename it and use it in ``tcavkit run``), and every concept
is then tested by the normal :class:`~tcavkit.Experiment` against the random sets, for its
own target at its own layer, with the same calibrated test and correction as hand-made
concepts. ``concepts.json`` lists the concepts and their results; ``report.html`` shows
them in a gallery.

Segmentations and patch activations are cached by what decides them (the target images'
digests, the size, the segmentation settings, the scikit-image and Pillow versions; for the
activations also the model, the layer, the preprocessing and the fill colour), so the cache
is looked up before anything is segmented, and a second run with other clustering settings
runs no forward pass. A cached activation entry also holds the digest of the pixels and
segments it was made from, and is used only with exactly those.

On a cold run the work overlaps: a background thread segments the images one by one and
cuts, fills and resizes each batch's patches while the model runs on the batch before
(:func:`~tcavkit.examples.prefetch.in_background`). The batches are the serial ones (patches
image by image, ``batch_size`` a batch), so the activations are identical.

Arrays: images ``(H, W, 3)`` uint8 at the model's input size; per image, label maps
``(R, H, W)`` int32 (one per resolution) and kept segments ``(m_i, 2)`` int32; a batch of
patches ``(b, 3, H, W)`` float32 (``(b, H, W, 3)`` channels last); activations
``{layer: (m, C)}`` float32 for the target's ``m`` patches.

``method: nmf`` (CRAFT, Fel et al. CVPR 2023) runs the same pipeline with two steps
swapped: the patches are square crops on a regular grid at each ``discover.crops`` scale
instead of superpixels, and at each layer their activations are factorised by non-negative
matrix factorisation instead of clustered (each crop belongs to its strongest component,
a concept keeps the crops with the largest coefficients). Everything else (the filter, the
folders, the test, ``concepts.json``, the gallery) is shared.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import PIL
import torch
from PIL import Image
from tqdm.auto import tqdm

from tcavkit.atomic import atomic_write, remove_temporaries
from tcavkit.config import ExperimentConfig, load_config
from tcavkit.discover.clusters import keep_clusters, kmeans, nmf
from tcavkit.discover.segments import (
    Segments,
    bounding_box,
    check_crop_size,
    check_image_size,
    crop_grid,
    fill_colour,
    make_patch,
    require_skimage,
    segment_image,
)
from tcavkit.errors import ConfigError, DataError, TcavWarning
from tcavkit.examples.base import Selection
from tcavkit.examples.digests import FileDigests, remembered_digests
from tcavkit.examples.images import arrays_to_tensor
from tcavkit.examples.prefetch import in_background
from tcavkit.examples.sources import ImageFolder, ImageFolderSet, list_image_files
from tcavkit.models.adapter import ModelAdapter
from tcavkit.options import DiscoverOptions, Preprocessing
from tcavkit.pipeline.executor import timed
from tcavkit.pipeline.experiment import Experiment, experiment_arguments
from tcavkit.report.build import PLOTS_DIR, build_report, discard_report
from tcavkit.results import TcavResult, check_output_folder, mark_unfinished, output_lock
from tcavkit.stats import detectable_effects, summarize
from tcavkit.store import ArrayStore, cache_key

CONCEPTS_FILE = "concepts.json"
DISCOVERED_DIR = "discovered"
GALLERY_DIR = "gallery"
PATCH_PATTERN = "patch_{:03d}.png"
OWN_MARKER = ".tcavkit-discover"
"""The file ``tcavkit discover`` writes in each folder whose content it replaces (a target's
``discovered/<target>`` and ``gallery``): a folder is emptied only when it holds it (or
is empty), and never through a symbolic link."""
GALLERY_SIDE = 128
"""Source images in the gallery are enlarged (nearest neighbour) to at least this side."""
_DIRECTION_ORDER = {"positive": 0, "none": 1, "negative": 2}

OVERLAP = True
"""Whether the patches' batches are made (images segmented, patches cut and resized) in a
background thread while the model runs on the batch before. The batches are the same either
way; ``False`` makes them in the main thread (the benchmark's serial reference)."""


@dataclass(frozen=True)
class Patch:
    """One patch of a discovered concept.

    Attributes:
        source: the source image's file name (in the target's folder).
        image: the source image's index among the segmented images.
        resolution: the SLIC segment count of the segmentation it comes from (``nmf``: the
            crop count of its grid).
        label: its SLIC label in that segmentation (``nmf``: its crop's index in the grid,
            row by row).
        box: ``(top, left, bottom, right)`` of its mask in the (resized) source image.
        mask: ``(H, W)`` bool: its segment in the (resized) source image.
    """

    source: str
    image: int
    resolution: int
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False, compare=False)


@dataclass
class DiscoveredConcept:
    """A kept cluster: its patches (nearest the centre first) and, once tested, its result.

    Attributes:
        name: the concept's name, ``<target>-<layer>-c<NN>``.
        folder: where its patches are written.
        cluster_size, cluster_images: patches, and different images, in the whole cluster.
        result: its summary row (``None`` before testing).
    """

    name: str
    target: str
    layer: str
    folder: Path
    patches: list[Patch]
    cluster_size: int
    cluster_images: int
    result: dict[str, Any] | None = None

    @property
    def n_images(self) -> int:
        """Different source images among the kept patches."""
        return len({p.image for p in self.patches})


@dataclass(frozen=True)
class DiscoveryOutcome:
    """What :func:`discover` produced."""

    concepts: list[DiscoveredConcept]
    result: TcavResult
    out_dir: Path
    concepts_file: Path
    report: Path
    seconds: float


@dataclass(frozen=True)
class _TargetImages:
    """A target's decoded images ``(H, W, 3)`` uint8, their file names and segments."""

    name: str
    files: list[str]
    arrays: list[np.ndarray]
    segments: list[Segments]


def discover(
    config: ExperimentConfig | str | Path,
    *,
    targets: Sequence[str] | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    trust_model_file: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> DiscoveryOutcome:
    """Discover and test concepts for the targets of an experiment file (its ``discover``
    block; the model, data, random sets, layers and statistics as for ``tcavkit run``).

    Args:
        config: the experiment YAML file, or a parsed config.
        targets: the classes to discover concepts for (default: ``discover.targets``, else
            every target of the experiment).
        out: the output folder (default: ``discover`` inside the experiment's ``output``).

    Raises:
        ConfigError, DataError, LayerError: bad settings or data, each named in one line.
    """
    started = time.perf_counter()
    say = echo or (lambda _text: None)
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, list(overrides))
    options = config.discover
    require_skimage()
    chosen = _chosen_targets(config, options, targets)
    out_dir = Path(out) if out is not None else Path(config.output) / "discover"
    check_output_folder(out_dir)
    for target in chosen:
        own_folder(out_dir / DISCOVERED_DIR / target, out_dir)
    own_folder(out_dir / GALLERY_DIR, out_dir)
    with output_lock(out_dir):
        for folder in (out_dir, out_dir / PLOTS_DIR, out_dir / GALLERY_DIR):
            remove_temporaries(folder)
        return _discover_into(
            out_dir, config, chosen, trust_model_file, progress, say, started=started
        )


def _discover_into(
    out_dir: Path,
    config: ExperimentConfig,
    chosen: list[str],
    trust_model_file: bool,
    progress: bool,
    say: Callable[[str], None],
    *,
    started: float,
) -> DiscoveryOutcome:
    """:func:`discover` once its output folder is checked and held."""
    options = config.discover
    args = experiment_arguments(
        config, trust_model_file=trust_model_file, progress=progress, discovering=chosen
    )
    adapter: ModelAdapter = args["model"]
    preprocessing: Preprocessing = args["preprocessing"]
    layers = list(dict.fromkeys(args["layers"]))
    adapter.check_layers(layers)
    if preprocessing.size is None:
        raise ConfigError(
            "tcavkit discover resizes patches to the model's input size: set "
            "model.input.size (e.g. [224, 224])"
        )
    if options.method == "nmf":
        check_crop_size(preprocessing.size, options.crops, "discover.crops")
    else:
        check_image_size(preprocessing.size, options.segments, "discover.segments")
    _check_spatial(adapter, layers, preprocessing)
    store = ArrayStore(args["cache_dir"])
    model = _PatchModel(
        adapter=adapter,
        fingerprint=adapter.fingerprint(),
        layers=layers,
        prep=preprocessing,
        fill=fill_colour(preprocessing),
        batch_size=int(args["batch_size"]),
        store=store,
    )
    timings: dict[str, float] = {}
    concepts: list[DiscoveredConcept] = []
    for target in chosen:
        with timed(timings, f"discover {target}: decode"):
            decoded = _decode_target(
                target, args["targets"][target], options, preprocessing, config.seed, store
            )
        with timed(timings, f"discover {target}: activations"):
            images, acts, steps = _segments_and_activations(decoded, model, options, progress)
        timings.update({f"discover {target}: activations, {k}": v for k, v in steps.items()})
        n_patches = sum(len(s.kept) for s in images.segments)
        say(f"{target}: {n_patches} patches from {len(images.files)} images")
        with timed(timings, f"discover {target}: cluster"):
            found = _cluster(images, acts, layers, options, config.seed, out_dir)
        if not found:
            raise DataError(
                f"discover: no cluster of target {target!r} came from at least "
                f"{options.min_images} different images at any layer: lower "
                "discover.min_images or discover.clusters, or raise discover.images"
            )
        with timed(timings, f"discover {target}: write"):
            if not concepts:  # the first write: the previous run's files no longer agree
                discard_report(out_dir)
                mark_unfinished(out_dir)
            _write_concepts(found, images, model.fill, preprocessing.size, out_dir)
        say(f"{target}: {len(found)} concepts kept at {', '.join(layers)}")
        concepts.extend(found)

    experiment = Experiment(
        **{
            **args,
            "targets": {name: args["targets"][name] for name in chosen},
            "concepts": {c.name: ConceptFolder(c.folder, len(c.patches)) for c in concepts},
            "relative": [],
        }
    )
    tested = experiment.run()
    result = _own_rows(tested, concepts, experiment)
    result.meta["timings"] = {**timings, **result.meta.get("timings", {})}
    by_name = {(r["target"], r["concept"], r["layer"]): r for r in _records(result.summary)}
    for concept in concepts:
        concept.result = by_name.get((concept.target, concept.name, concept.layer))
    concepts.sort(key=_result_order)

    result.save(out_dir)
    concepts_file = out_dir / CONCEPTS_FILE
    summary_digest = hashlib.sha256(result.summary.to_csv(index=False).encode()).hexdigest()
    document = concepts_document(concepts, options, config.seed, out_dir, summary_digest)
    atomic_write(concepts_file, json.dumps(document, indent=1, sort_keys=False) + "\n")
    report = build_report(out_dir)
    return DiscoveryOutcome(
        concepts=concepts,
        result=result,
        out_dir=out_dir,
        concepts_file=concepts_file,
        report=report,
        seconds=time.perf_counter() - started,
    )


class ConceptFolder(ImageFolder):
    """A discovered concept's folder of ``patches`` patches, resolved with at most that many
    as its minimum: its size is set by the cluster and ``discover.max_patches``, not by the
    user, so it may hold fewer than ``examples.min``. Every other set (targets, random sets)
    keeps the experiment's minimum, and so its selection and its cache keys."""

    def __init__(self, path: str | Path, patches: int) -> None:
        super().__init__(path)
        self.patches = patches

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> ImageFolderSet:
        """As :meth:`ImageFolder.resolve`, with ``min_examples`` lowered to ``patches``."""
        lowered = replace(selection, min_examples=min(selection.min_examples, self.patches))
        return super().resolve(name, lowered, digests=digests)


# ------------------------------------------------------------------ checks


def _chosen_targets(
    config: ExperimentConfig, options: DiscoverOptions, targets: Sequence[str] | None
) -> list[str]:
    chosen = list(targets or options.targets or config.targets)
    for name in chosen:
        if name not in config.targets:
            raise ConfigError(
                f"discover target {name!r} is not a target of the experiment "
                f"{list(config.targets)}: add it to targets: or choose one of them"
            )
    return list(dict.fromkeys(chosen))


def _check_spatial(adapter: ModelAdapter, layers: list[str], prep: Preprocessing) -> None:
    """Raise a LayerError for a layer whose output has no spatial structure."""
    height, width = prep.size  # type: ignore[misc]
    shape = (1, height, width, 3) if prep.channels_last else (1, 3, height, width)
    adapter.pooled_activations(torch.zeros(shape), layers, channels_last=prep.channels_last)


# ------------------------------------------------------------------ segmentation


@dataclass(frozen=True)
class _Decoded:
    """A target's images, decoded, before segmentation.

    Attributes:
        arrays: the images ``(H, W, 3)`` uint8 at the model's input size, seeded order.
        files: their file names.
        key: the cache key of their segments: what decides them (the images' content, the
            size, the discover settings, the scikit-image and Pillow versions).
    """

    name: str
    files: list[str]
    arrays: list[np.ndarray]
    key: str


def _decode_target(
    target: str,
    source: Any,
    options: DiscoverOptions,
    prep: Preprocessing,
    seed: int,
    store: ArrayStore,
) -> _Decoded:
    """The target's first ``discover.images`` images of different contents (seeded order),
    decoded at the model's input size.

    Copies (files of identical bytes) count as one image: for ``discover.min_images`` and
    for the filter on how many different images a concept comes from.
    """
    folder = Path(source.path) if isinstance(source, ImageFolder) else None
    if folder is not None and folder.is_dir():
        count = len(list_image_files(folder))
        if count < options.min_images:
            raise DataError(
                f"discover: target {target!r} has {count} images in {folder}, but a concept "
                f"must come from at least discover.min_images = {options.min_images} "
                "different images: add images to the folder or lower discover.min_images"
            )
    selection = Selection(max_examples=options.images, min_examples=options.min_images, seed=seed)
    with remembered_digests(store.root) as digests:
        resolved = source.resolve(target, selection, digests=digests)
    _check_distinct(target, resolved, options, folder)
    arrays, files = resolved.decode(prep.size, distinct=True)
    key = cache_key(
        kind="discover-segments",
        examples=resolved.fingerprint,
        images="distinct",
        size=list(prep.size),  # type: ignore[arg-type]
        settings=options.fingerprint(),
        skimage=_skimage_version(),
        pillow=PIL.__version__,
    )
    return _Decoded(target, files, arrays, key)


def _check_distinct(
    target: str, resolved: ImageFolderSet, options: DiscoverOptions, folder: Path | None
) -> None:
    """Refuse a target with fewer different contents than ``discover.min_images`` (in one
    line); warn when some of its files are copies of others (each content is used once)."""
    digests = getattr(resolved, "digests", ())
    total, distinct = len(digests), len(set(digests))
    if distinct == total:
        return
    where = folder if folder is not None else resolved.description
    if distinct < options.min_images:
        raise DataError(
            f"discover: target {target!r} has {total} images in {where} but only {distinct} "
            f"distinct {'image' if distinct == 1 else 'images'} (the others are copies), and "
            "a concept must come from at least "
            f"discover.min_images = {options.min_images} different images: add different "
            "images or lower discover.min_images"
        )
    warnings.warn(
        f"discover: {total - distinct} of the {total} images of target {target!r} in {where} "
        "are copies of other images; each content is used once",
        TcavWarning,
        stacklevel=3,
    )


def _skimage_version() -> str:
    import skimage

    return str(skimage.__version__)


def _segmenter(options: DiscoverOptions) -> Callable[[np.ndarray], Segments]:
    """Segments one image ``(H, W, 3)`` uint8: SLIC (``ace``) or the crop grid (``nmf``)."""
    if options.method == "nmf":
        return lambda array: crop_grid(array.shape[:2], options.crops)
    return lambda array: segment_image(
        array, options.segments, options.compactness, options.min_area
    )


def _cached_segments(store: ArrayStore, decoded: _Decoded) -> list[Segments] | None:
    """Every image's segments from the cache, or ``None``."""
    labels, kept = store.get(decoded.key), store.get(decoded.key + "-kept")
    if labels is None or kept is None or len(labels) != len(decoded.arrays):
        return None
    labels = np.asarray(labels)
    return [
        Segments(labels[i], np.asarray(kept[kept[:, 0] == i][:, 1:]))
        for i in range(len(decoded.arrays))
    ]


def _put_segments(store: ArrayStore, decoded: _Decoded, segments: list[Segments]) -> None:
    """Cache every image's segments: the label maps ``(n, R, H, W)`` int32 and the kept
    table ``(m, 3)`` int32 rows ``(image, resolution index, label)``."""
    table = np.concatenate(
        [
            np.column_stack([np.full(len(s.kept), i, dtype=np.int32), s.kept])
            for i, s in enumerate(segments)
        ]
    )
    meta = {"kind": "discover-segments", "target": decoded.name}
    store.put(decoded.key, np.stack([s.labels for s in segments]), meta=meta)
    store.put(decoded.key + "-kept", table, meta=meta)


def _segment_all(
    decoded: _Decoded, options: DiscoverOptions, progress: bool, clock: dict[str, float]
) -> list[Segments]:
    """Every image's segments, one image after the other (no model running beside)."""
    segment = _segmenter(options)
    arrays = tqdm(
        decoded.arrays, desc=f"segment {decoded.name}", unit="image", disable=not progress
    )
    with timed(clock, "segment"):
        return [segment(array) for array in arrays]


def _patch_list(images: _TargetImages) -> list[tuple[int, int]]:
    """Every patch as ``(image index, kept-segment index)``, image by image."""
    return [(i, j) for i, s in enumerate(images.segments) for j in range(len(s.kept))]


def _content_digest(images: _TargetImages) -> str:
    """SHA-256 of exactly what the patches are made of: every image's pixels, label maps
    and kept table (shapes included)."""
    digest = hashlib.sha256()
    for array, segs in zip(images.arrays, images.segments, strict=True):
        for part in (array, segs.labels, segs.kept):
            part = np.ascontiguousarray(part)
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(memoryview(part).cast("B"))
    return digest.hexdigest()


# ------------------------------------------------------------------ activations


@dataclass(frozen=True)
class _PatchModel:
    """What the patches' forward pass needs: the model at its layers, its inputs' form, the
    fill colour, the batch size and the cache."""

    adapter: ModelAdapter
    fingerprint: str
    layers: list[str]
    prep: Preprocessing
    fill: tuple[int, int, int]
    batch_size: int
    store: ArrayStore

    def keys(self, decoded: _Decoded) -> dict[str, str]:
        """Each layer's cache key for the target's patch activations: what decides them
        (the segments' key, the model, the layer, the preprocessing, the fill colour), known
        before anything is segmented."""
        return {
            layer: cache_key(
                kind="discover-activations",
                model=self.fingerprint,
                layer=layer,
                segments=decoded.key,
                preprocessing=self.prep.fingerprint(),
                fill=list(self.fill),
            )
            for layer in self.layers
        }


@dataclass(frozen=True)
class _Batch:
    """One batch of patches for the model.

    Attributes:
        x: the model's inputs ``(b, 3, H, W)`` float32 (``(b, H, W, 3)`` channels last).
        images: how many images are segmented so far.
        known: how many patches those images have.
    """

    x: torch.Tensor
    images: int
    known: int


def _segments_and_activations(
    decoded: _Decoded, model: _PatchModel, options: DiscoverOptions, progress: bool
) -> tuple[_TargetImages, dict[str, np.ndarray], dict[str, float]]:
    """The target's segments, the {layer: ``(m, C)``} spatially averaged activations of
    its ``m`` patches, and the seconds of each step (``segment``, ``patches``, ``forward``,
    ``waiting``: what ran).

    Both come from the cache when they can. The activations are looked up before anything is
    segmented; an entry is used only if it was computed from exactly these pixels and
    segments (their digest, in its metadata). On a cold run each image is segmented when
    its patches are first needed, in the background while the model runs (:func:`_forward`).
    """
    store, keys, clock = model.store, model.keys(decoded), {}
    segments = _cached_segments(store, decoded)
    if segments is None and all(store.get_meta(key) for key in keys.values()):
        segments = _segment_all(decoded, options, progress, clock)  # activations are kept
        _put_segments(store, decoded, segments)
    if segments is not None:
        images = _TargetImages(decoded.name, decoded.files, decoded.arrays, segments)
        digest = _content_digest(images)
        cached = _cached_activations(store, keys, digest)
        if cached is not None:
            return images, cached, clock
        acts = _forward(decoded, segments, None, model, progress, clock)
    else:
        segments = []
        acts = _forward(decoded, segments, _segmenter(options), model, progress, clock)
        _put_segments(store, decoded, segments)
        images = _TargetImages(decoded.name, decoded.files, decoded.arrays, segments)
        digest = _content_digest(images)
    _put_activations(store, keys, acts, decoded.name, digest)
    return images, acts, clock


def _cached_activations(
    store: ArrayStore, keys: dict[str, str], digest: str
) -> dict[str, np.ndarray] | None:
    """Every layer's cached activations if each entry was made from content ``digest``."""
    found = {}
    for layer, key in keys.items():
        array = store.get_float32(key)
        if array is None or store.get_meta(key).get("content") != digest:
            return None
        found[layer] = np.asarray(array)
    return found


def _put_activations(
    store: ArrayStore, keys: dict[str, str], acts: dict[str, np.ndarray], name: str, digest: str
) -> None:
    """Check that every activation is finite, and cache each layer's with the digest of the
    content it was made from."""
    for layer, array in acts.items():
        if not np.isfinite(array).all():
            raise DataError(
                f"discover: the model produced NaN or infinite values at layer {layer!r} for "
                f"patches of {name!r}; check the preprocessing and the model weights"
            )
        meta = {
            "kind": "discover-activations",
            "target": name,
            "layer": layer,
            "content": digest,
            "patches": len(array),
        }
        store.put(keys[layer], array, meta=meta)


def _forward(
    decoded: _Decoded,
    segments: list[Segments],
    segment: Callable[[np.ndarray], Segments] | None,
    model: _PatchModel,
    progress: bool,
    clock: dict[str, float],
) -> dict[str, np.ndarray]:
    """{layer: ``(m, C)``}: every patch through the model, all layers in one pass a batch.

    The batches (:func:`_patch_batches`) are made in a background thread while the model
    runs on the one before (in the main thread when :data:`OVERLAP` is off); they are the
    same either way, so the activations are too. ``clock`` gets the seconds spent
    segmenting, building patches, in the model, and waiting for a batch."""
    made = {"segment": 0.0, "patches": 0.0}
    batches = _patch_batches(decoded.arrays, segments, segment, model, made)
    stream = in_background(batches) if OVERLAP else batches
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in model.layers}
    known = None if segment is not None else sum(len(s.kept) for s in segments)
    forward = waiting = 0.0
    with closing(stream), _progress(decoded, known, progress) as advance:
        asked = time.perf_counter()
        for batch in stream:
            started = time.perf_counter()
            waiting += started - asked
            out = model.adapter.pooled_activations(
                batch.x, model.layers, channels_last=model.prep.channels_last
            )
            for layer in model.layers:
                parts[layer].append(out[layer])
            asked = time.perf_counter()
            forward += asked - started
            advance(batch)
    for step, seconds in {**made, "forward": forward, "waiting": waiting}.items():
        clock[step] = clock.get(step, 0.0) + seconds
    return {layer: torch.cat(parts[layer]).numpy() for layer in model.layers}


def _patch_batches(
    arrays: list[np.ndarray],
    segments: list[Segments],
    segment: Callable[[np.ndarray], Segments] | None,
    model: _PatchModel,
    clock: dict[str, float],
) -> Iterator[_Batch]:
    """Every patch (image by image, each image's kept segments in order) as model inputs,
    ``model.batch_size`` patches a batch, the last batch smaller.

    With ``segment``, each image is segmented when its patches are first needed and its
    segments appended to ``segments`` (given empty); without, ``segments`` holds every
    image's. ``clock`` adds up the seconds segmenting (``segment``) and building the
    patches and their tensors (``patches``)."""
    size = model.prep.size
    assert size is not None
    pending: list[np.ndarray] = []
    known = 0
    for i, array in enumerate(arrays):
        if segment is not None:
            with timed(clock, "segment"):
                segments.append(segment(array))
        segs = segments[i]
        known += len(segs.kept)
        for j in range(len(segs.kept)):
            with timed(clock, "patches"):
                pending.append(make_patch(array, segs.mask(j), model.fill, size))
            if len(pending) == model.batch_size:
                with timed(clock, "patches"):
                    x = arrays_to_tensor(pending, model.prep)
                pending = []
                yield _Batch(x, i + 1, known)
    if pending:
        with timed(clock, "patches"):
            x = arrays_to_tensor(pending, model.prep)
        yield _Batch(x, len(arrays), known)


@contextmanager
def _progress(
    decoded: _Decoded, known: int | None, progress: bool
) -> Iterator[Callable[[_Batch], None]]:
    """Progress of the patches' pass, updated from the main thread as each batch is done:
    the images segmented (when the patch count is not ``known`` yet), and the patches."""
    n_images = len(decoded.arrays)
    with (
        tqdm(
            total=n_images,
            desc=f"segment {decoded.name}",
            unit="image",
            disable=not progress or known is not None,
        ) as images,
        tqdm(
            total=known, desc=f"patches {decoded.name}", unit="patch", disable=not progress
        ) as patches,
    ):

        def advance(batch: _Batch) -> None:
            images.update(batch.images - images.n)
            if patches.total is None and batch.images == n_images:
                patches.total = batch.known  # every image segmented: the count is known
            patches.update(len(batch.x))

        yield advance
        images.update(n_images - images.n)  # the last images may have had no patch


# ------------------------------------------------------------------ clustering


def layer_tag(layer: str) -> str:
    """A layer name as a plain folder-name part (``/layer3/Conv`` → ``layer3_Conv``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer).strip("._") or "layer"


def _cluster(
    images: _TargetImages,
    acts: dict[str, np.ndarray],
    layers: list[str],
    options: DiscoverOptions,
    seed: int,
    out_dir: Path,
) -> list[DiscoveredConcept]:
    patches = _patch_list(images)
    sources = np.asarray([i for i, _ in patches], dtype=np.int64)
    scales = options.crops if options.method == "nmf" else options.segments
    found = []
    for layer in layers:
        if options.method == "nmf":
            labels, distances = nmf(acts[layer], options.clusters, seed, layer)
        else:
            labels, distances = kmeans(acts[layer], options.clusters, seed)
        kept = keep_clusters(
            labels,
            distances,
            sources,
            n_discovery=len(images.arrays),
            min_images=options.min_images,
            max_patches=options.max_patches,
        )
        tag = layer_tag(layer)
        for number, cluster in enumerate(kept, start=1):
            name = f"{images.name}-{tag}-c{number:02d}"
            members = []
            for index in cluster.nearest:
                i, j = patches[int(index)]
                segs = images.segments[i]
                resolution, label = (int(v) for v in segs.kept[j])
                mask = segs.mask(j)
                members.append(
                    Patch(
                        source=images.files[i],
                        image=i,
                        resolution=int(scales[resolution]),
                        label=label,
                        box=bounding_box(mask),
                        mask=mask,
                    )
                )
            found.append(
                DiscoveredConcept(
                    name=name,
                    target=images.name,
                    layer=layer,
                    folder=out_dir / DISCOVERED_DIR / images.name / tag / name,
                    patches=members,
                    cluster_size=len(cluster.members),
                    cluster_images=cluster.n_images,
                )
            )
    return found


# ------------------------------------------------------------------ outputs


def _write_concepts(
    concepts: list[DiscoveredConcept],
    images: _TargetImages,
    fill: tuple[int, int, int],
    size: tuple[int, int] | None,
    out_dir: Path,
) -> None:
    """Each concept's patches as ``patch_NNN.png`` in its folder, and its gallery image.

    The target's ``discovered/<target>`` folder is tcavkit's own output: it is emptied first,
    so that concept folders of an earlier run do not stay beside the new ones, and so are
    the target's gallery images; both only in folders tcavkit wrote (:func:`own_folder`)."""
    assert size is not None
    target_dir = out_dir / DISCOVERED_DIR / images.name
    if own_folder(target_dir, out_dir):
        shutil.rmtree(target_dir)
    _make_own_folder(target_dir)
    gallery = out_dir / GALLERY_DIR
    own_folder(gallery, out_dir)
    _make_own_folder(gallery)
    for old in gallery.glob(f"{images.name}-*.png"):
        old.unlink()
    for concept in concepts:
        concept.folder.mkdir(parents=True, exist_ok=True)
        for k, patch in enumerate(concept.patches):
            array = make_patch(images.arrays[patch.image], patch.mask, fill, size)
            Image.fromarray(array).save(concept.folder / PATCH_PATTERN.format(k), compress_level=1)
        first = concept.patches[0]
        outlined = outline(images.arrays[first.image], first.mask)
        Image.fromarray(outlined).save(gallery / f"{concept.name}.png")


def own_folder(folder: Path, out_dir: Path) -> bool:
    """Whether ``folder`` (inside ``out_dir``) exists, after checking that tcavkit may
    replace what it holds: no folder from ``out_dir`` down to it is a symbolic link, and
    an existing one is a folder that holds :data:`OWN_MARKER` or nothing.

    Raises:
        DataError: names the link, or the folder tcavkit did not write, and what to do.
    """
    current = out_dir
    for part in folder.relative_to(out_dir).parts:
        current = current / part
        if current.is_symlink():
            raise DataError(
                f"discover: {current} is a symbolic link, and tcavkit never deletes through "
                "a link: remove the link or choose another --out folder"
            )
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise DataError(
            f"discover: {folder} is a file, not a folder: move it away or choose another "
            "--out folder"
        )
    if not (folder / OWN_MARKER).is_file() and any(folder.iterdir()):
        raise DataError(
            f"discover: {folder} is not empty and was not written by tcavkit discover (no "
            f"{OWN_MARKER} file in it), so it is not replaced: move it away or choose "
            "another --out folder"
        )
    return True


def _make_own_folder(folder: Path) -> None:
    """Create ``folder`` (if needed) with :data:`OWN_MARKER` in it."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OWN_MARKER
    if not marker.is_file():
        atomic_write(marker, "written by tcavkit discover: replaced by its next run\n")


def outline(image: np.ndarray, mask: np.ndarray, side: int = GALLERY_SIDE) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 enlarged (nearest neighbour) to at least ``side`` pixels
    on its shorter side, with the boundary of ``mask`` drawn in yellow."""
    from skimage.segmentation import find_boundaries

    factor = max(1, -(-side // min(image.shape[:2])))
    big = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1).copy()
    big_mask = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    edge = find_boundaries(big_mask, mode="thick")
    big[edge] = (255, 230, 0)
    return big


def _own_rows(
    tested: TcavResult, concepts: list[DiscoveredConcept], experiment: Experiment
) -> TcavResult:
    """The result with each concept's rows at its own target and layer only (and every
    null row), the summary and its correction recomputed over exactly those rows."""
    runs = tested.runs
    own = {(c.target, c.name, c.layer) for c in concepts}
    keys = zip(runs["target"], runs["concept"], runs["layer"], strict=True)
    keep = runs["is_null"].astype(bool).to_numpy() | np.fromiter(
        (k in own for k in keys), dtype=bool, count=len(runs)
    )
    runs = runs[keep].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TcavWarning)  # already raised by the run
        summary = summarize(
            runs, **asdict(experiment.stats), projections=tested.projections, seed=experiment.seed
        )
    meta = {**tested.meta, "detectable": detectable_effects(summary)}
    return TcavResult(runs=runs, summary=summary, meta=meta, projections=tested.projections)


def _records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _plain(v) for k, v in row.items()} for row in summary.to_dict(orient="records")
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    return value


def _result_order(concept: DiscoveredConcept) -> tuple[int, float, str]:
    """Significant positive concepts first (largest tested statistic first), then the
    others, then significant negative ones."""
    row = concept.result or {}
    direction = str(row.get("direction") or "none")
    value = row.get("statistic_mean")
    value = -float(value) if isinstance(value, (int, float)) else 0.0
    if direction == "negative":
        value = -value
    return _DIRECTION_ORDER.get(direction, 1), value, concept.name


def concepts_document(
    concepts: list[DiscoveredConcept],
    options: DiscoverOptions,
    seed: int,
    out_dir: Path,
    summary_sha256: str,
) -> dict[str, Any]:
    """The content of ``concepts.json``: the same for the same seed, data and model.
    ``summary_sha256`` is the digest of the ``summary.csv`` it goes with (the report shows
    the gallery only beside that table)."""
    settings = asdict(options)
    settings["segments"] = list(options.segments)
    settings["crops"] = list(options.crops)
    scale = "crops" if options.method == "nmf" else "segments"
    if options.targets is not None:
        settings["targets"] = list(options.targets)
    items = []
    for concept in concepts:
        row = concept.result or {}
        items.append(
            {
                "name": concept.name,
                "target": concept.target,
                "layer": concept.layer,
                "folder": concept.folder.relative_to(out_dir).as_posix(),
                "gallery": f"{GALLERY_DIR}/{concept.name}.png",
                "n_patches": len(concept.patches),
                "n_images": concept.n_images,
                "cluster_size": concept.cluster_size,
                "cluster_images": concept.cluster_images,
                "cav_accuracy": row.get("cav_accuracy_mean"),
                "tcav_score": row.get("mean"),
                "statistic": row.get("statistic"),
                "statistic_mean": row.get("statistic_mean"),
                "p_value": row.get("p_value"),
                "p_adjusted": row.get("p_adjusted"),
                "significant": row.get("significant"),
                "direction": row.get("direction"),
                "patches": [
                    {
                        "file": PATCH_PATTERN.format(k),
                        "source": p.source,
                        scale: p.resolution,
                        "label": p.label,
                        "box": list(p.box),
                    }
                    for k, p in enumerate(concept.patches)
                ],
            }
        )
    return {
        "method": options.method,
        "settings": settings,
        "seed": seed,
        "summary_sha256": summary_sha256,
        "concepts": items,
    }
