"""Start-up: the command line and the top namespace import nothing heavy until needed.

A proxy for start-up time that does not depend on the machine's speed or load: which
modules are in ``sys.modules`` after an import, checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "sklearn")


def modules_after(statement: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after ``statement`` in a new interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


@pytest.mark.parametrize(
    "statement",
    [
        "import tcavkit.cli",
        "import tcavkit.entry",
        "import tcavkit",
        "from tcavkit import TcavWarning, __version__",
        "import tcavkit.report",
        "import tcavkit.models",
        "import tcavkit.cav",
    ],
)
def test_import_loads_nothing_heavy(statement: str) -> None:
    heavy = modules_after(statement) & {*HEAVY, "numpy", "pydantic", "yaml"}
    assert not heavy, f"{statement!r} imports {sorted(heavy)}"


def test_the_run_command_imports_no_torch_before_it_needs_the_model() -> None:
    # what a whole warm run imports is checked in tests/test_warm.py; here, the modules
    code = (
        "import json, sys\n"
        "import tcavkit.workflow, tcavkit.pipeline.training, tcavkit.report.build\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    heavy = {name for name in loaded if name.split(".")[0] in ("torch", "matplotlib", "sklearn")}
    assert not heavy and "scipy.stats" not in loaded, sorted(heavy)[:5]


def test_help_runs_without_heavy_imports() -> None:
    # typer itself may import pydantic to convert a command's parameters
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from tcavkit.cli import app\n"
        "for args in (['--help'], ['layers', '--help'], ['run', '--help']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_lazy_namespaces_still_give_every_public_name() -> None:
    import tcavkit
    import tcavkit.cav
    import tcavkit.models
    import tcavkit.report

    for module in (tcavkit, tcavkit.cav, tcavkit.models, tcavkit.report):
        for name in module.__all__:
            assert getattr(module, name) is not None
            assert name in dir(module)
        with pytest.raises(AttributeError, match="no_such_name"):
            _ = module.no_such_name
    from tcavkit import Experiment, ImageFolder
    from tcavkit.pipeline.experiment import Experiment as RealExperiment

    assert Experiment is RealExperiment and ImageFolder.__name__ == "ImageFolder"
