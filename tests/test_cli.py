"""The command line: run, report, layers, sort, demo, and errors that fit on one line."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tcavkit.cli import app
from tcavkit.demo.starters import train_starter_cnn
from tcavkit.demo.synthetic import make_dataset, make_images, set_rng, write_image_set
from tcavkit.tables import CORE_SUMMARY_COLUMNS, RUN_COLUMNS

SIZE = (32, 32)

CONFIG = """\
model:
  path: {model}
  layers: [block2, block3]
  labels: [fire, water, grass]
  input:
    size: [32, 32]
data: data
targets: [fire, water]
concepts: [red, blue, striped]
random:
  runs: 10
examples:
  min: 5
cav:
  method: mean-difference
seed: 0
cache: cache
output: results
"""


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps stderr apart
        return CliRunner()


def invoke(*args: str):
    return runner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_dataset(
        root / "data",
        size=SIZE,
        n_per_set=12,
        n_random_sets=10,
        concepts=("red", "blue", "striped"),
    )
    trained = train_starter_cnn(size=SIZE, n_per_class=40, epochs=4, seed=0)
    model = trained.model
    (root / "models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in recent torch
        torch.jit.save(torch.jit.script(model), str(root / "models" / "starters.pt"))
    torch.save(model, root / "models" / "pickled.pt")
    write_config(root, "experiment.yaml")
    return root


def write_config(root: Path, name: str, model: str = "models/starters.pt", extra: str = "") -> Path:
    path = root / name
    path.write_text(CONFIG.format(model=model) + extra, encoding="utf-8")
    return path


def test_run_writes_tables_and_report(project, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", project / "experiment.yaml", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    for name in ("runs.csv", "summary.csv", "results.json", "report.html"):
        assert (out / name).is_file(), name
    assert any((out / "plots").glob("*.png"))
    assert tuple(pd.read_csv(out / "runs.csv").columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    summary_columns = list(pd.read_csv(out / "summary.csv").columns)
    assert tuple(summary_columns[: len(CORE_SUMMARY_COLUMNS)]) == CORE_SUMMARY_COLUMNS
    assert "p_adjusted" in result.stdout and "fire" in result.stdout
    assert str(out / "report.html") in result.stdout

    (out / "report.html").unlink()
    again = invoke("report", out)
    assert again.exit_code == 0, again.output
    assert (out / "report.html").is_file()


def test_bad_key_is_one_line(project):
    config = write_config(project, "bad-key.yaml", extra="stats: {}\n")
    text = config.read_text().replace("method: mean-difference", "methd: sgd")
    config.write_text(text)
    result = invoke("run", config, "--quiet")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "cav.methd" in lines[0] and "method" in lines[0]
    assert "Traceback" not in result.output


def test_missing_concept_folder(project):
    config = write_config(project, "missing.yaml")
    config.write_text(config.read_text().replace("striped]", "striped, spotty]"))
    result = invoke("run", config, "--quiet")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "spotty" in lines[0], lines


def test_pickled_model_needs_trust(project, tmp_path):
    config = write_config(project, "pickled.yaml", model="models/pickled.pt")
    result = invoke("run", config, "--quiet", "--out", tmp_path / "a")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "--trust-model-file" in lines[0], lines
    trusted = invoke("run", config, "--quiet", "--trust-model-file", "--out", tmp_path / "b")
    assert trusted.exit_code == 0, trusted.output
    assert (tmp_path / "b" / "summary.csv").is_file()


def test_unknown_layer(project):
    result = invoke("run", project / "experiment.yaml", "--quiet", "--set", "model.layers=[blok2]")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "blok2" in lines[0], lines


def test_debug_shows_traceback(project):
    result = invoke("--debug", "run", project / "experiment.yaml", "--set", "model.layers=[x]")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_layers_lists_shapes(project):
    for target in (project / "models" / "starters.pt", project / "experiment.yaml"):
        result = invoke("layers", target, "--size", "32", "32")
        assert result.exit_code == 0, result.output
        rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
        assert "(1, 8, 16, 16)" in rows["block1"]
        assert "(1, 16, 16, 16)" in rows["block2.conv"]


@pytest.mark.parametrize("size", [("-5", "32"), ("100000", "100000"), ("0", "8")])
def test_layers_refuses_a_size_out_of_range_in_one_line(project, size):
    result = invoke("layers", project / "models" / "starters.pt", "--size", *size)
    assert result.exit_code != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: --size is the input's height and width"), lines
    assert f"from 1 to 4096 pixels, got {' '.join(size)}" in lines[0]


def test_a_device_this_machine_lacks_is_one_line(project, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = project / "experiment.yaml"
    for device, why in (("cuda", "is not available"), ("cuda:x", "is unknown")):
        options = ["--set", f"device={device}", "--set", f"cache={tmp_path / device}"]
        result = invoke("run", config, "--quiet", "--out", tmp_path / "out", *options)
        assert result.exit_code == 1
        lines = error_lines(result)
        assert len(lines) == 1, result.output
        assert re.match(rf"error: device '{device}' ({why})", lines[0]), lines
        assert "'auto'" in lines[0] and "'cpu'" in lines[0]


def test_sort_ranks_a_planted_set(project, tmp_path):
    images = tmp_path / "images"
    red = write_image_set(images, make_images("red", 5, SIZE, set_rng(7, "sort-red")))
    for path in red:
        path.rename(path.with_name(f"red_{path.name}"))
    blue = write_image_set(tmp_path / "tmp-blue", make_images("blue", 5, SIZE, set_rng(7, "b")))
    for path in blue:
        shutil.move(str(path), images / f"blue_{path.name}")
    out = tmp_path / "sorted"
    args = ["sort", project / "experiment.yaml", "--concept", "red", "--layer", "block2"]
    result = invoke(*args, "--images", images, "--top", "5", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sort-red-block2-images.csv")
    assert list(table.columns) == ["rank", "file", "cosine", "projection"]
    assert len(table) == 10
    top = [Path(f).name for f in table.sort_values("rank")["file"][:5]]
    assert all(name.startswith("red_") for name in top), table
    assert (out / "sort-red-block2-images.png").is_file()
    assert str(out / "sort-red-block2-images.csv") in result.stdout

    # Sorting another folder into the same --out keeps the first sort's files.
    first = (out / "sort-red-block2-images.csv").read_bytes()
    others = tmp_path / "others"
    write_image_set(others, make_images("blue", 3, SIZE, set_rng(8, "others")))
    again = invoke(*args, "--images", others, "--top", "2", "--out", out, "--quiet")
    assert again.exit_code == 0, again.output
    assert len(pd.read_csv(out / "sort-red-block2-others.csv")) == 3
    assert (out / "sort-red-block2-others.png").is_file()
    assert (out / "sort-red-block2-images.csv").read_bytes() == first


def test_sort_out_help_names_the_files():
    result = invoke("sort", "--help")
    assert result.exit_code == 0
    text = re.sub(r"[\s│]+", " ", result.stdout)
    assert "the concept, the layer and the --examples folder's or file's name" in text
    assert "--examples" in text and "--images" in text  # --images: the older name


# -- trust comes from the person running the command ----------------------------------------
def test_model_trusted_in_the_file_is_refused(project):
    config = write_config(project, "trusted.yaml", model="models/pickled.pt")
    text = config.read_text().replace("  layers:", "  trusted: true\n  layers:", 1)
    config.write_text(text)
    result = invoke("run", config, "--quiet", "--trust-model-file")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert "model.trusted" in lines[0] and "--trust-model-file" in lines[0], lines
    assert "TCAVKIT_TRUST_MODEL_FILE=1" in lines[0], lines


def test_trust_from_the_environment(project, monkeypatch):
    import tcavkit.cli
    import tcavkit.config

    assert tcavkit.cli.TRUST_ENV_VAR == tcavkit.config.TRUST_ENV_VAR
    pickled = project / "models" / "pickled.pt"
    monkeypatch.delenv("TCAVKIT_TRUST_MODEL_FILE", raising=False)
    refused = invoke("layers", pickled, "--size", "32", "32")
    assert refused.exit_code == 1
    lines = error_lines(refused)
    assert len(lines) == 1 and "TCAVKIT_TRUST_MODEL_FILE=1" in lines[0], lines
    assert "pickle protocol" not in refused.stderr
    monkeypatch.setenv("TCAVKIT_TRUST_MODEL_FILE", "0")
    assert invoke("layers", pickled, "--size", "32", "32").exit_code == 1
    monkeypatch.setenv("TCAVKIT_TRUST_MODEL_FILE", "1")
    trusted = invoke("layers", pickled, "--size", "32", "32")
    assert trusted.exit_code == 0, trusted.output
    assert "block2" in trusted.stdout


# -- Ctrl-C, OS errors, warnings, help ------------------------------------------------------
class _Interrupting(types.ModuleType):
    """A module whose every attribute is a Ctrl-C: as if interrupted while importing it."""

    def __getattr__(self, name: str):
        raise KeyboardInterrupt


def invoke_interruptible(*args):
    try:
        return invoke(*args)
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C escaped `tcavkit {args[0]}` with a traceback")


def assert_interrupted(result):
    assert result.exit_code == 130, result.output
    assert error_lines(result) == ["interrupted; run again to resume from the cache"]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("tcavkit.workflow", ["run", "experiment.yaml"]),
        (
            "tcavkit.pipeline.experiment",
            ["sort", "experiment.yaml", "-c", "red", "-l", "block2", "--images", "."],
        ),
        ("tcavkit.models.inspect", ["layers", "models/starters.pt"]),
        ("tcavkit.report", ["report", "results"]),
        ("tcavkit.demo.run", ["demo", "--quick"]),
    ],
)
def test_ctrl_c_while_importing_is_one_line(project, monkeypatch, module, args):
    monkeypatch.chdir(project)
    monkeypatch.setitem(sys.modules, module, _Interrupting(module))
    assert_interrupted(invoke_interruptible(*args))


def console_script() -> tuple[str, str]:
    """The module and function that pyproject.toml's ``tcavkit`` console script runs."""
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    found = re.search(r'^tcavkit = "([\w.]+):(\w+)"', pyproject, re.MULTILINE)
    assert found, "no tcavkit console script in pyproject.toml"
    return found.group(1), found.group(2)


def run_console_script(tmp_path: Path, before: str, *args: str) -> subprocess.CompletedProcess:
    """The console script in a fresh interpreter, after ``before`` (code that arranges for
    a Ctrl-C to arrive at some point)."""
    module, function = console_script()
    code = (
        f"import os, signal, sys\n{before}\n"
        f"sys.argv = ['tcavkit', *{list(args)!r}]\n"
        f"from {module} import {function}\n{function}()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def test_ctrl_c_while_the_command_line_is_imported_is_one_line(tmp_path):
    """A Ctrl-C during ``import typer`` (the first 0.3 s): was a traceback from inside it."""
    fake = tmp_path / "slow"
    fake.mkdir()
    (fake / "typer.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(60)\n"
    )
    done = run_console_script(tmp_path, f"sys.path.insert(0, {str(fake)!r})", "--help")
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr


def test_ctrl_c_before_a_command_starts_is_one_line(tmp_path):
    """A Ctrl-C after parsing, before the command's body (typer said "Aborted!", exit 1)."""
    before = (
        "import tcavkit.cli\n"
        "tcavkit.cli._skip_the_last_collections = lambda: os.kill(os.getpid(), signal.SIGINT)"
    )
    done = run_console_script(tmp_path, before, "report", "results")
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr
    # inside the command, Ctrl-C still unwinds as KeyboardInterrupt (finally blocks run)
    before = (
        "import tcavkit.report\n"
        "def build_report(folder):\n    os.kill(os.getpid(), signal.SIGINT)\n"
        "tcavkit.report.build_report = build_report"
    )
    done = run_console_script(tmp_path, before, "report", "results")
    assert done.returncode == 130
    assert done.stderr == "interrupted; run again to resume from the cache\n", done.stderr


def test_ctrl_c_while_building_the_experiment_is_one_line(project, monkeypatch):
    from tcavkit.pipeline.experiment import Experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "from_config", interrupted)
    experiment = project / "experiment.yaml"
    assert_interrupted(invoke_interruptible("run", experiment, "--quiet"))
    images = project / "data" / "red"
    sort = ["sort", experiment, "-c", "red", "-l", "block2", "--images", images]
    assert_interrupted(invoke_interruptible(*sort))


def test_os_error_is_one_line_naming_the_file(project, tmp_path, monkeypatch):
    import tcavkit.workflow

    target = tmp_path / "a-file" / "summary.csv"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(tcavkit.workflow, "run_experiment_file", full_disk)
    result = invoke("run", project / "experiment.yaml", "--quiet")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert lines == [f"error: {target}: {os.strerror(errno.ENOSPC)}"], lines
    debug = invoke("run", project / "experiment.yaml", "--quiet", "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


def test_warnings_print_when_raised_and_quiet_keeps_them(project, tmp_path, monkeypatch):
    """The few-random-runs warning comes before the model's first pass, once, even with
    --quiet; after the results, the warnings the tables imply follow, each warning is
    printed once in all, and the count is that of the report's list."""
    import tcavkit.pipeline.executor as executor_module  # the local executor runs the passes

    original = executor_module.activation_pass

    def marked(*args, **kwargs):
        sys.stderr.write("MARK: activations start\n")
        return original(*args, **kwargs)

    monkeypatch.setattr(executor_module, "activation_pass", marked)
    args = ["run", project / "experiment.yaml", "--set", "random.runs=3", "--out", tmp_path / "o"]
    result = invoke(*args, "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: only 3 random runs")]
    assert len(warned) == 1, lines
    assert warned[0] < lines.index("MARK: activations start"), lines
    printed = [line for line in lines if line.startswith("warning: ")]
    assert len(printed) == len(set(printed)) > 1, lines  # near-chance CAVs: after the results
    assert not any("random runs" in line for line in lines if line not in printed), lines
    html = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    listed = html[html.index('id="warnings"') : html.index("</section>")].count("<li")
    assert lines[-1] == (
        f"{listed} warning(s) above bear on how to read these results; report.html lists the same"
    )
    assert len(printed) == listed, lines


def test_flags_take_no_value_in_help():
    for command in (["run"], ["sort"], ["layers"], ["demo"], ["discover"], []):
        result = invoke(*command, "--help")
        assert result.exit_code == 0, result.output
        for line in result.stdout.splitlines():
            if any(flag in line for flag in ("--debug", "--quiet", "--trust-model-file")):
                assert "<bool>" not in line, (command, line)
    layers = invoke("layers", "--help").stdout
    assert "int,int" not in layers
    assert "--size 64 64" in re.sub(r"[\s│]+", " ", layers)


@pytest.mark.slow
def test_demo_quick_passes(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--quick", "--quiet")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    assert (tmp_path / "demo" / "results" / "report.html").is_file()
    assert (tmp_path / "demo" / "experiment.yaml").is_file()


def test_run_into_a_file_is_one_line(project, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    result = invoke("run", project / "experiment.yaml", "--out", taken, "--quiet")
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and str(taken) in lines[0]
    assert "--out" in lines[0] and "Traceback" not in result.output
    assert taken.read_text() == "not a folder"


def test_run_writes_a_manifest_and_stamps_the_report(project, tmp_path):
    import json

    out = tmp_path / "out"
    result = invoke("run", project / "experiment.yaml", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "projections.csv",
        "results.json",
        "runs.csv",
        "summary.csv",
    ]
    assert json.loads((out / "results.json").read_text())["run_id"] == manifest["run_id"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f'<meta name="tcavkit-run-id" content="{manifest["run_id"]}">' in html


def test_a_command_skips_the_garbage_collections_at_exit(tmp_path):
    # atexit runs the last registered first: the command's gc.freeze, then this check
    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "from tcavkit.cli import app\n"
        "app(['report', 'no-such-folder'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 1 and "frozen True" in done.stdout, done.stdout + done.stderr


def test_sort_checks_the_examples_before_loading_the_model(tmp_path):
    """The model file is missing too: the --examples error comes first, nothing loaded."""
    (tmp_path / "experiment.yaml").write_text(CONFIG.format(model="models/missing.pt"))
    result = invoke(
        "sort", tmp_path / "experiment.yaml", "-c", "red", "-l", "block3", "--examples", "nope"
    )
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: --examples nope does not exist"), lines


def test_executor_help_names_the_ray_extra():
    result = invoke("run", "--help")
    assert "pip install 'tcavkit[ray]'" in re.sub(r"[\s│]+", " ", result.stdout)


def test_quiet_silences_the_progress_bars_of_transformers(monkeypatch):
    from transformers.utils import logging as transformers_logging

    from tcavkit import cli

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    transformers_logging.enable_progress_bar()
    monkeypatch.setattr(cli, "_errors", _stop_before_work)
    assert invoke("run", "x.yaml").exit_code == 2 and transformers_logging.is_progress_bar_enabled()
    assert invoke("run", "x.yaml", "-q").exit_code == 2
    assert not transformers_logging.is_progress_bar_enabled()  # imported: switched off
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # not yet imported: read then
    transformers_logging.enable_progress_bar()


def _stop_before_work(debug=False):
    raise SystemExit(2)
