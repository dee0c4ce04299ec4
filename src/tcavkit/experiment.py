"""A TCAV experiment: a plan over named example sets, run against the activation store.

Each unique example set passes through the model at most once (all layers at once), target
sets get one backward pass per batch (all layers at once), every CAV is trained once per
(concept, negative set, layer) and shared by every target, and each (target, layer) is
scored with one matrix product. Results come back as tables; no math lives here.
"""

from __future__ import annotations

import fnmatch
import platform
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tcavkit import __version__
from tcavkit.cav import CAV, CavOptions, pair_seed, train_cav
from tcavkit.concepts.base import ExampleSet, ExampleSource, Selection
from tcavkit.concepts.preprocessing import Preprocessing
from tcavkit.concepts.sources import ImageFolder, as_source
from tcavkit.config import ExperimentConfig, load_config
from tcavkit.errors import ConfigError, DataError, TcavWarning
from tcavkit.models.adapter import ModelAdapter, OutputSelector, TorchModel
from tcavkit.models.loading import describe, load_labels, load_model
from tcavkit.results import EXTRA_RUN_COLUMNS, RUN_COLUMNS, TcavResult
from tcavkit.scoring import tcav_scores
from tcavkit.stats import summarize
from tcavkit.store import ArrayStore, cache_key

MIN_RECOMMENDED_RUNS = 10


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


@dataclass(frozen=True)
class _CavTask:
    """One CAV to train: ``positive`` against ``negative`` at ``layer``."""

    positive: str
    negative: str
    layer: str
    seed: int


@dataclass(frozen=True)
class _RunRow:
    """One scored row: which CAV (possibly flipped) stands for which (concept, random, run)."""

    concept: str
    random: str
    run: int
    is_null: bool
    kind: str
    task: _CavTask
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
        cache_dir: activation cache folder (``None``: no disk cache).
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
        progress: bool = True,
        config: dict[str, Any] | None = None,
        model_description: str | None = None,
    ) -> None:
        if isinstance(model, ModelAdapter):
            self.adapter = model
        else:
            self.adapter = TorchModel(model, logits_layer=logits, output=output, device=device)
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
            preprocessing=spec.input.preprocessing(),
            seed=config.seed,
            batch_size=config.batch_size,
            cache_dir=str(config.cache) if config.cache is not None else None,
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
        self.adapter.check_layers([layer])
        self._sizes, self._skipped = {}, {}
        names = [concept, *self.random]
        sources = {name: {**self.concepts, **self.random}[name] for name in names}
        sets = {name: src.resolve(name, self.selection) for name, src in sources.items()}
        acts = self._activations(sets, self.adapter.fingerprint(), names=names)
        rows = [row for row in self._plan() if row.kind == "concept" and row.concept == concept]
        return [
            train_cav(
                acts[concept][layer],
                acts[row.random][layer],
                self.cav,
                pair_seed(row.task.seed, layer),
            )
            for row in rows
        ]

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
                with _timed(timings, "activations"):
                    acts = self._activations(sets, model_fp)
                with _timed(timings, "gradients"):
                    grads = self._gradients(sets, model_fp)
                with _timed(timings, "cavs"):
                    rows, cavs = self._train_cavs(acts)
                with _timed(timings, "scores"):
                    runs = self._score(rows, cavs, grads)
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
        trained = {(t.positive, t.negative, t.layer): cav for t, cav in cavs.items()}
        return TcavResult(runs=runs, summary=summary, meta=meta, cavs=trained)

    def _bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, leave=False)

    def _resolve_sets(self) -> dict[str, ExampleSet]:
        """Every named set resolved once (names shared between roles resolve once)."""
        sources: dict[str, ExampleSource] = {**self.targets, **self.concepts, **self.random}
        return {name: src.resolve(name, self.selection) for name, src in sources.items()}

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
        data = examples.load(self.preprocessing)
        for start in range(0, len(data), self.batch_size):
            yield data[start : start + self.batch_size]

    def _activations(
        self, sets: dict[str, ExampleSet], model_fp: str, names: Sequence[str] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """{set name: {layer: (n, d)}} for concept and random sets; one pass per unique set."""
        names = list(names) if names is not None else [*self.concepts, *self.random]
        by_fingerprint: dict[str, dict[str, np.ndarray]] = {}
        result: dict[str, dict[str, np.ndarray]] = {}
        with self._bar(len(names), "activations", "set") as bar:
            for name in names:
                examples = sets[name]
                if examples.fingerprint not in by_fingerprint:
                    by_fingerprint[examples.fingerprint] = self._layer_arrays(
                        examples,
                        {
                            layer: self._key("activations", model_fp, layer, examples)
                            for layer in self.layers
                        },
                        lambda x: self.adapter.activations(x, self.layers),
                        "forward_batches",
                    )
                result[name] = by_fingerprint[examples.fingerprint]
                self._sizes[name] = len(next(iter(result[name].values())))
                bar.update()
        return result

    def _gradients(
        self, sets: dict[str, ExampleSet], model_fp: str
    ) -> dict[str, dict[str, np.ndarray]]:
        """{target: {layer: (n, d)}}: gradients of the target's class logit."""
        result = {}
        with self._bar(len(self.targets), "gradients", "target") as bar:
            for name in self.targets:
                index = self.class_index(name)
                examples = sets[name]
                keys = {
                    layer: self._key(
                        "gradients",
                        model_fp,
                        layer,
                        examples,
                        class_index=index,
                        logits=self.adapter.logits_layer,
                        output=self.adapter.output,
                    )
                    for layer in self.layers
                }
                result[name] = self._layer_arrays(
                    examples,
                    keys,
                    lambda x, k=index: self.adapter.gradients(x, k, self.layers),
                    "backward_batches",
                )
                self._sizes[name] = len(next(iter(result[name].values())))
                bar.update()
        return result

    def _layer_arrays(
        self, examples: ExampleSet, keys: dict[str, str], compute: Any, counter: str
    ) -> dict[str, np.ndarray]:
        """Per-layer arrays from the store, or computed batch by batch and stored."""
        cached = {layer: self.store.get(key) for layer, key in keys.items()}
        if all(array is not None for array in cached.values()):
            self.counts.sets_from_cache += 1
            skipped = self.store.get_meta(next(iter(keys.values()))).get("skipped", [])
            self._note_skipped(examples.name, skipped, from_cache=True)
            return cached  # type: ignore[return-value]
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in keys}
        for batch in self._batches(examples):
            out = compute(batch)
            setattr(self.counts, counter, getattr(self.counts, counter) + 1)
            for layer in keys:
                parts[layer].append(out[layer])
        self.counts.sets_computed += 1
        skipped = [str(path) for path in examples.skipped]
        self._note_skipped(examples.name, skipped, from_cache=False)
        arrays = {}
        for layer, key in keys.items():
            array = torch.cat(parts[layer]).numpy()
            _check_finite(array, examples.name, layer)
            meta = {"set": examples.name, "layer": layer, "skipped": skipped}
            self.store.put(key, array, meta=meta)
            stored = self.store.get(key)
            arrays[layer] = stored if stored is not None else array
        return arrays

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
                task = _CavTask(concept, negative, "", pair_seed(self.seed, concept, negative))
                plan.append(_RunRow(concept, negative, run, False, "concept", task, False))
        for a, b in self.relative:
            for run in range(n_runs):
                task = _CavTask(a, b, "", pair_seed(self.seed, a, b, str(run)))
                plan.append(_RunRow(f"{a} vs {b}", b, run, False, "relative", task, False))
        n_null = min(n_runs, len(random_names) - 1)
        for j, pseudo in enumerate(random_names):
            others = [name for name in random_names if name != pseudo][:n_null]
            for run, other in enumerate(others):
                k = random_names.index(other)
                first, second = (pseudo, other) if j < k else (other, pseudo)
                task = _CavTask(first, second, "", pair_seed(self.seed, first, second))
                plan.append(_RunRow(pseudo, other, run, True, "null", task, j > k))
        return plan

    def _train_cavs(
        self, acts: dict[str, dict[str, np.ndarray]]
    ) -> tuple[list[_RunRow], dict[_CavTask, CAV]]:
        """Train each distinct (positive, negative, layer) CAV once."""
        plan = self._plan()
        tasks = list(
            dict.fromkeys(
                _CavTask(row.task.positive, row.task.negative, layer, row.task.seed)
                for layer in self.layers
                for row in plan
            )
        )
        cavs: dict[_CavTask, CAV] = {}
        with self._bar(len(tasks), "CAVs", "cav") as bar:
            for task in tasks:
                pos = acts[task.positive][task.layer]
                neg = acts[task.negative][task.layer]
                cavs[task] = train_cav(pos, neg, self.cav, pair_seed(task.seed, task.layer))
                self.counts.cavs_trained += 1
                bar.update()
        return plan, cavs

    def _score(
        self,
        plan: list[_RunRow],
        cavs: dict[_CavTask, CAV],
        grads: dict[str, dict[str, np.ndarray]],
    ) -> pd.DataFrame:
        """The runs table: every planned row scored for every target and layer."""
        records = []
        for layer in self.layers:
            chosen = [
                cavs[_CavTask(row.task.positive, row.task.negative, layer, row.task.seed)]
                for row in plan
            ]
            oriented = [
                cav.flipped() if row.flip else cav for row, cav in zip(plan, chosen, strict=True)
            ]
            directions = np.stack([cav.direction for cav in oriented])
            for target in self.targets:
                scores = tcav_scores(grads[target][layer], directions)
                for i, (row, cav) in enumerate(zip(plan, oriented, strict=True)):
                    records.append(
                        {
                            "target": target,
                            "concept": row.concept,
                            "layer": layer,
                            "random": row.random,
                            "run": row.run,
                            "tcav_score": scores.tcav_score[i],
                            "magnitude": scores.magnitude[i],
                            "cav_accuracy": cav.accuracy,
                            "is_null": row.is_null,
                            "magnitude_ratio": scores.magnitude_ratio[i],
                            "separation": cav.separation,
                            "effect": scores.magnitude[i] * cav.separation,
                            "kind": row.kind,
                        }
                    )
        runs = pd.DataFrame.from_records(records, columns=[*RUN_COLUMNS, *EXTRA_RUN_COLUMNS])
        order = {name: i for i, name in enumerate(self.targets)}
        return runs.sort_values(
            ["target", "is_null"],
            key=lambda col: col.map(order) if col.name == "target" else col,
            kind="stable",
        ).reset_index(drop=True)

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
    import matplotlib
    import scipy
    import sklearn

    return {
        "tcavkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
    }
