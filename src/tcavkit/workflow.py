"""The whole job of ``tcavkit run``: build the experiment from its file, run, save, report.

Shared by the command line and the demo so that both take exactly the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tcavkit.atomic import remove_temporaries
from tcavkit.pipeline.experiment import Experiment
from tcavkit.report import build_report
from tcavkit.report.build import PLOTS_DIR, discard_report
from tcavkit.results import TcavResult, check_output_folder, output_lock


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_experiment_file` produced."""

    result: TcavResult
    out_dir: Path
    report: Path
    warnings: list[str] = field(default_factory=list)


def run_experiment_file(
    path: str | Path,
    *,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    trust_model_file: bool = False,
    progress: bool = True,
) -> RunOutcome:
    """Build, run and save the experiment in the YAML file ``path``, then write its report.

    The code path of ``tcavkit run`` (and of the demo). An output folder that cannot be
    made (a file in the way), or that another run is writing into (it is locked for the
    whole run, :func:`~tcavkit.results.output_lock`), fails before the run. Temporary
    files left there by a killed run are removed. The previous run's ``report.html`` is
    removed before the first table is replaced, so an interrupted save or build does not
    leave it beside tables it does not describe. Plots are reused from the experiment's
    cache folder when their rows are unchanged (none without a cache).

    Raises:
        DataError: among others, the results or the report cannot be written, or another
            run holds the output folder.
    """
    experiment = Experiment.from_config(
        path, overrides=list(overrides), trust_model_file=trust_model_file, progress=progress
    )
    output = out if out is not None else (experiment.config or {}).get("output", "results")
    out_dir = Path(output)
    check_output_folder(out_dir)
    with output_lock(out_dir):
        for folder in (out_dir, out_dir / PLOTS_DIR):
            remove_temporaries(folder)
        result = experiment.run()
        discard_report(out_dir)
        result.save(out_dir)
        report = build_report(out_dir, plot_cache=experiment.store.root)
    return RunOutcome(result, out_dir, report, result.warnings)
