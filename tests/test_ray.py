"""``executor: ray`` on a local Ray instance (2 CPUs, no dashboard) gives a local run's tables.

The planted starter experiment, tiny (32x32 images, 3 concepts, 4 random sets, 3 runs): a
run on Ray writes the same bytes of runs.csv and summary.csv as a local run with the same
seed and torch threads; a local run on the Ray run's cache, on another number of threads,
computes nothing and agrees within the thread tolerance; a model worker killed mid-set,
or a driver killed mid-run and run again, changes nothing; workers that do not see the
driver's cache folder stop the run in one line.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tcavkit
from conftest import assert_tables_agree
from tcavkit.cli import app
from tcavkit.demo.starters import train_starter_cnn
from tcavkit.demo.synthetic import make_dataset
from tcavkit.errors import CacheError
from tcavkit.workflow import run_experiment_file

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="ray is not installed: pip install 'tcavkit[ray]' to test executor: ray",
    ),
    pytest.mark.filterwarnings("ignore::tcavkit.errors.TcavWarning"),  # few runs, tiny sets
]

SETS = 3 + 4 + 2  # concepts, random sets, targets: one model pass each

EXPERIMENT = """\
model:
  path: starters.pt
  layers: [block2, block3]
  labels: [fire, water, grass]
  input: {size: [32, 32]}
data: data
targets: [fire, water]
concepts: [red, blue, striped]
random: {sets: "random500_*", runs: 3}
examples: {max: 12, min: 10}
seed: 0
batch_size: 8
ray: {workers: 2, cpus_per_worker: 1}
"""


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance for the module; tcavkit's runs join it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-starters")
    make_dataset(
        root / "data",
        size=(32, 32),
        n_per_set=12,
        n_random_sets=4,
        concepts=("red", "blue", "striped"),
        seed=0,
    )
    trained = train_starter_cnn(size=(32, 32), n_per_class=20, epochs=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(trained.model), str(root / "starters.pt"))
    path = root / "experiment.yaml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    return path


def invoke(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart already
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


def run(experiment: Path, name: str, *, cache: str | None = None, executor: str = "local"):
    """The experiment run into ``<name>/`` (its cache ``<cache or name>/cache``)."""
    folder = experiment.parent / name
    overrides = [f"cache={experiment.parent / (cache or name) / 'cache'}", f"executor={executor}"]
    return run_experiment_file(
        experiment, out=folder / "results", overrides=overrides, progress=False
    )


def tables(outcome) -> dict[str, bytes]:
    return {n: (outcome.out_dir / n).read_bytes() for n in ("runs.csv", "summary.csv")}


WORKER_THREADS = 1  # cpus_per_worker above: each Ray worker runs torch with 1 thread


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch on ``count`` threads in this process for the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local(experiment):
    """The local run's tables, with torch on the workers' thread count: torch splits its
    sums by thread, so only the same count gives the same bytes."""
    with torch_threads(WORKER_THREADS):
        outcome = run(experiment, "local")
    assert outcome.result.counts.sets_computed == SETS
    return tables(outcome)


def test_workers_import_this_tcavkit(local_ray):
    import ray

    @ray.remote
    def where() -> str:
        import tcavkit

        return tcavkit.__file__

    assert ray.get(where.remote()) == tcavkit.__file__


@pytest.mark.slow
def test_ray_run_writes_the_local_tables_and_fills_the_cache(experiment, local, local_ray):
    outcome = run(experiment, "ray", executor="ray")
    assert tables(outcome) == local
    counts = outcome.result.counts
    assert (counts.sets_computed, counts.sets_from_cache) == (SETS, 0)
    assert counts.forward_batches > 0 and counts.backward_batches > 0
    assert counts.cavs_trained > 0 and counts.cavs_from_cache == 0
    assert not list((experiment.parent / "ray/cache").glob(".tcavkit-ray-marker-*"))

    # The local run rebuilds the CAVs from the cached coefficients and scores them here: on
    # another thread count (whatever this machine's default), it agrees within tolerance.
    with torch_threads(WORKER_THREADS + 1):
        after = run(experiment, "local-after-ray", cache="ray")
    assert_tables_agree(tables(after), local, same_threads=False)
    counts = after.result.counts
    assert (counts.forward_batches, counts.backward_batches, counts.sets_computed) == (0, 0, 0)
    assert counts.cavs_trained == 0
    assert counts.cavs_from_cache == outcome.result.counts.cavs_trained


@pytest.mark.slow
def test_a_worker_killed_mid_set_changes_nothing(experiment, local, local_ray, monkeypatch):
    flag = experiment.parent / "crashed"
    monkeypatch.setenv("TCAVKIT_RAY_TEST_CRASH_ONCE", str(flag))
    outcome = run(experiment, "crash", executor="ray")
    assert flag.exists(), "the test hook did not kill a worker"
    assert tables(outcome) == local
    assert not [p for p in (experiment.parent / "crash/cache").rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_from_the_cache(experiment, local, local_ray):
    cache = experiment.parent / "driver/cache"
    env = {**os.environ, "TCAVKIT_RAY_TEST_DRIVER_DIES_AFTER": "3"}
    command = [sys.executable, "-m", "tcavkit.cli", "run", str(experiment), "-q"]
    command += ["--ray-address", local_ray, "--set", f"cache={cache}"]
    command += ["--out", str(experiment.parent / "driver/results")]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (experiment.parent / "driver/results/runs.csv").exists()
    assert len(list(cache.rglob("*.npy"))) >= 3 * 2  # 3 sets at 2 layers at least

    outcome = run(experiment, "driver", executor="ray")
    assert tables(outcome) == local
    assert 0 < outcome.result.counts.sets_computed <= SETS - 3


@pytest.mark.slow
def test_workers_that_do_not_see_the_cache_stop_the_run_in_one_line(
    experiment, local_ray, monkeypatch
):
    monkeypatch.setenv("TCAVKIT_RAY_TEST_WORKER_CACHE", str(experiment.parent / "elsewhere"))
    cache = experiment.parent / "unshared/cache"
    result = invoke("run", experiment, "--executor", "ray", "-q", "--set", f"cache={cache}")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the Ray worker on "), result.stderr
    assert "does not see the cache folder" in lines[-1]
    assert "shared file system" in lines[-1]
    # The CAV tasks check too: a warm cache starts no model worker.
    monkeypatch.delenv("TCAVKIT_RAY_TEST_WORKER_CACHE")
    run(experiment, "unshared")
    monkeypatch.setenv("TCAVKIT_RAY_TEST_WORKER_CACHE", str(experiment.parent / "elsewhere"))
    with pytest.raises(CacheError, match="does not see the cache folder"):
        run(experiment, "unshared", executor="ray")


def _lost_results():
    import ray.exceptions as errors

    return [
        (errors.ActorDiedError(), "a model worker"),
        (errors.WorkerCrashedError(), "a worker process"),
        (errors.NodeDiedError("node 10.0.0.2 died"), "a node"),
        (errors.LocalRayletDiedError(), "this machine's Ray node"),
        (errors.OwnerDiedError("ab" * 14, None, "call"), "a result held by a node that died"),
        (errors.OutOfMemoryError("memory"), "out-of-memory killer"),
        (errors.RaySystemError("gone"), "a part of itself"),
    ]


@pytest.mark.parametrize(("error", "lost"), _lost_results())
def test_what_ray_loses_is_one_line_naming_it_and_the_rerun(error, lost):
    """No cluster needed: the exceptions Ray raises when a node's agent, raylet or worker
    is killed mid-run, as they reach the driver."""
    import ray

    from tcavkit.errors import ClusterError
    from tcavkit.pipeline.ray_executor import ray_errors

    with pytest.raises(ClusterError) as caught, ray_errors(ray, "the model passes"):
        raise error
    message = str(caught.value)
    assert "\n" not in message and lost in message
    assert "while the model passes" in message and type(error).__name__ in message
    assert "run the same command again to resume" in message


def test_a_task_error_is_its_tcavkit_error_or_one_line():
    import ray

    from tcavkit.errors import ModelError
    from tcavkit.pipeline.ray_executor import ray_errors

    own = CacheError("cache entry gone; run again")
    with pytest.raises(CacheError, match="cache entry gone"), ray_errors(ray, "x"):
        raise ray.exceptions.RayTaskError("compute", "trace", own)
    with (
        pytest.raises(ModelError, match=r"failed while x: ValueError: bad\b"),
        ray_errors(ray, "x"),
    ):
        raise ray.exceptions.RayTaskError("compute", "trace", ValueError("bad"))
