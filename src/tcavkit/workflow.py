"""The whole job of ``tcavkit run``: build the experiment from its file, run, save, report.

Shared by the command line and the demo so that both take exactly the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tcavkit.pipeline.experiment import Experiment
from tcavkit.report import build_report
from tcavkit.results import TcavResult


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

    The code path of ``tcavkit run`` (and of the demo).
    """
    experiment = Experiment.from_config(
        path, overrides=list(overrides), trust_model_file=trust_model_file, progress=progress
    )
    result = experiment.run()
    output = out if out is not None else (experiment.config or {}).get("output", "results")
    out_dir = Path(output)
    result.save(out_dir)
    report = build_report(out_dir)
    return RunOutcome(result, out_dir, report, result.warnings)
