"""A TCAV experiment: a plan over named example sets, run against the activation store.

Each unique example set passes through the model at most once (all layers at once), target
sets get one backward pass per batch (all layers at once), every CAV is trained once per
(concept, negative set, layer) and shared by every target, and each (target, layer) is
scored with one matrix product. Results come back as tables; no math lives here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import platform
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tcavkit import __version__
from tcavkit.cav import CAV, CavOptions, pair_seed
from tcavkit.cav_batch import CavTable, CavTask, cav_directions, train_cav_batch
from tcavkit.concepts.base import ExampleSet, ExampleSource, Selection
from tcavkit.concepts.digests import remembered_digests
from tcavkit.concepts.prefetch import Prefetcher
from tcavkit.concepts.preprocessing import Preprocessing
from tcavkit.concepts.sources import ImageFolder, as_source
from tcavkit.config import ExperimentConfig, load_config
from tcavkit.errors import CacheError, ConfigError, DataError, TcavWarning
from tcavkit.learners import VERSION as LEARNERS_VERSION
from tcavkit.models.adapter import ModelAdapter, OutputSelector
from tcavkit.models.loading import adapter_for, describe, load_labels, load_model
from tcavkit.results import EXTRA_RUN_COLUMNS, RUN_COLUMNS, TcavResult
from tcavkit.scoring import scores_from_derivatives
from tcavkit.stats import summarize
from tcavkit.store import ArrayStore, cache_key

MIN_RECOMMENDED_RUNS = 10
CACHE_DTYPES = ("float32", "float16")
CAV_BATCH_BYTES = 256 * 2**20  # directions of one CAV batch (the sets stream past them;
# each batch reads every set it involves twice, so larger batches read less per CAV)

Loader = Any  # () -> np.ndarray (n, d): a set's activations (or gradients) at one layer


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``random500_2`` before ``random500_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class StatsOptions:
    """Significance testing (see :mod:`tcavkit.stats` for the tests)."""

    test: str = "concept-t"
    alpha: float = 0.05
    correction: str = "holm"
    confidence: float = 0.95
    statistic: str = "effect"


@dataclass
class Counts:
    """What a run actually computed (for tests and the benchmark)."""

    forward_batches: int = 0
    backward_batches: int = 0
    sets_computed: int = 0
    sets_from_cache: int = 0
    cavs_trained: int = 0
    cavs_from_cache: int = 0


@dataclass(frozen=True)
class _RunRow:
    """One scored row: which CAV (possibly flipped) stands for which (concept, random, run)."""

    concept: str
    random: str
    run: int
    is_null: bool
    kind: str
    task: CavTask  # its seed is made layer-specific by :func:`_at_layer`
    flip: bool


class Experiment:
    """TCAV for one model, a few target classes and many concepts.

    Args:
        model: a ``torch.nn.Module`` or a :class:`~tcavkit.models.ModelAdapter`.
        layers: layer names (as in ``model.named_modules()``).
        targets: class name → examples of that class (folder path, tensor, source).
        concepts: concept name → examples.
        random: random set name → examples; each concept is trained against ``runs`` of them.
        labels: class names in output order; each target name must be one of them
            (``None``: target names are class indices such as ``"3"``).
        relative: pairs ``(A, B)`` of concepts for relative TCAV (A against B).
        runs: random runs per concept (default 20; fewer than 10 gives a warning).
        max_examples, min_examples: per-set example limits.
        cav: CAV learner options; stats: significance test options.
        preprocessing: how images become inputs (ignored for in-memory tensors).
        seed: fixes every random choice; the same seed gives identical results.
        batch_size: examples per forward/backward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (for a bare module).
        logits: the layer whose output is the logits (models ending in a softmax).
        output: which model output holds the logits (index or key) for tuple/dict outputs.
        cache_dir: cache folder for activations, gradients and CAVs (``None``: no disk
            cache; everything is kept in memory).
        cache_dtype: ``float32``, or ``float16`` to cache activations at half precision
            (half the disk; gradients and all computation stay float32).
        progress: show a progress bar per phase.
        config: the experiment file's content, recorded in the results as given.
        model_description: how the report names the model (default: its class name).
    """

    def __init__(
        self,
        model: torch.nn.Module | ModelAdapter,
        layers: Sequence[str],
        targets: Mapping[str, Any],
        concepts: Mapping[str, Any],
        random: Mapping[str, Any],
        *,
        labels: Sequence[str] | None = None,
        relative: Sequence[tuple[str, str]] = (),
        runs: int = 20,
        max_examples: int | None = 100,
        min_examples: int = 10,
        cav: CavOptions | None = None,
        stats: StatsOptions | None = None,
        preprocessing: Preprocessing | None = None,
        seed: int = 0,
        batch_size: int = 32,
        device: str = "auto",
        logits: str | None = None,
        output: OutputSelector = None,
        cache_dir: str | None = ".tcavkit-cache",
        cache_dtype: str = "float32",
        progress: bool = True,
        config: dict[str, Any] | None = None,
        model_description: str | None = None,
    ) -> None:
        if isinstance(model, ModelAdapter):
            self.adapter = model
        else:
            self.adapter = adapter_for(model, logits_layer=logits, output=output, device=device)
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("no layers given: name at least one layer (tcavkit layers MODEL)")
        self.adapter.check_layers(self.layers)
        self.targets = {name: as_source(src) for name, src in targets.items()}
        self.concepts = {name: as_source(src) for name, src in concepts.items()}
        self.random = {name: as_source(random[name]) for name in sorted(random, key=natural_key)}
        self.labels = list(labels) if labels is not None else None
        self.relative = [tuple(pair) for pair in relative]
        self.runs = runs
        self.selection = Selection(max_examples, min_examples, seed)
        self.cav = cav or CavOptions()
        self.stats = stats or StatsOptions()
        self.preprocessing = preprocessing or Preprocessing()
        self.seed = seed
        self.batch_size = batch_size
        self.store = ArrayStore(cache_dir)
        if cache_dtype not in CACHE_DTYPES:
            raise ConfigError(f"cache_dtype {cache_dtype!r}: choose one of {CACHE_DTYPES}")
        self.cache_dtype = cache_dtype
        self.progress = progress
        self.config = config
        self.model_description = (
            model_description or type(getattr(self.adapter, "module", self.adapter)).__name__
        )
        self.counts = Counts()
        self._validate()

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig | str | Path,
        *,
        overrides: Sequence[str] = (),
        trust_model_file: bool = False,
        progress: bool = True,
    ) -> Experiment:
        """Build an experiment from a YAML file (or a parsed :class:`ExperimentConfig`).

        The data folder holds one sub-folder per target, concept and random set, as in
        tensorflow/tcav (``<data>/<name>/*.jpg``, random sets ``random500_0``, ...).
        """
        base_dir = Path.cwd()
        if not isinstance(config, ExperimentConfig):
            base_dir = Path(config).resolve().parent
            config = load_config(config, list(overrides))
        spec = config.model
        adapter = load_model(
            spec, device=config.device, trust_model_file=trust_model_file, base_dir=base_dir
        )
        labels = load_labels(spec.labels)
        data = Path(config.data)
        if not data.is_dir():
            raise DataError(
                f"data folder {data} does not exist: set `data:` to the folder that holds one "
                "sub-folder per target, concept and random set"
            )
        return cls(
            adapter,
            layers=spec.layers,
            targets={name: ImageFolder(data / name) for name in config.targets},
            concepts={name: ImageFolder(data / name) for name in config.concepts},
            random={name: ImageFolder(data / name) for name in random_set_names(config)},
            labels=labels,
            relative=config.relative,
            runs=config.random.runs,
            max_examples=config.examples.max,
            min_examples=config.examples.min,
            cav=config.cav.options(),
            stats=StatsOptions(**config.stats.model_dump()),
            preprocessing=_model_preprocessing(spec.input.preprocessing(), adapter),
            seed=config.seed,
            batch_size=config.batch_size,
            cache_dir=str(config.cache) if config.cache is not None else None,
            cache_dtype=config.cache_dtype,
            progress=progress,
            config=config.model_dump(mode="json"),
            model_description=describe(spec),
        )

    def concept_cavs(self, concept: str, layer: str) -> list[CAV]:
        """The CAVs of ``concept`` at ``layer`` against each random run (cache-backed).

        Trains exactly the CAVs :meth:`run` trains for this concept and layer.
        """
        if concept not in self.concepts:
            raise ConfigError(f"unknown concept {concept!r}; concepts: {sorted(self.concepts)}")
        if layer not in self.layers:
            raise ConfigError(
                f"layer {layer!r} is not one of the experiment's layers {self.layers}"
            )
        self._sizes, self._skipped = {}, {}
        names = [concept, *self.random]
        sets = self._resolve_sets(names)
        with Prefetcher(self.preprocessing) as self._loads:
            acts = self._activations(sets, self.adapter.fingerprint(), names=names)
        rows = [row for row in self._plan() if row.kind == "concept" and row.concept == concept]
        tasks = [_at_layer(row.task, layer) for row in rows]
        batch = train_cav_batch(
            tasks, self._set_loader(acts, layer), self._sizes, self.cav, self.adapter.device
        )
        return batch.cavs()

    # -- construction checks ---------------------------------------------------------------
    def _validate(self) -> None:
        if not self.targets:
            raise ConfigError("no targets given: name at least one class to explain")
        if not self.concepts and not self.relative:
            raise ConfigError("no concepts given: name at least one concept (or a relative pair)")
        if len(self.random) < 2:
            raise ConfigError(
                f"{len(self.random)} random set(s) given: TCAV needs at least 2 (20 or more "
                "recommended) to train CAVs against and to build the null distribution"
            )
        for pair in self.relative:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(f"relative pair {pair!r}: give two different concept names")
            for name in pair:
                if name not in self.concepts:
                    raise ConfigError(
                        f"relative pair {pair!r}: {name!r} is not one of the concepts "
                        f"{sorted(self.concepts)}"
                    )
        clash = set(self.concepts) & set(self.random)
        if clash:
            raise ConfigError(f"{sorted(clash)} named both as concept and as random set")
        for name in self.targets:
            self.class_index(name)

    def class_index(self, target: str) -> int:
        """The output index of target class ``target``."""
        if self.labels is None:
            if str(target).isdigit():
                return int(target)
            raise ConfigError(
                f"target {target!r}: without model labels, targets must be class indices; "
                "give labels (class names in output order)"
            )
        if target not in self.labels:
            raise ConfigError(f"target {target!r} is not among the labels {self.labels}")
        return self.labels.index(target)

    # -- running ---------------------------------------------------------------------------
    def run(self) -> TcavResult:
        """Compute activations, gradients, CAVs, scores and statistics."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        self.counts = Counts()
        self._sizes: dict[str, int] = {}
        self._skipped: dict[str, list[str]] = {}
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TcavWarning)
                with _timed(timings, "resolve"):
                    sets = self._resolve_sets()
                    model_fp = self.adapter.fingerprint()
                order = self._to_compute(sets, model_fp)
                with Prefetcher(self.preprocessing, order) as self._loads:
                    with _timed(timings, "activations"):
                        acts = self._activations(sets, model_fp)
                    with _timed(timings, "gradients"):
                        grads = self._gradients(sets, model_fp)
                runs, cavs = self._cavs_and_scores(sets, model_fp, acts, grads, timings)
                with _timed(timings, "stats"):
                    summary = summarize(
                        runs,
                        test=self.stats.test,
                        alpha=self.stats.alpha,
                        correction=self.stats.correction,
                        confidence=self.stats.confidence,
                        statistic=self.stats.statistic,
                    )
        finally:
            # Recorded to go into the results, and re-emitted even when the run fails.
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        timings["total"] = time.perf_counter() - started
        messages = list(dict.fromkeys(str(w.message) for w in caught))
        meta = self._meta(sets, model_fp, timings, messages)
        return TcavResult(runs=runs, summary=summary, meta=meta, cavs=cavs)

    def _bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, leave=False)

    def _resolve_sets(self, names: Sequence[str] | None = None) -> dict[str, ExampleSet]:
        """The named sets (default: all) resolved once each; file digests are remembered
        in the cache folder between runs."""
        sources: dict[str, ExampleSource] = {**self.targets, **self.concepts, **self.random}
        chosen = list(sources) if names is None else list(names)
        with remembered_digests(self.store.root):
            return {name: sources[name].resolve(name, self.selection) for name in chosen}

    def _key(self, kind: str, model_fp: str, layer: str, examples: ExampleSet, **extra: Any) -> str:
        return cache_key(
            kind=kind,
            model=model_fp,
            layer=layer,
            examples=examples.fingerprint,
            preprocessing=self.preprocessing.fingerprint(),
            **extra,
        )

    def _batches(self, examples: ExampleSet) -> Iterator[torch.Tensor]:
        data = self._loads.load(examples)
        for start in range(0, len(data), self.batch_size):
            yield data[start : start + self.batch_size]

    def _activations(
        self, sets: dict[str, ExampleSet], model_fp: str, names: Sequence[str] | None = None
    ) -> dict[str, dict[str, Loader]]:
        """{set name: {layer: loader of (n, d)}} for concept and random sets; one pass per
        unique set. Loaders read the cache on each call (nothing large stays in memory)."""
        names = list(names) if names is not None else [*self.concepts, *self.random]
        by_fingerprint: dict[str, dict[str, Loader]] = {}
        result: dict[str, dict[str, Loader]] = {}
        with self._bar(len(names), "activations", "set") as bar:
            for name in names:
                examples = sets[name]
                if examples.fingerprint not in by_fingerprint:
                    by_fingerprint[examples.fingerprint] = self._layer_arrays(
                        examples,
                        self._activation_keys(model_fp, examples),
                        lambda x: self.adapter.activations(x, self.layers),
                        "forward_batches",
                        storage=self.cache_dtype,
                    )
                result[name] = by_fingerprint[examples.fingerprint]
                bar.update()
        return result

    def _gradients(
        self, sets: dict[str, ExampleSet], model_fp: str
    ) -> dict[str, dict[str, Loader]]:
        """{target: {layer: loader of (n, d)}}: gradients of the target's class logit."""
        result = {}
        with self._bar(len(self.targets), "gradients", "target") as bar:
            for name in self.targets:
                index = self.class_index(name)
                examples = sets[name]
                result[name] = self._layer_arrays(
                    examples,
                    self._gradient_keys(model_fp, name, examples),
                    lambda x, k=index: self.adapter.gradients(x, k, self.layers),
                    "backward_batches",
                    storage=self.cache_dtype,
                )
                bar.update()
        return result

    def _activation_keys(self, model_fp: str, examples: ExampleSet) -> dict[str, str]:
        """{layer: cache key} of a set's activations."""
        extra = self._storage_key()
        return {
            layer: self._key("activations", model_fp, layer, examples, **extra)
            for layer in self.layers
        }

    def _gradient_keys(self, model_fp: str, target: str, examples: ExampleSet) -> dict[str, str]:
        """{layer: cache key} of the gradients of ``target``'s class logit on its examples."""
        return {
            layer: self._key(
                "gradients",
                model_fp,
                layer,
                examples,
                class_index=self.class_index(target),
                logits=self.adapter.logits_layer,
                output=self.adapter.output,
                **self._storage_key(),
            )
            for layer in self.layers
        }

    def _to_compute(self, sets: dict[str, ExampleSet], model_fp: str) -> list[ExampleSet]:
        """The sets that go through the model in this run, in the order they will: concept
        and random sets missing from the cache (each content once), then targets."""
        order: list[ExampleSet] = []
        seen: set[str] = set()
        for name in [*self.concepts, *self.random]:
            examples = sets[name]
            if examples.fingerprint not in seen:
                seen.add(examples.fingerprint)
                if not self._cached(self._activation_keys(model_fp, examples)):
                    order.append(examples)
        for name in self.targets:
            if not self._cached(self._gradient_keys(model_fp, name, sets[name])):
                order.append(sets[name])
        return order

    def _cached(self, keys: dict[str, str]) -> bool:
        return all(self.store.get(key) is not None for key in keys.values())

    def _layer_arrays(
        self,
        examples: ExampleSet,
        keys: dict[str, str],
        compute: Any,
        counter: str,
        *,
        storage: str = "float32",
    ) -> dict[str, Loader]:
        """Per-layer loaders of arrays from the store, or computed batch by batch and stored.

        With ``storage="float16"`` arrays are cached at half precision (unless a value
        exceeds the float16 range) and read back as float32.
        """
        cached = {layer: self.store.get(key) for layer, key in keys.items()}
        if all(array is not None for array in cached.values()):
            self.counts.sets_from_cache += 1
            skipped = self.store.get_meta(next(iter(keys.values()))).get("skipped", [])
            self._note_skipped(examples.name, skipped, from_cache=True)
            self._sizes[examples.name] = len(next(iter(cached.values())))  # type: ignore[arg-type]
            return {layer: self._cache_loader(key) for layer, key in keys.items()}
        del cached
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in keys}
        for batch in self._batches(examples):
            out = compute(batch)
            setattr(self.counts, counter, getattr(self.counts, counter) + 1)
            for layer in keys:
                parts[layer].append(out[layer])
        self.counts.sets_computed += 1
        skipped = [str(path) for path in examples.skipped]
        self._note_skipped(examples.name, skipped, from_cache=False)
        loaders: dict[str, Loader] = {}
        for layer, key in keys.items():
            array = torch.cat(parts.pop(layer)).numpy()
            _check_finite(array, examples.name, layer)
            self._sizes[examples.name] = len(array)
            if self.store.root is None:
                loaders[layer] = lambda array=array: array
                continue
            meta = {"set": examples.name, "layer": layer, "skipped": skipped}
            if storage == "float16":
                array, meta["scale"] = _to_half(array)
            self.store.put(key, array, meta=meta)
            loaders[layer] = self._cache_loader(key)
        return loaders

    def _storage_key(self) -> dict[str, str]:
        """Cache-key part for the storage precision (none for float32, as before)."""
        return {} if self.cache_dtype == "float32" else {"storage": self.cache_dtype}

    def _cache_loader(self, key: str) -> Loader:
        """A loader of the float32 array under ``key`` (float16 entries are scaled back)."""
        scale = float(self.store.get_meta(key).get("scale", 1.0))

        def load() -> np.ndarray:
            array = self.store.get(key, writable_copy=True)
            if array is None:
                raise CacheError(
                    f"cache entry {key} disappeared during the run (was the cache folder "
                    f"{self.store.root} cleared?); run again"
                )
            if array.dtype == np.float16:
                return array.astype(np.float32) * np.float32(scale)
            return array

        return load

    def _set_loader(self, acts: dict[str, dict[str, Loader]], layer: str) -> Any:
        """set name → float32 tensor ``(n, d)`` on the model's device, read when asked."""
        device = self.adapter.device

        def load(name: str) -> torch.Tensor:
            return torch.from_numpy(acts[name][layer]()).to(device=device, dtype=torch.float32)

        return load

    def _note_skipped(self, name: str, skipped: list[str], *, from_cache: bool) -> None:
        """Remember skipped files for the results; repeat the warning on a cache hit."""
        self._skipped[name] = list(skipped)
        if from_cache:
            for path in skipped:
                warnings.warn(
                    f"example set '{name}': unreadable file {path} was skipped (cached result)",
                    TcavWarning,
                    stacklevel=4,
                )

    def _plan(self) -> list[_RunRow]:
        """Every scored row of one layer-independent plan (tasks carry the layer later)."""
        random_names = list(self.random)
        n_runs = min(self.runs, len(random_names))
        if self.runs > len(random_names):
            warnings.warn(
                f"runs: {self.runs} random runs asked for but only {len(random_names)} random "
                f"sets exist; using {n_runs}. Add random sets to get more runs",
                TcavWarning,
                stacklevel=3,
            )
        if n_runs < MIN_RECOMMENDED_RUNS:
            warnings.warn(
                f"only {n_runs} random runs per concept: fewer than {MIN_RECOMMENDED_RUNS} "
                "gives unstable scores and weak tests; use 20 or more random sets",
                TcavWarning,
                stacklevel=3,
            )
        plan: list[_RunRow] = []
        for concept in self.concepts:
            for run, negative in enumerate(random_names[:n_runs]):
                task = CavTask(concept, negative, pair_seed(self.seed, concept, negative))
                plan.append(_RunRow(concept, negative, run, False, "concept", task, False))
        for a, b in self.relative:
            for run in range(n_runs):
                task = CavTask(a, b, pair_seed(self.seed, a, b, str(run)))
                plan.append(_RunRow(f"{a} vs {b}", b, run, False, "relative", task, False))
        n_null = min(n_runs, len(random_names) - 1)
        for j, pseudo in enumerate(random_names):
            others = [name for name in random_names if name != pseudo][:n_null]
            for run, other in enumerate(others):
                k = random_names.index(other)
                first, second = (pseudo, other) if j < k else (other, pseudo)
                task = CavTask(first, second, pair_seed(self.seed, first, second))
                plan.append(_RunRow(pseudo, other, run, True, "null", task, j > k))
        return plan

    def _cavs_and_scores(
        self,
        sets: dict[str, ExampleSet],
        model_fp: str,
        acts: dict[str, dict[str, Loader]],
        grads: dict[str, dict[str, Loader]],
        timings: dict[str, float],
    ) -> tuple[pd.DataFrame, CavTable]:
        """Train (or load) every CAV of each layer in batches and score each batch at once.

        Each distinct (positive, negative) pair is trained once per layer and shared by
        every target; a batch's directions meet all targets' gradients in one product.
        """
        plan = self._plan()
        table = CavTable()
        frames = []
        timings["cavs"] = timings["scores"] = 0.0
        device = self.adapter.device
        targets = list(self.targets)
        layer_tasks = {
            layer: list(dict.fromkeys(_at_layer(row.task, layer) for row in plan))
            for layer in self.layers
        }
        total = sum(len(tasks) for tasks in layer_tasks.values())
        with self._bar(total, "CAVs", "cav") as bar:
            for layer, tasks in layer_tasks.items():
                target_grads = [np.asarray(grads[t][layer](), dtype=np.float32) for t in targets]
                bounds = np.cumsum([0, *(len(g) for g in target_grads)])
                g = torch.from_numpy(np.concatenate(target_grads)).to(device)
                del target_grads
                scores = np.empty((len(targets), len(tasks), 6))

                score = partial(self._score_batch, g, bounds, scores, timings)
                began = time.perf_counter()
                coefficients, stats = self._layer_cavs(
                    sets, model_fp, layer, tasks, acts, g.shape[1], score, bar
                )
                timings["cavs"] += time.perf_counter() - began
                table.add_layer(
                    layer,
                    tasks,
                    coefficients,
                    stats,
                    partial(
                        cav_directions,
                        load=self._set_loader(acts, layer),
                        sizes=self._sizes,
                        options=self.cav,
                        device=device,
                    ),
                )
                del g
                frames.append(self._layer_rows(plan, layer, tasks, scores, stats))
        runs = pd.concat(frames, ignore_index=True)[[*RUN_COLUMNS, *EXTRA_RUN_COLUMNS]]
        order = {name: i for i, name in enumerate(self.targets)}
        runs = runs.sort_values(
            ["target", "is_null"],
            key=lambda col: col.map(order) if col.name == "target" else col,
            kind="stable",
        ).reset_index(drop=True)
        return runs, table

    @staticmethod
    def _score_batch(
        g: torch.Tensor,
        bounds: np.ndarray,
        scores: np.ndarray,
        timings: dict[str, float],
        directions: torch.Tensor,
        start: int,
    ) -> None:
        """Score a batch of CAVs ``(b, d)`` for every target at once (both orientations).

        Args:
            g: all targets' gradients ``(n_all, d)``, target k in rows ``bounds[k]:bounds[k+1]``.
            scores: ``(n_targets, m, 6)`` filled at rows ``start:start+b`` with score,
                magnitude and magnitude ratio, then the same for the flipped direction.
        """
        began = time.perf_counter()
        derivs = (g @ directions.T).double().cpu().numpy()
        stop = start + derivs.shape[1]
        for k in range(len(bounds) - 1):
            part = derivs[bounds[k] : bounds[k + 1]]
            for offset, sign in ((0, 1.0), (3, -1.0)):
                found = scores_from_derivatives(sign * part)
                scores[k, start:stop, offset] = found.tcav_score
                scores[k, start:stop, offset + 1] = found.magnitude
                scores[k, start:stop, offset + 2] = found.magnitude_ratio
        timings["scores"] += time.perf_counter() - began

    def _layer_cavs(
        self,
        sets: dict[str, ExampleSet],
        model_fp: str,
        layer: str,
        tasks: list[CavTask],
        acts: dict[str, dict[str, Loader]],
        dim: int,
        score: Any,
        bar: tqdm,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``(m, n_train)`` and stats ``(m, 3)`` of ``tasks`` at ``layer``,
        trained batch by batch, or read from the cache (then only the directions are
        rebuilt from the activations). Each batch's directions are scored by ``score``.

        The cache keeps the learners' coefficients, not the directions: a few hundred bytes
        per CAV instead of four bytes per activation value, and the same scores, since the
        directions are rebuilt by the same products in the same batches.
        """
        key = self._cav_key(sets, model_fp, layer, tasks)
        stats_key = cache_key(kind="cav-stats", cavs=key)
        step = max(1, CAV_BATCH_BYTES // (4 * dim))
        chunks = [(start, min(start + step, len(tasks))) for start in range(0, len(tasks), step)]
        load = self._set_loader(acts, layer)
        buffer = torch.empty(
            min(step, len(tasks)), dim, dtype=torch.float32, device=self.adapter.device
        )
        cached = self.store.get(key)
        cached_stats = self.store.get(stats_key)
        if (
            cached is not None
            and cached_stats is not None
            and len(cached) == len(tasks)
            and cached_stats.shape == (len(tasks), 3)
        ):
            coefficients = np.array(cached)
            for start, stop in chunks:
                directions = cav_directions(
                    tasks[start:stop],
                    coefficients[start:stop],
                    load,
                    self._sizes,
                    self.cav,
                    self.adapter.device,
                    out=buffer,
                )
                score(directions, start)
                bar.update(stop - start)
            self.counts.cavs_from_cache += len(tasks)
            return coefficients, np.array(cached_stats)
        del cached, cached_stats
        stats = np.empty((len(tasks), 3))
        parts: list[np.ndarray] = []
        for start, stop in chunks:
            batch = train_cav_batch(
                tasks[start:stop], load, self._sizes, self.cav, self.adapter.device, out=buffer
            )
            stats[start:stop, 0] = batch.intercepts
            stats[start:stop, 1] = batch.accuracies
            stats[start:stop, 2] = batch.separations
            score(batch.directions, start)
            parts.append(batch.coefficients)
            self.counts.cavs_trained += stop - start
            bar.update(stop - start)
            del batch
        width = max(part.shape[1] for part in parts)
        coefficients = np.concatenate(
            [np.pad(part, ((0, 0), (0, width - part.shape[1]))) for part in parts]
        )
        meta = {"layer": layer, "cavs": len(tasks), "method": self.cav.method}
        self.store.put(key, coefficients, meta=meta)
        self.store.put(stats_key, stats, meta={"cavs": key})
        return coefficients, stats

    def _cav_key(
        self, sets: dict[str, ExampleSet], model_fp: str, layer: str, tasks: list[CavTask]
    ) -> str:
        """Content key of a layer's CAVs: the activations they are trained on, the tasks'
        examples and seeds, and the learner."""
        digest = hashlib.sha256()
        for task in tasks:
            digest.update(
                f"{sets[task.positive].fingerprint}|{sets[task.negative].fingerprint}|"
                f"{task.seed}\n".encode()
            )
        return cache_key(
            kind="cav-coefficients",
            model=model_fp,
            layer=layer,
            preprocessing=self.preprocessing.fingerprint(),
            storage=self.cache_dtype,
            cav=asdict(self.cav),
            learners=LEARNERS_VERSION,
            tasks=digest.hexdigest(),
        )

    def _layer_rows(
        self,
        plan: list[_RunRow],
        layer: str,
        tasks: list[CavTask],
        scores: np.ndarray,
        stats: np.ndarray,
    ) -> pd.DataFrame:
        """The runs-table rows of one layer: every planned row for every target."""
        position = {task: i for i, task in enumerate(tasks)}
        index = np.array([position[_at_layer(row.task, layer)] for row in plan])
        flip = np.array([row.flip for row in plan])
        accuracy, separation = stats[index, 1], stats[index, 2]
        frames = []
        for k, target in enumerate(self.targets):
            chosen = np.where(flip[:, None], scores[k, index, 3:], scores[k, index, :3])
            magnitude = chosen[:, 1]
            frames.append(
                pd.DataFrame(
                    {
                        "target": target,
                        "concept": [row.concept for row in plan],
                        "layer": layer,
                        "random": [row.random for row in plan],
                        "run": [row.run for row in plan],
                        "tcav_score": chosen[:, 0],
                        "magnitude": magnitude,
                        "cav_accuracy": accuracy,
                        "is_null": [row.is_null for row in plan],
                        "magnitude_ratio": chosen[:, 2],
                        "separation": separation,
                        "effect": magnitude * separation,
                        "kind": [row.kind for row in plan],
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def _meta(
        self,
        sets: dict[str, ExampleSet],
        model_fp: str,
        timings: dict[str, float],
        messages: list[str],
    ) -> dict[str, Any]:
        roles = {
            **{name: "random" for name in self.random},
            **{name: "concept" for name in self.concepts},
            **{name: "target" for name in self.targets},
        }
        return {
            "tcavkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seed": self.seed,
            "config": self.config if self.config is not None else self._config_dict(),
            "versions": _versions(),
            "model": {
                "fingerprint": model_fp,
                "description": self.model_description,
                "layers": self.layers,
                "labels": self.labels,
            },
            "sets": {
                name: {
                    "role": roles[name],
                    "n_examples": self._sizes.get(name),
                    "description": sets[name].description,
                    "fingerprint": sets[name].fingerprint,
                    "skipped": self._skipped.get(name, []),
                }
                for name in sets
            },
            "stats": asdict(self.stats),
            "warnings": messages,
            "timings": timings,
            "counts": asdict(self.counts),
        }

    def _config_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "targets": list(self.targets),
            "concepts": list(self.concepts),
            "random": list(self.random),
            "relative": [list(p) for p in self.relative],
            "runs": self.runs,
            "examples": {"max": self.selection.max_examples, "min": self.selection.min_examples},
            "cav": asdict(self.cav),
            "stats": asdict(self.stats),
            "preprocessing": asdict(self.preprocessing),
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def _to_half(array: np.ndarray) -> tuple[np.ndarray, float]:
    """``array`` as float16 divided by a power of two that puts its largest magnitude near
    2**14 (no overflow; small gradients keep their precision); returns (half, scale)."""
    peak = float(np.abs(array).max(initial=0.0))
    scale = 2.0 ** (np.ceil(np.log2(peak)) - 14) if peak > 0 else 1.0
    return (array / np.float32(scale)).astype(np.float16), scale


def _model_preprocessing(preprocessing: Preprocessing, adapter: ModelAdapter) -> Preprocessing:
    """Resize to the model's fixed input size (Keras, ONNX) when ``input.size`` is unset."""
    size = getattr(adapter, "input_size", None)
    if preprocessing.size is None and size:
        return replace(preprocessing, size=tuple(size))
    return preprocessing


def _at_layer(task: CavTask, layer: str) -> CavTask:
    """The task at one layer: each layer's CAV gets its own seed."""
    return CavTask(task.positive, task.negative, pair_seed(task.seed, layer))


def random_set_names(config: ExperimentConfig) -> list[str]:
    """The random sets of a config: a glob over the data folder's sub-folders, or a list."""
    if isinstance(config.random.sets, list):
        return list(config.random.sets)
    pattern = config.random.sets
    data = Path(config.data)
    names = sorted(
        (p.name for p in data.iterdir() if p.is_dir() and fnmatch.fnmatchcase(p.name, pattern)),
        key=natural_key,
    )
    if not names:
        raise DataError(
            f"random.sets {pattern!r} matches no folder in {data}: create random sets such "
            "as random500_0, random500_1, ... or list their folder names in random.sets"
        )
    return names


def _check_finite(array: np.ndarray, name: str, layer: str) -> None:
    if not np.isfinite(array).all():
        raise DataError(
            f"set {name!r}: the model produced NaN or infinite values at layer {layer!r}; "
            "check the inputs' preprocessing and the model weights"
        )


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = time.perf_counter() - start


def _versions() -> dict[str, str]:
    """Versions of the packages behind a result (read from their metadata: importing
    scikit-learn and matplotlib here alone took 0.4 s of a run)."""
    found = {
        "tcavkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for package in ("numpy", "scipy", "scikit-learn", "pandas", "matplotlib"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
