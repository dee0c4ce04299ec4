"""``executor: ray``: a run's model passes and CAVs on a Ray cluster, with the same results
as a local run.

- **Model passes.** A pool of Ray actors (:class:`ModelWorker`), each holding the model,
  loaded once and checked against the driver's fingerprint, takes the example sets missing
  from the cache from a queue (concept and random sets: activations; targets: gradients).
  Each writes its entries into the shared content-addressed cache, the same code as a local
  run (:mod:`tcavkit.pipeline.passes`), and returns sizes and shapes only: activations
  never travel through Ray's object store. The driver then reads every set from the cache.
- **CAVs and scores.** One Ray task per (layer, batch of CAV tasks), the batches of a local
  run (:func:`~tcavkit.pipeline.training.cav_chunks`), reading the cached activations and
  gradients; it trains (or rebuilds from cached coefficients) and scores its batch and
  returns coefficients, stats and scores. The per-task seeds make them independent of where
  they run. The driver caches each layer's CAVs as a local run does, so a later local run
  on the same cache trains nothing.
- **Statistics, results and the report** stay on the driver.
- **Shared cache.** Every node must see the cache folder at the same path. The driver
  writes a marker file with a random token into it; each actor and each CAV task reads it
  and the run fails in one line where one does not see it.
- **Faults.** An actor that dies mid-set is restarted by Ray and the set retried; entries
  are written atomically, so no partial entry is ever read. A worker, actor, node or
  result lost for good stops the run with one line naming what died (:func:`ray_errors`).
  A driver that dies leaves what was written in the cache; a rerun computes only what is
  missing.

Environment variables starting with ``TCAVKIT_RAY_TEST_`` on the driver are test hooks,
passed to the workers (see the tests): ``CRASH_ONCE`` (a flag file: the first actor to
write its second cache entry dies, once), ``DRIVER_DIES_AFTER`` (the driver kills itself
after that many sets), ``WORKER_CACHE`` (the workers look for the cache there instead).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tcavkit.atomic import atomic_write
from tcavkit.cav.batch import CavTask, cav_directions, train_cav_batch
from tcavkit.cav.table import CavTable
from tcavkit.errors import CacheError, ClusterError, ConfigError, ModelError, TcavError, one_line
from tcavkit.examples.base import ExampleSet
from tcavkit.examples.prefetch import Prefetcher
from tcavkit.models.adapter import ModelAdapter
from tcavkit.options import CavOptions, RayOptions
from tcavkit.pipeline.context import RunContext
from tcavkit.pipeline.executor import ModelLoader, timed
from tcavkit.pipeline.keys import KeyMaker
from tcavkit.pipeline.passes import (
    Arrays,
    activation_pass,
    gradient_keys,
    gradient_pass,
    sets_to_compute,
)
from tcavkit.pipeline.plan import Plan
from tcavkit.pipeline.training import (
    cached_cavs,
    cav_chunks,
    join_coefficients,
    layer_rows,
    rebuilder,
    runs_table,
    store_cavs,
)
from tcavkit.scoring import LayerScores, Scores
from tcavkit.store import ArrayStore
from tcavkit.version import __version__

RESTARTS = 3
"""How often Ray restarts a dead model actor (and retries its set), or retries a CAV task."""

MARKER_PREFIX = ".tcavkit-ray-marker-"
HOOK_PREFIX = "TCAVKIT_RAY_TEST_"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor: ray needs the ray package, which is not installed: "
            "pip install 'tcavkit[ray]' (or set executor: local)"
        ) from None
    return ray


@dataclass(frozen=True)
class WorkerSettings:
    """What every actor and CAV task of a run shares (sent once)."""

    keys: KeyMaker
    layers: list[str]
    cav: CavOptions
    batch_size: int
    gradient: str
    root: str
    marker: str
    token: str
    threads: int
    gpus: float
    hooks: dict[str, str]

    def cache_root(self) -> Path:
        """The cache folder as this worker sees it."""
        return Path(self.hooks.get(HOOK_PREFIX + "WORKER_CACHE", self.root))

    def marker_seen(self) -> bool:
        """Whether this worker reads the driver's marker token in its cache folder."""
        try:
            return (self.cache_root() / self.marker).read_text() == self.token
        except OSError:
            return False

    def device(self) -> torch.device:
        return torch.device("cuda" if self.gpus > 0 and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class PassJob:
    """One example set through the model: activations, or gradients of ``class_index``."""

    examples: ExampleSet
    class_index: int | None = None


class ModelWorker:
    """A Ray actor: the model, loaded once; computes example sets into the cache.

    Never raises while starting: what went wrong is reported by :meth:`describe`, so that
    the driver can say it in one line.
    """

    def __init__(
        self, model: ModelAdapter | ModelLoader, settings: WorkerSettings, fingerprint: str
    ) -> None:
        self.settings = settings
        torch.set_num_threads(settings.threads)
        self.problem: str | None = None
        self.adapter: ModelAdapter | None = None
        try:
            self.adapter = model if isinstance(model, ModelAdapter) else model()
            found = self.adapter.fingerprint()
            if found != fingerprint:
                self.problem = (
                    f"the model loaded there has fingerprint {found[:12]}…, the driver's "
                    f"{fingerprint[:12]}…: give every node the same model file"
                )
        except Exception as exc:  # reported by describe()
            self.problem = f"the model cannot be loaded there: {one_line(exc)}"
        self.store = ArrayStore(settings.cache_root())
        flag = settings.hooks.get(HOOK_PREFIX + "CRASH_ONCE")
        if flag:
            self.store.put = _dies_on_second_put(self.store.put, Path(flag))  # type: ignore[method-assign]

    def describe(self) -> dict[str, Any]:
        """Host, tcavkit version and path, whether the marker is seen, any problem."""
        import tcavkit

        return {
            "host": socket.gethostname(),
            "version": __version__,
            "tcavkit": tcavkit.__file__,
            "marker": self.settings.marker_seen(),
            "problem": self.problem,
        }

    def compute(self, job: PassJob) -> dict[str, Any]:
        """Computes ``job``'s set into the cache; returns its size, shapes and counts."""
        assert self.adapter is not None, "describe() reported the problem"
        s = self.settings
        ctx = RunContext(
            adapter=self.adapter,
            store=self.store,
            keys=s.keys,
            layers=s.layers,
            cav=s.cav,
            batch_size=s.batch_size,
            progress=False,
            gradient=s.gradient,
        )
        name = job.examples.name
        with Prefetcher(s.keys.preprocessing, [job.examples]) as ctx.loads:
            if job.class_index is None:
                arrays = activation_pass(ctx, {name: job.examples}, [name])
            else:
                arrays = gradient_pass(ctx, {name: job.examples}, {name: job.class_index})
        shapes = {layer: tuple(load().shape) for layer, load in arrays[name].items()}
        return {"name": name, "shapes": shapes, "counts": ctx.counts}


def _dies_on_second_put(put: Any, flag: Path) -> Any:
    """Test hook: ``put`` that kills this process instead of writing its second entry, the
    first time any worker gets there (``flag`` records that it happened)."""
    calls = 0

    def wrapped(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            try:
                flag.open("x").close()
            except FileExistsError:
                pass
            else:
                os._exit(1)
        put(*args, **kwargs)

    return wrapped


@dataclass(frozen=True)
class CavJob:
    """One batch of a layer's CAV tasks, trained (or rebuilt from ``coefficients``) and
    scored for every target.

    Attributes:
        activations: set name → cache key of its activations at ``layer``.
        gradients: cache key of each target's gradients at ``layer``, in target order.
        rows, dim: the direction buffer's shape (that of a local run).
    """

    layer: str
    start: int
    tasks: list[CavTask]
    coefficients: np.ndarray | None
    sizes: dict[str, int]
    activations: dict[str, str]
    gradients: list[str]
    rows: int
    dim: int


def cav_batch(job: CavJob, settings: WorkerSettings) -> dict[str, Any]:
    """A Ray task: the batch's coefficients ``(b, n_train)`` and stats ``(b, 3)`` (``None``
    when rebuilt from cached coefficients) and its :class:`LayerScores`, computed as
    :func:`tcavkit.pipeline.training.train_and_score` does (same batch, same products)."""
    if not settings.marker_seen():
        return {"problem": "marker", "host": socket.gethostname()}
    torch.set_num_threads(settings.threads)
    store = ArrayStore(settings.cache_root())
    device = settings.device()

    def read(key: str) -> np.ndarray:
        array = store.get_float32(key)
        if array is None:
            raise CacheError(
                f"cache entry {key} is missing on {socket.gethostname()} (was the cache "
                f"folder {settings.root} cleared?); run again"
            )
        return array

    def load(name: str) -> torch.Tensor:
        return torch.from_numpy(read(job.activations[name])).to(device=device, dtype=torch.float32)

    target_grads = [np.asarray(read(key), dtype=np.float32) for key in job.gradients]
    bounds = np.cumsum([0, *(len(g) for g in target_grads)])
    g = torch.from_numpy(np.concatenate(target_grads)).to(device)
    del target_grads
    buffer = torch.empty(job.rows, job.dim, dtype=torch.float32, device=device)
    began = time.perf_counter()
    coefficients = stats = None
    if job.coefficients is not None:
        directions = cav_directions(
            job.tasks, job.coefficients, load, job.sizes, settings.cav, device, out=buffer
        )
    else:
        batch = train_cav_batch(job.tasks, load, job.sizes, settings.cav, device, out=buffer)
        stats = np.empty((len(job.tasks), 3))
        stats[:, 0] = batch.intercepts
        stats[:, 1] = batch.accuracies
        stats[:, 2] = batch.separations
        coefficients = batch.coefficients
        directions = batch.directions
    trained = time.perf_counter()
    scores = LayerScores.empty(len(bounds) - 1, len(job.tasks))
    derivs = (g @ directions.T).double().cpu().numpy()
    for k in range(len(bounds) - 1):
        scores.fill(k, 0, derivs[bounds[k] : bounds[k + 1]])
    return {
        "coefficients": coefficients,
        "stats": stats,
        "scores": scores,
        "seconds": (trained - began, time.perf_counter() - trained),
    }


class RayExecutor:
    """The :class:`~tcavkit.pipeline.executor.Executor` on a Ray cluster (see the module).

    Made by :meth:`open`, which joins (or starts) Ray and writes the cache marker.
    """

    def __init__(
        self,
        ray: Any,
        options: RayOptions,
        ctx: RunContext,
        model: ModelAdapter | ModelLoader,
        settings: WorkerSettings,
    ) -> None:
        self.ray = ray
        self.options = options
        self.model = model
        self.settings = settings
        self.fingerprint = ctx.keys.model
        self._arguments: tuple[Any, ...] = ()

    @classmethod
    @contextmanager
    def open(
        cls, options: RayOptions, ctx: RunContext, model: ModelAdapter | ModelLoader
    ) -> Iterator[RayExecutor]:
        """The executor for one run, on the cluster at ``options.address`` (joined, or a
        local instance started for the run when none is running in this process).

        Raises:
            ConfigError: ray is not installed, the cache is off, the cluster cannot be
                reached.
        """
        root = ctx.store.root
        if root is None:
            raise ConfigError(
                "executor: ray needs a cache folder that every node sees: set cache: to a "
                "folder on a shared file system (the workers write their results there)"
            )
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            import logging

            try:
                ray.init(
                    address=options.address,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:  # ray raises ConnectionError, ValueError, ...
                where = options.address or "a local Ray instance"
                raise ConfigError(f"cannot start or join {where}: {one_line(exc)}") from None
            started = True
        try:
            _check_resources(options, ray.cluster_resources())
        except BaseException:
            if started:
                ray.shutdown()
            raise
        token = secrets.token_hex(16)
        marker = f"{MARKER_PREFIX}{token[:12]}"
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(root / marker, token)
        settings = WorkerSettings(
            keys=ctx.keys,
            layers=list(ctx.layers),
            cav=ctx.cav,
            batch_size=ctx.batch_size,
            gradient=ctx.gradient,
            root=str(root.resolve()),
            marker=marker,
            token=token,
            threads=max(1, int(options.cpus_per_worker)),
            gpus=options.gpus_per_worker,
            hooks={k: v for k, v in os.environ.items() if k.startswith(HOOK_PREFIX)},
        )
        try:
            yield cls(ray, options, ctx, model, settings)
        finally:
            with suppress(OSError):
                (root / marker).unlink()
            if started:
                ray.shutdown()

    # -- the model passes ------------------------------------------------------------------
    def passes(
        self,
        ctx: RunContext,
        sets: dict[str, ExampleSet],
        example_sets: Sequence[str],
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[Arrays, Arrays]:
        jobs = [PassJob(e, k) for e, k in sets_to_compute(ctx, sets, example_sets, targets)]
        with timed(timings, "ray passes"):
            computed = self._compute(ctx, jobs) if jobs else 0
        # Every set is in the cache now: read them as a local run reads a warm cache (a
        # set missing after all is computed here).
        with Prefetcher(ctx.keys.preprocessing) as ctx.loads:
            with timed(timings, "activations"):
                acts = activation_pass(ctx, sets, example_sets)
            with timed(timings, "gradients"):
                grads = gradient_pass(ctx, sets, targets)
        ctx.counts.sets_from_cache -= min(computed, ctx.counts.sets_from_cache)
        return acts, grads

    def _compute(self, ctx: RunContext, jobs: list[PassJob]) -> int:
        """Sends ``jobs`` to a pool of model actors; returns the number of sets they
        computed (a set they found cached is not counted)."""
        ray = self.ray
        from ray.util import ActorPool

        actors = self._start_actors(len(jobs))
        try:
            pool = ActorPool(actors)
            for job in jobs:
                pool.submit(lambda actor, job: actor.compute.remote(job), job)
            dies_after = int(self.settings.hooks.get(HOOK_PREFIX + "DRIVER_DIES_AFTER", 0))
            done = computed = 0
            with ctx.bar(len(jobs), "model passes (ray)", "set") as bar:
                while pool.has_next():
                    with ray_errors(ray, "the model passes"):
                        result = pool.get_next_unordered()
                    for field in fields(result["counts"]):
                        name = field.name
                        if name in ("forward_batches", "backward_batches", "sets_computed"):
                            added = getattr(result["counts"], name)
                            setattr(ctx.counts, name, getattr(ctx.counts, name) + added)
                    computed += result["counts"].sets_computed
                    done += 1
                    bar.update()
                    if done == dies_after:
                        os.kill(os.getpid(), signal.SIGKILL)
        finally:
            for actor in actors:
                ray.kill(actor)
        return computed

    def _start_actors(self, n_jobs: int) -> list[Any]:
        """Model actors (as many as the settings or the cluster allow, at most one per
        job), each checked: model fingerprint, tcavkit version, the shared cache."""
        ray = self.ray
        options = self.options
        count = options.workers
        if count is None:
            resources = ray.cluster_resources()
            if options.gpus_per_worker > 0:
                count = int(resources.get("GPU", 0) // options.gpus_per_worker)
            else:
                count = int(resources.get("CPU", 1) // options.cpus_per_worker)
        count = max(1, min(count, n_jobs))
        worker = ray.remote(
            num_cpus=options.cpus_per_worker,
            num_gpus=options.gpus_per_worker,
            max_restarts=RESTARTS,
            max_task_retries=RESTARTS,
        )(ModelWorker)
        # A loader and the settings are small: passed by value, so that a restarted actor
        # gets them again from its creation task. An adapter is put in the object store
        # once; the reference is kept for the restarts.
        model = self.model if not isinstance(self.model, ModelAdapter) else ray.put(self.model)
        self._arguments = (model,)
        actors = [worker.remote(model, self.settings, self.fingerprint) for _ in range(count)]
        try:
            with ray_errors(ray, "starting the model workers"):
                described = ray.get([actor.describe.remote() for actor in actors])
            for found in described:
                self._check_worker(found)
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise
        return actors

    def _check_worker(self, found: dict[str, Any]) -> None:
        host = found["host"]
        if not found["marker"]:
            raise _unshared(self.settings, host)
        if found["version"] != __version__:
            raise ConfigError(
                f"the Ray worker on {host} runs tcavkit {found['version']}, this machine "
                f"{__version__}: install the same version on every node"
            )
        if found["problem"]:
            raise ModelError(f"Ray worker on {host}: {found['problem']}")

    # -- CAVs and scores -------------------------------------------------------------------
    def train_and_score(
        self,
        ctx: RunContext,
        plan: Plan,
        sets: dict[str, ExampleSet],
        acts: Arrays,
        grads: Arrays,
        targets: dict[str, int],
        timings: dict[str, float],
    ) -> tuple[pd.DataFrame, CavTable]:
        ray = self.ray
        target_names = list(targets)
        options = self.options
        remote = ray.remote(
            num_cpus=options.cpus_per_worker,
            num_gpus=options.gpus_per_worker,
            max_retries=RESTARTS,
        )(cav_batch)
        settings = ray.put(self.settings)
        began = time.perf_counter()
        layers: dict[str, dict[str, Any]] = {}
        pending: dict[Any, tuple[str, int, int]] = {}
        for layer in ctx.layers:
            tasks, runs = plan.layer_tasks(layer)
            grad_keys = [gradient_keys(ctx, sets[t], k)[layer] for t, k in targets.items()]
            dim = self._dim(ctx, grad_keys[0])
            key = ctx.keys.cavs(layer, tasks, sets, ctx.cav)
            cached = cached_cavs(ctx, key, len(tasks))
            names = sorted({name for task in tasks for name in (task.positive, task.negative)})
            chunks = cav_chunks(len(tasks), dim)
            layers[layer] = {
                "tasks": tasks,
                "runs": runs,
                "key": key,
                "cached": cached,
                "parts": {},
                "scores": LayerScores.empty(len(target_names), len(tasks)),
            }
            for start, stop in chunks:
                job = CavJob(
                    layer=layer,
                    start=start,
                    tasks=tasks[start:stop],
                    coefficients=None if cached is None else cached[0][start:stop],
                    sizes={name: ctx.sizes[name] for name in names},
                    activations={
                        name: ctx.keys.activations([layer], sets[name])[layer] for name in names
                    },
                    gradients=grad_keys,
                    rows=chunks[0][1],
                    dim=dim,
                )
                pending[remote.remote(job, settings)] = (layer, start, stop)
        timings["scores"] = 0.0
        with ctx.bar(sum(len(v["tasks"]) for v in layers.values()), "CAVs (ray)", "cav") as bar:
            waiting = list(pending)
            while waiting:
                with ray_errors(ray, "training the CAVs"):
                    ready, waiting = ray.wait(waiting, num_returns=1)
                    result = ray.get(ready[0])
                if result.get("problem") == "marker":
                    raise _unshared(self.settings, result["host"])
                layer, start, stop = pending[ready[0]]
                entry = layers[layer]
                entry["parts"][start] = result
                _place(entry["scores"], result["scores"], start)
                timings["scores"] += result["seconds"][1]
                bar.update(stop - start)
        table = CavTable()
        frames = []
        for layer, entry in layers.items():
            tasks = entry["tasks"]
            if entry["cached"] is not None:
                coefficients, stats = entry["cached"]
                ctx.counts.cavs_from_cache += len(tasks)
            else:
                parts = [entry["parts"][start] for start in sorted(entry["parts"])]
                coefficients = join_coefficients([part["coefficients"] for part in parts])
                stats = np.concatenate([part["stats"] for part in parts])
                store_cavs(ctx, layer, entry["key"], coefficients, stats)
                ctx.counts.cavs_trained += len(tasks)
            rebuild = rebuilder(ctx, acts, layer)
            table.add_layer(layer, tasks, entry["runs"], coefficients, stats, rebuild)
            frames.append(layer_rows(plan, layer, tasks, target_names, entry["scores"], stats))
        timings["cavs"] = time.perf_counter() - began
        return runs_table(frames, target_names), table

    @staticmethod
    def _dim(ctx: RunContext, key: str) -> int:
        array = ctx.store.get(key)
        if array is None:
            raise CacheError(f"cache entry {key} disappeared during the run; run again")
        return int(array.shape[1])


def _place(into: LayerScores, part: LayerScores, start: int) -> None:
    """Copy a batch's scores ``(k, b)`` into a layer's at CAVs ``start:start+b``."""
    for side in ("along", "flipped"):
        for f in fields(Scores):
            block = getattr(getattr(part, side), f.name)
            getattr(getattr(into, side), f.name)[:, start : start + block.shape[1]] = block


def _check_resources(options: RayOptions, resources: dict[str, float]) -> None:
    """Refuse a worker size that the cluster cannot hold (Ray would wait for it forever)."""
    for key, need in (("GPU", options.gpus_per_worker), ("CPU", options.cpus_per_worker)):
        have = resources.get(key, 0.0)
        if need > have:
            setting = f"ray.{key.lower()}s_per_worker"
            raise ConfigError(
                f"{setting} is {need:g} but the Ray cluster has {have:g} {key}(s) in all: "
                f"lower {setting} or add nodes with {key}s"
            )


@contextmanager
def ray_errors(ray: Any, what: str) -> Iterator[None]:
    """Ray's exceptions while ``what`` runs, as one line each.

    A task's own tcavkit error is raised as it is; any other error of a task's code is a
    :class:`ModelError` quoting it; a worker, actor, node or result that Ray lost (the
    process or node died, out of memory, the raylet gone) is a :class:`ClusterError`
    naming what died and saying that a rerun resumes from the cache.
    """
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, TcavError):
            raise cause from None
        shown = cause if isinstance(cause, BaseException) else exc
        raise ModelError(
            f"a Ray worker failed while {what}: {type(shown).__name__}: {one_line(shown, 300)}"
        ) from exc
    except ray.exceptions.RayError as exc:
        raise ClusterError(
            f"the Ray cluster lost {_lost(ray, exc)} while {what} ({type(exc).__name__}: "
            f"{one_line(exc, 200)}); what was computed is in the cache: run the same command "
            "again to resume (`ray status` shows the cluster's nodes)"
        ) from exc


def _lost(ray: Any, exc: BaseException) -> str:
    """What a Ray error says died, in words."""
    errors = ray.exceptions
    kinds = (
        (errors.RayActorError, f"a model worker (restarted {RESTARTS} times)"),
        (errors.WorkerCrashedError, "a worker process"),
        (errors.OutOfMemoryError, "a worker to the node's out-of-memory killer"),
        (errors.NodeDiedError, "a node"),
        (errors.LocalRayletDiedError, "this machine's Ray node (its raylet)"),
        (errors.ObjectLostError, "a result held by a node that died"),
    )
    return next((words for kind, words in kinds if isinstance(exc, kind)), "a part of itself")


def _unshared(settings: WorkerSettings, host: str) -> CacheError:
    return CacheError(
        f"the Ray worker on {host} does not see the cache folder {settings.root} "
        f"(the marker file {settings.marker} written there by this machine is not found "
        "there): put cache: on a shared file system mounted at the same path on every node"
    )
