"""The command line: run, report, layers, sort, demo, and errors that fit on one line."""

from __future__ import annotations

import shutil
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
    table = pd.read_csv(out / "sort-red-block2.csv")
    assert list(table.columns) == ["rank", "file", "cosine", "projection"]
    assert len(table) == 10
    top = [Path(f).name for f in table.sort_values("rank")["file"][:5]]
    assert all(name.startswith("red_") for name in top), table
    assert (out / "sort-red-block2.png").is_file()


@pytest.mark.slow
def test_demo_quick_passes(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--quick", "--quiet")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    assert (tmp_path / "demo" / "results" / "report.html").is_file()
    assert (tmp_path / "demo" / "experiment.yaml").is_file()
