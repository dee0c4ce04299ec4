"""The results folder is one unit: a manifest ties its files to one run, a mix of two runs is
refused, and operating-system errors while writing it are one-line errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import tcavkit.workflow as workflow
from tcavkit.cli import app
from tcavkit.errors import DataError
from tcavkit.report import build_report
from tcavkit.results import TcavResult
from tcavkit.store import ArrayStore
from tcavkit.tables import CORE_SUMMARY_COLUMNS, RUN_COLUMNS

SAVED = ("runs.csv", "summary.csv", "results.json")
MANIFEST_FILE = "manifest.json"
NO_MANIFEST = "manifest.json not found"


def make_result(level: float) -> TcavResult:
    """A small result (1 target x 2 concepts x 1 layer, 3 runs each); ``level`` sets the scores."""
    runs, summary = [], []
    for concept in ("red", "blue"):
        for k in range(3):
            runs.append(("fire", concept, "block2", f"random500_{k}", k, level, 0.1, 0.9, False))
        low, high = level - 0.02, level + 0.02
        summary.append(("fire", concept, "block2", 3, level, 0.01, low, high,
                        0.5, 0.05, 0.01, 0.02, level > 0.6, 0.9))  # fmt: skip
    for k in range(3):
        runs.append(("fire", "random500_9", "block2", f"random500_{k}", k, 0.5, 0.0, 0.5, True))
    meta = {"seed": 0, "config": {"name": f"level {level}"}, "warnings": []}
    return TcavResult(
        runs=pd.DataFrame(runs, columns=list(RUN_COLUMNS)),
        summary=pd.DataFrame(summary, columns=list(CORE_SUMMARY_COLUMNS)),
        meta=meta,
    )


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps stderr apart
        return CliRunner()


def one_line_error(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert isinstance(info.value, DataError)
    assert "\n" not in message and message.strip() == message
    return message


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.parent.rglob("*") if p.name.startswith(".tmp-")]


def test_each_result_has_a_run_id_that_save_and_load_keep(tmp_path: Path) -> None:
    first, second = make_result(0.5), make_result(0.9)
    assert first.run_id and second.run_id and first.run_id != second.run_id
    given = {"seed": 3}
    assert TcavResult(first.runs, first.summary, given).meta["run_id"] and given == {"seed": 3}

    out = first.save(tmp_path / "out")
    assert json.loads((out / "results.json").read_text())["run_id"] == first.run_id
    assert TcavResult.load(out).run_id == first.run_id


def test_manifest_lists_each_saved_file_with_its_digest(tmp_path: Path) -> None:
    result = make_result(0.5)
    out = result.save(tmp_path / "out")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["run_id"] == result.run_id
    assert sorted(manifest["files"]) == sorted(SAVED)
    for name in SAVED:
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == digest
    assert no_temporary_files(out)


@pytest.mark.parametrize("stale", SAVED)
def test_a_file_of_an_earlier_run_is_refused(tmp_path: Path, stale: str) -> None:
    out = tmp_path / "out"
    make_result(0.5).save(out)
    aside = tmp_path / stale
    shutil.copy2(out / stale, aside)
    make_result(0.9).save(out)
    shutil.copy2(aside, out / stale)  # a crash that left one file of the first run

    for read in (build_report, TcavResult.load):
        with pytest.raises(DataError) as info:
            read(out)
        message = one_line_error(info)
        assert str(out / stale) in message
        assert all(str(out / name) not in message for name in SAVED if name != stale)
        assert "tcavkit run" in message
    assert not (out / "report.html").exists()

    cli = runner().invoke(app, ["report", str(out)])
    assert cli.exit_code == 1
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and stale in lines[0]


def test_an_untouched_folder_builds_and_loads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_result(0.5).save(out)
    second = make_result(0.9)
    second.save(out)

    html = build_report(out).read_text(encoding="utf-8")
    assert f'<meta name="tcavkit-run-id" content="{second.run_id}">' in html
    assert f"<dt>Run id</dt><dd><code>{second.run_id}</code></dd>" in html
    assert NO_MANIFEST not in html
    loaded = TcavResult.load(out)
    assert loaded.run_id == second.run_id
    assert list(loaded.summary["mean"]) == [0.9, 0.9]


def test_a_folder_without_manifest_builds_with_a_warning(tmp_path: Path) -> None:
    result = make_result(0.5)
    out = result.save(tmp_path / "out")
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # as written by an older tcavkit

    html = build_report(out).read_text(encoding="utf-8")
    section = html[html.index('id="warnings"') :]
    warnings = section[: section.index("</section>")]  # the findings' warnings
    assert NO_MANIFEST in warnings and "could not be checked" in warnings
    assert TcavResult.load(out).run_id == result.run_id


@pytest.mark.parametrize("interrupt", [OSError(errno.ENOSPC, "No space left"), KeyboardInterrupt()])
def test_an_interrupted_save_over_an_earlier_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: BaseException
) -> None:
    out = tmp_path / "out"
    make_result(0.5).save(out)
    replace, calls = os.replace, []

    def fails_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise interrupt
        replace(src, dst)

    monkeypatch.setattr("tcavkit.atomic.os.replace", fails_second)
    with pytest.raises((DataError, KeyboardInterrupt)):
        make_result(0.9).save(out)
    monkeypatch.undo()
    assert no_temporary_files(out)

    with pytest.raises(DataError) as info:
        build_report(out)
    message = one_line_error(info)
    assert str(out / "runs.csv") in message and "summary.csv" not in message


def interrupt_replacing(monkeypatch: pytest.MonkeyPatch, name: str):
    """Make tcavkit's atomic writes raise ``KeyboardInterrupt`` (a kill) when they would put
    a file called ``name`` in place; returns the real ``os.replace`` to restore."""
    replace = os.replace

    def killed(src, dst):
        if Path(dst).name == name:
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr("tcavkit.atomic.os.replace", killed)
    return replace


def test_an_interrupted_first_save_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    interrupt_replacing(monkeypatch, "results.json")
    with pytest.raises(KeyboardInterrupt):
        make_result(0.5).save(out)
    monkeypatch.undo()

    for read in (build_report, TcavResult.load):
        with pytest.raises(DataError) as info:
            read(out)
        message = one_line_error(info)
        assert str(out / "results.json") in message and "missing" in message


@pytest.mark.parametrize("below", [False, True])
def test_save_into_a_file_is_one_line(tmp_path: Path, below: bool) -> None:
    file = tmp_path / "taken.txt"
    file.write_text("not a folder")
    out = file / "results" if below else file
    with pytest.raises(DataError) as info:
        make_result(0.5).save(out)
    message = one_line_error(info)
    assert str(file) in message and "is a file" in message
    assert "choose another --out folder" in message
    assert file.read_text() == "not a folder"


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tcavkit.atomic.os.replace", full)
    with pytest.raises(DataError) as info:
        make_result(0.5).save(out)
    message = one_line_error(info)
    assert str(out) in message and "free disk space" in message
    assert no_temporary_files(out)


def test_a_full_disk_while_building_the_report_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = make_result(0.5).save(tmp_path / "out")
    replace = os.replace

    def full_for_html(src, dst):
        if Path(dst).suffix == ".html":
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr("tcavkit.atomic.os.replace", full_for_html)
    with pytest.raises(DataError) as info:
        build_report(out)
    message = one_line_error(info)
    assert str(out) in message and "free disk space" in message and "tcavkit report" in message
    assert not (out / "report.html").exists() and no_temporary_files(out)


def test_a_read_only_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"

    def refused(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tcavkit.atomic.os.replace", refused)
    with pytest.raises(DataError) as info:
        make_result(0.5).save(out)
    message = one_line_error(info)
    assert str(out) in message and "not writable" in message
    assert "choose another --out folder" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anyway")
def test_a_folder_without_write_permission_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(DataError) as info:
            make_result(0.5).save(out)
    finally:
        out.chmod(0o700)
    assert str(out) in one_line_error(info)


class FakeExperiment:
    """Stands in for :class:`tcavkit.Experiment` in the workflow: returns a fixed result."""

    def __init__(self, result: TcavResult) -> None:
        self.result, self.config, self.runs = result, {}, 0
        self.store = ArrayStore(None)  # no cache folder: the report draws every plot

    def run(self) -> TcavResult:
        self.runs += 1
        return self.result


def fake_experiments(monkeypatch: pytest.MonkeyPatch, *results: TcavResult) -> list[FakeExperiment]:
    made = [FakeExperiment(r) for r in results]
    queue = list(made)

    class Factory:
        @staticmethod
        def from_config(*args, **kwargs) -> FakeExperiment:
            return queue.pop(0)

    monkeypatch.setattr(workflow, "Experiment", Factory)
    return made


def test_the_workflow_checks_the_output_folder_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (experiment,) = fake_experiments(monkeypatch, make_result(0.5))
    file = tmp_path / "taken.txt"
    file.write_text("x")
    with pytest.raises(DataError) as info:
        workflow.run_experiment_file("experiment.yaml", out=file, progress=False)
    assert str(file) in one_line_error(info)
    assert experiment.runs == 0


def test_the_workflow_removes_the_previous_report_once_the_tables_are_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_result(0.5), make_result(0.9)
    fake_experiments(monkeypatch, first, second)
    out = tmp_path / "out"
    outcome = workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert first.run_id in outcome.report.read_text(encoding="utf-8")

    def killed(folder, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "build_report", killed)
    with pytest.raises(KeyboardInterrupt):
        workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert TcavResult.load(out).run_id == second.run_id
    assert not (out / "report.html").exists()


@pytest.mark.parametrize(
    "document",
    [
        {
            "run_id": "x",
            "config": {"a": [1, 2.5, None], "b": {}},
            "summary": [{"target": "fire", "p": 0.1, "ok": True, "n": 3, "none": None}],
            "runs": [
                {"target": 'a "quoted"\n},\n   {name', "score": 1e-300, "flag": False},
                {"target": "ünïcode ✓", "score": -0.0, "flag": True},
                {"target": "}", "score": 12345678901234567890, "flag": None},
            ],
        },
        {"summary": [], "runs": []},
        {"summary": [{"a": 1}], "runs": []},
        {"meta": 1, "runs": [{"nested": [1, 2]}], "summary": [{"a": 1}]},  # not flat: fallback
        {"runs": [{"a": 1}], "meta": 2},  # tables not last: fallback
        {"runs": [{}, {"a": 1}]},  # an empty record: fallback
        {"meta": "only"},
        {},
    ],
)
def test_results_json_is_written_as_json_dumps_would(document) -> None:
    from tcavkit.results import dumps_indented

    assert dumps_indented(document) == json.dumps(document, indent=1)


def test_a_run_killed_while_replacing_the_tables_leaves_no_report_of_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous report goes before the first table is replaced; the temporary files a
    killed run leaves (tcavkit's own names only) are removed by the next run."""
    first, second, third = make_result(0.5), make_result(0.9), make_result(0.7)
    fake_experiments(monkeypatch, first, second, third)
    out = tmp_path / "out"
    workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    replace = interrupt_replacing(monkeypatch, "summary.csv")  # killed at the second table
    with pytest.raises(KeyboardInterrupt):
        workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    monkeypatch.setattr("tcavkit.atomic.os.replace", replace)
    assert not (out / "report.html").exists()
    with pytest.raises(DataError):
        build_report(out)  # the tables of two runs are refused, as before

    left = [out / ".tmp-runs.csv.a1b2c3d4.tmp", out / "plots" / ".tmp-x.png.zz_9y8x7.tmp"]
    theirs = [out / ".tmp-notes.txt", out / ".tmp-runs.csv.abc.tmp", out / "plots" / "a.tmp"]
    for path in left + theirs:
        path.write_text("left by a killed process, or the user's")
    outcome = workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert third.run_id in outcome.report.read_text(encoding="utf-8")
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in theirs)


def test_a_second_run_into_a_held_folder_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcavkit.results import output_lock

    experiment, _ = fake_experiments(monkeypatch, make_result(0.5), make_result(0.9))
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(DataError) as info:
            workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
        assert f"results folder {out} is in use by another tcavkit run" in one_line_error(info)
        assert experiment.runs == 0
    outcome = workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert TcavResult.load(out).run_id == outcome.result.run_id
    assert not (out / ".tcavkit-lock").exists()


def test_the_lock_of_a_killed_process_does_not_block_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the folder: refused, naming the process; once that process is
    killed (its lock file left behind), the folder is free."""
    import signal
    import subprocess
    import sys

    import tcavkit

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from tcavkit.results import output_lock\n"
            "with output_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(tcavkit.__file__).parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        fake_experiments(monkeypatch, make_result(0.5))
        with pytest.raises(
            DataError, match=rf"in use by another tcavkit run \(process {holder.pid}\)"
        ):
            workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (out / ".tcavkit-lock").exists()  # left by the killed process
    (experiment,) = fake_experiments(monkeypatch, make_result(0.7))
    outcome = workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert experiment.runs == 1 and outcome.report.exists()


def test_a_folder_marked_unfinished_is_refused_until_saved(tmp_path: Path) -> None:
    """``tcavkit discover`` marks its folder before replacing the concept folders that the
    previous tables describe: killed then, the folder is refused, not reported as whole."""
    from tcavkit.results import mark_unfinished

    out = tmp_path / "out"
    make_result(0.5).save(out)
    mark_unfinished(out)
    for read in (build_report, TcavResult.load):
        with pytest.raises(DataError) as info:
            read(out)
        assert f"results folder {out} was being rewritten" in one_line_error(info)
    result = make_result(0.9)
    result.save(out)
    assert TcavResult.load(out).run_id == result.run_id


def test_a_folder_that_cannot_be_locked_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without file locks (some network mounts) does not stop the run; the
    warning says that a concurrent run would go unnoticed."""
    fcntl = pytest.importorskip("fcntl")
    from tcavkit.errors import TcavWarning

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    (experiment,) = fake_experiments(monkeypatch, make_result(0.5))
    out = tmp_path / "out"
    with pytest.warns(TcavWarning, match=rf"results folder {out} cannot be locked .*not be"):
        outcome = workflow.run_experiment_file("experiment.yaml", out=out, progress=False)
    assert experiment.runs == 1 and outcome.report.exists()
