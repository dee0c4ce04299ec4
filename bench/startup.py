"""Start-up time of the command line and the package, in fresh processes.

    python bench/startup.py [--repeat N]

Runs ``tcavkit --help``, ``tcavkit layers --help``, ``python -c "import tcavkit"`` and
``python -c "import tcavkit.cli"`` N times each (default 5, interleaved so that a busy spell
of the machine hits every row alike) and prints the median and the fastest wall time of
each, and the median CPU time (user + system) of the child process, which a busy machine
inflates less than wall time.
``tcavkit`` is the console script next to this interpreter (or on ``PATH``); without one,
an equivalent ``python -c`` line.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def tcavkit_command() -> list[str]:
    """The installed ``tcavkit`` script of this interpreter's environment, else an
    equivalent ``python -c`` line."""
    script = Path(sys.executable).with_name("tcavkit")
    if script.exists():
        return [str(script)]
    found = shutil.which("tcavkit")
    if found:
        return [found]
    return [sys.executable, "-c", "from tcavkit.cli import app; app()"]


def commands() -> dict[str, list[str]]:
    """Row label -> command line."""
    cli = tcavkit_command()
    return {
        "tcavkit --help": [*cli, "--help"],
        "tcavkit layers --help": [*cli, "layers", "--help"],
        'python -c "import tcavkit"': [sys.executable, "-c", "import tcavkit"],
        'python -c "import tcavkit.cli"': [sys.executable, "-c", "import tcavkit.cli"],
    }


def child_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (output discarded; it must succeed)."""
    cpu, start = child_cpu(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, child_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    rows = commands()
    walls: dict[str, list[float]] = {label: [] for label in rows}
    cpus: dict[str, list[float]] = {label: [] for label in rows}
    for command in rows.values():  # one untimed run each: warm the file cache
        timed(command)
    for _ in range(args.repeat):
        for label, command in rows.items():
            wall, cpu = timed(command)
            walls[label].append(wall)
            cpus[label].append(cpu)
    width = max(len(label) for label in rows)
    print(f"{'command':<{width}}  {'wall median s':>13}  {'wall min s':>10}  {'cpu median s':>12}")
    for label in rows:
        wall, fastest = statistics.median(walls[label]), min(walls[label])
        cpu = statistics.median(cpus[label])
        print(f"{label:<{width}}  {wall:>13.3f}  {fastest:>10.3f}  {cpu:>12.3f}")
    print(f"{args.repeat} runs each, interleaved")


if __name__ == "__main__":
    main()
