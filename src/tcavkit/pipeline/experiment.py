"""The :class:`Experiment` facade: validated settings, and ``run()``.

A run goes through the rooms of :mod:`tcavkit.pipeline` in order: the plan
(:mod:`~tcavkit.pipeline.plan`), the example sets resolved and fingerprinted, the model
passes (:mod:`~tcavkit.pipeline.passes`), CAVs and scores
(:mod:`~tcavkit.pipeline.training`), then the statistics (:mod:`tcavkit.stats`). Each call
makes a fresh :class:`~tcavkit.pipeline.context.RunContext`; the experiment object holds
only its settings.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcavkit.cav.vector import CAV
from tcavkit.config import ExperimentConfig, load_config
from tcavkit.errors import ConfigError, DataError, TcavWarning
from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
from tcavkit.examples.digests import remembered_digests
from tcavkit.examples.locate import check_sets_exist, set_names_in, source_for
from tcavkit.examples.prefetch import Prefetcher
from tcavkit.examples.sources import as_source
from tcavkit.models.adapter import ModelAdapter, OutputSelector, Pooling
from tcavkit.models.deferred import open_model
from tcavkit.models.loading import adapter_for, describe, load_labels, load_model
from tcavkit.options import (
    CACHE_DTYPES,
    EXECUTORS,
    GRADIENTS,
    CavOptions,
    ExampleLimits,
    Preprocessing,
    RayOptions,
    StatsOptions,
    check_choice,
)
from tcavkit.pipeline.context import RunContext
from tcavkit.pipeline.executor import ModelLoader, open_executor, timed
from tcavkit.pipeline.keys import KeyMaker
from tcavkit.pipeline.passes import (
    activation_pass,
    check_model,
    gradient_keys,
    layer_loader,
    sets_to_compute,
)
from tcavkit.pipeline.plan import Plan, at_layer, natural_key, plan_runs
from tcavkit.pipeline.projections import projections_table
from tcavkit.results import TcavResult, provenance
from tcavkit.stats import chosen_test, detectable_effects, negative_controls, summarize
from tcavkit.store import ArrayStore

if TYPE_CHECKING:  # torch is imported where the model runs or CAVs are trained
    import torch


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
        cav: CAV learner options; stats: significance test options (both validated when
            they are made, so a bad value fails before any model runs).
        preprocessing: how images become inputs (ignored for in-memory tensors).
        seed: fixes every random choice; the same seed gives identical results.
        batch_size: examples per forward/backward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (for a bare module).
        logits: the layer whose output is the logits (models ending in a softmax).
        output: which model output holds the logits (index or key) for tuple/dict outputs.
        pooling: how a bare module's sequence outputs ``(n, T, H)`` become ``(n, H)``:
            ``none`` (default: flattened), ``cls``, ``mean`` or ``last``, or a mapping of
            layer names to them (see :mod:`tcavkit.models.pooling`); an adapter has its own.
        gradient: what the target gradients differentiate: ``logit`` (default: the class
            logit, TCAV's definition) or ``log_softmax`` (the class's log-softmax,
            tensorflow/tcav's default); the two can give different scores.
        cache_dir: cache folder for activations, gradients and CAVs (``None``: no disk
            cache; everything is kept in memory).
        cache_dtype: ``float32``, or ``float16`` to cache activations at half precision
            (half the disk; gradients and all computation stay float32).
        progress: show a progress bar per phase.
        config: the experiment file's content, recorded in the results as given.
        model_description: how the report names the model (default: its class name).
        executor: where the model passes and the CAVs run: ``local`` (default: this
            process) or ``ray`` (a Ray cluster; needs ``pip install 'tcavkit[ray]'`` and a
            cache folder every node sees; see :mod:`tcavkit.pipeline.ray_executor`).
            Both give the same tables.
        ray: where and how ``executor="ray"`` runs (address, workers, resources).
        model_loader: ``() -> adapter``, how a Ray worker builds the model (each loads it
            once and checks its fingerprint against this one's); ``None``: the adapter
            itself is sent to the workers. :meth:`from_config` loads the model file.
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
        pooling: Pooling | None = None,
        gradient: str = "logit",
        cache_dir: str | None = ".tcavkit-cache",
        cache_dtype: str = "float32",
        progress: bool = True,
        config: dict[str, Any] | None = None,
        model_description: str | None = None,
        executor: str = "local",
        ray: RayOptions | None = None,
        model_loader: ModelLoader | None = None,
    ) -> None:
        if isinstance(model, ModelAdapter):
            if pooling is not None:
                raise ConfigError(
                    "pooling= is for a bare module; an adapter has its own: "
                    "TorchModel(module, pooling=...) or adapter.set_pooling(...)"
                )
            self.adapter = model
        else:
            self.adapter = adapter_for(
                model, logits_layer=logits, output=output, device=device, pooling=pooling or "none"
            )
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("no layers given: name at least one layer (tcavkit layers MODEL)")
        self.adapter.check_layers(self.layers)
        self.targets = {name: as_source(src) for name, src in targets.items()}
        self.concepts = {name: as_source(src) for name, src in concepts.items()}
        self.random = {name: as_source(random[name]) for name in sorted(random, key=natural_key)}
        self.labels = list(labels) if labels is not None else None
        self.relative = [tuple(pair) for pair in relative]
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ConfigError(f"runs must be a positive whole number, got {runs!r}")
        self.runs = runs
        self.examples = ExampleLimits(max=max_examples, min=min_examples)
        self.selection = Selection(max_examples, min_examples, seed)
        self.cav = cav or CavOptions()
        self.stats = stats or StatsOptions()
        self._resampled()  # a test that cannot run is refused here, not after the passes
        self.preprocessing = preprocessing or Preprocessing()
        self.seed = seed
        self.batch_size = batch_size
        self.store = ArrayStore(cache_dir)
        check_choice(cache_dtype, CACHE_DTYPES, "cache_dtype")
        self.cache_dtype = cache_dtype
        check_choice(gradient, GRADIENTS, "gradient")
        self.gradient = gradient
        self.progress = progress
        check_choice(executor, EXECUTORS, "executor")
        self.executor = executor
        self.ray = ray or RayOptions()
        self.model_loader = model_loader
        self.config = config
        self.model_description = (
            model_description or type(getattr(self.adapter, "module", self.adapter)).__name__
        )
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
        return cls(
            **experiment_arguments(
                config, overrides=overrides, trust_model_file=trust_model_file, progress=progress
            )
        )

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
        for role, names in (("concept", self.concepts), ("target", self.targets)):
            clash = set(names) & set(self.random)
            if clash:
                raise ConfigError(f"{sorted(clash)} named both as {role} and as random set")
        for name in self.targets:
            self.class_index(name)
        for note in self._setting_notes():
            warnings.warn(note, TcavWarning, stacklevel=3)

    def _setting_notes(self) -> list[str]:
        """Warnings the settings alone give: raised when the experiment is made, and put
        among each run's warnings (so that its results and report list them too)."""
        return [
            f"concept {name!r} is also a target: a concept made of the class's own "
            f"examples comes out significant for {name!r} whatever the model does; use "
            "a concept that is not one of the targets"
            for name in sorted(set(self.concepts) & set(self.targets))
        ]

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
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TcavWarning)
                plan = self._plan()
                with timed(timings, "resolve"):
                    sets = self._resolve_sets()
                    ctx = self._context(self.adapter.fingerprint())
                example_sets = [*self.concepts, *self.random]
                targets = {name: self.class_index(name) for name in self.targets}
                with timed(timings, "model check"):
                    order = sets_to_compute(ctx, sets, example_sets, targets)
                    check_model(ctx, [examples for examples, _ in order], targets, self.labels)
                model = self.model_loader or self.adapter
                with open_executor(self.executor, self.ray, ctx, model) as executor:
                    acts, grads = executor.passes(ctx, sets, example_sets, targets, timings)
                    runs, cavs = executor.train_and_score(
                        ctx, plan, sets, acts, grads, targets, timings
                    )
                    projections = None
                    if self._resampled():
                        with timed(timings, "projections"):
                            keys = {t: gradient_keys(ctx, sets[t], k) for t, k in targets.items()}
                            projections = projections_table(ctx, plan, sets, acts, grads, keys)
                with timed(timings, "stats"):
                    tested = {**asdict(self.stats), "projections": projections, "seed": self.seed}
                    summary = summarize(runs, **tested)
                    controls = negative_controls(runs, **tested)
        finally:
            # Recorded to go into the results, and re-emitted even when the run fails.
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        timings["total"] = time.perf_counter() - started
        messages = list(dict.fromkeys([*self._setting_notes(), *(str(w.message) for w in caught)]))
        meta = self._provenance(ctx, sets, timings, messages, controls)
        meta["detectable"] = detectable_effects(summary)
        return TcavResult(runs=runs, summary=summary, meta=meta, cavs=cavs, projections=projections)

    def _resampled(self) -> bool:
        """Whether the run tests against the measured null (``concept-resample``, which
        needs the projections): mean-difference CAVs, whose effect is linear in the
        examples, and the effect tested (:func:`tcavkit.stats.chosen_test`).

        Raises:
            ConfigError: ``concept-resample`` asked for where it cannot run.
        """
        linear = self.cav.method == "mean-difference"
        return chosen_test(self.stats.test, self.stats.statistic, linear) == "concept-resample"

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
        names = [concept, *self.random]
        sets = self._resolve_sets(names)
        ctx = self._context(self.adapter.fingerprint())
        with Prefetcher(self.preprocessing) as ctx.loads:
            acts = activation_pass(ctx, sets, names)
        rows = [
            row for row in self._plan().rows if row.kind == "concept" and row.concept == concept
        ]
        tasks = [at_layer(row.task, layer) for row in rows]
        from tcavkit.cav.batch import train_cav_batch  # torch: only to train

        batch = train_cav_batch(
            tasks, layer_loader(ctx, acts, layer), ctx.sizes, self.cav, self.adapter.device
        )
        return batch.cavs()

    def _plan(self) -> Plan:
        """The plan of this experiment; its notes become warnings."""
        plan = plan_runs(
            list(self.concepts), list(self.random), self.relative, self.runs, self.seed
        )
        for note in plan.notes:
            warnings.warn(note, TcavWarning, stacklevel=3)
        return plan

    def _context(self, model_fp: str) -> RunContext:
        return RunContext(
            adapter=self.adapter,
            store=self.store,
            keys=KeyMaker(
                model_fp,
                self.preprocessing,
                self.cache_dtype,
                pooling=tuple(
                    (layer, self.adapter.pooling_of(layer))
                    for layer in self.layers
                    if self.adapter.pooling_of(layer) != "none"
                ),
            ),
            layers=self.layers,
            cav=self.cav,
            batch_size=self.batch_size,
            progress=self.progress,
            gradient=self.gradient,
        )

    def _resolve_sets(self, names: Sequence[str] | None = None) -> dict[str, ExampleSet]:
        """The named sets (default: all) resolved once each; file digests are remembered
        in the cache folder between runs."""
        sources: dict[str, ExampleSource] = {**self.targets, **self.concepts, **self.random}
        chosen = list(sources) if names is None else list(names)
        with remembered_digests(self.store.root) as digests:
            return {
                name: sources[name].resolve(name, self.selection, digests=digests)
                for name in chosen
            }

    def _provenance(
        self,
        ctx: RunContext,
        sets: dict[str, ExampleSet],
        timings: dict[str, float],
        messages: list[str],
        controls: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        roles = {
            **{name: "random" for name in self.random},
            **{name: "concept" for name in self.concepts},
            **{name: "target" for name in self.targets},
        }
        return provenance(
            config=self.config if self.config is not None else self._config_dict(),
            seed=self.seed,
            model={
                "fingerprint": ctx.keys.model,
                "description": self.model_description,
                "layers": self.layers,
                "labels": self.labels,
            },
            sets={
                name: {
                    "role": roles[name],
                    "n_examples": ctx.sizes.get(name),
                    "description": sets[name].description,
                    "fingerprint": sets[name].fingerprint,
                    "skipped": ctx.skipped.get(name, []),
                    **({"examples": preview} if (preview := sets[name].preview()) else {}),
                }
                for name in sets
            },
            stats=self.stats,
            warnings=messages,
            timings=timings,
            counts=ctx.counts,
            controls=controls,
        )

    def _config_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "targets": list(self.targets),
            "concepts": list(self.concepts),
            "random": list(self.random),
            "relative": [list(p) for p in self.relative],
            "runs": self.runs,
            "examples": asdict(self.examples),
            "cav": asdict(self.cav),
            "stats": asdict(self.stats),
            "preprocessing": asdict(self.preprocessing),
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def experiment_arguments(
    config: ExperimentConfig | str | Path,
    *,
    overrides: Sequence[str] = (),
    trust_model_file: bool = False,
    progress: bool = True,
    discovering: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :class:`Experiment` that an experiment file describes (the
    model loaded, the sets of ``data:`` as image folders, feature tables or texts; see
    :mod:`tcavkit.examples.locate`), for :meth:`Experiment.from_config` and for callers that
    change some of them first (``tcavkit discover`` replaces the concepts: with
    ``discovering``, the targets it discovers for, the file's concepts are neither looked
    for nor given, and only those targets are looked for).

    Every set is looked for in ``data:`` before any per-set object is made (one listing of
    the folder), so that a missing one is named at once, however many sets there are."""
    base_dir = Path.cwd()
    if not isinstance(config, ExperimentConfig):
        base_dir = Path(config).resolve().parent
        config = load_config(config, list(overrides))
    spec = config.model
    adapter = open_model(
        spec,
        device=config.device,
        trust_model_file=trust_model_file,
        base_dir=base_dir,
        cache_dir=config.cache,
    )
    labels = load_labels(spec.labels) or getattr(adapter, "labels", None)
    data = Path(config.data)
    if not data.is_dir():
        raise DataError(
            f"data folder {data} does not exist: set `data:` to the folder that holds one "
            "sub-folder (or file) per target, concept and random set"
        )
    random_names = random_set_names(config)
    _check_set_names(config, random_names)
    encoder = getattr(adapter, "encoder", None)
    concepts = config.concepts if discovering is None else []
    targets = config.targets if discovering is None else list(discovering)
    check_sets_exist(
        data,
        {"targets": targets, "concepts": concepts, "random.sets": random_names},
        text=encoder is not None,
        columns=spec.columns is not None,
    )

    def sources(names: Sequence[str]) -> dict[str, ExampleSource]:
        return {
            name: source_for(data, name, encoder=encoder, columns=spec.columns) for name in names
        }

    return {
        "model": adapter,
        "layers": spec.layers,
        "targets": sources(config.targets),
        "concepts": sources(concepts),
        "random": sources(random_names),
        "labels": labels,
        "relative": config.relative,
        "runs": config.random.runs,
        "max_examples": config.examples.max,
        "min_examples": config.examples.min,
        "cav": config.cav,
        "stats": config.stats,
        "preprocessing": model_preprocessing(spec.input, adapter),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "gradient": config.gradient,
        "cache_dir": str(config.cache) if config.cache is not None else None,
        "cache_dtype": config.cache_dtype,
        "progress": progress,
        "config": config.model_dump(mode="json"),
        "model_description": describe(spec),
        "executor": config.executor,
        "ray": config.ray,
        "model_loader": partial(
            load_model,
            spec,
            device=config.device,
            trust_model_file=trust_model_file,
            base_dir=base_dir,
        ),
    }


def model_preprocessing(preprocessing: Preprocessing, adapter: ModelAdapter) -> Preprocessing:
    """Resize to the model's fixed input size (Keras, ONNX) when ``input.size`` is unset."""
    size = getattr(adapter, "input_size", None)
    if preprocessing.size is None and size:
        return replace(preprocessing, size=tuple(size))
    return preprocessing


def random_set_names(config: ExperimentConfig) -> list[str]:
    """The random sets of a config: a glob over the data folder's sub-folders and
    ``.csv``/``.txt``/``.jsonl`` files (by name without suffix), or a list."""
    if isinstance(config.random.sets, list):
        return list(config.random.sets)
    pattern = config.random.sets
    data = Path(config.data)
    names = sorted(set_names_in(data, pattern), key=natural_key)
    if not names:
        raise DataError(
            f"random.sets {pattern!r} matches no folder or file in {data}: create random sets "
            "such as random500_0, random500_1, ... (folders, or .csv/.txt files) or list "
            "their names in random.sets"
        )
    return names


def _check_set_names(config: ExperimentConfig, random_names: Sequence[str]) -> None:
    """Refuse a target or concept folder that the ``random.sets`` glob also matches: its
    examples would be used as random examples too."""
    if isinstance(config.random.sets, list):
        return  # listed names: the overlap checks of ``Experiment`` name them
    for key, names in (("targets", config.targets), ("concepts", config.concepts)):
        matched = sorted(set(names) & set(random_names))
        if matched:
            raise ConfigError(
                f"random.sets {config.random.sets!r} matches the folder(s) {matched} named in "
                f"{key}: a random set must not hold the {key}' examples; rename the random "
                "set folders or list them in random.sets"
            )
