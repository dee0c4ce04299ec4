"""The ``tcavkit`` command line: thin commands over experiment, report, sorter and demo."""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tcavkit.errors import DataError, TcavError, TcavWarning, one_line

app = typer.Typer(
    name="tcavkit",
    help="TCAV: which human concepts does a model use for a class, at which layer?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, bool] = {"debug": False, "quick_exit": False}

# The same as tcavkit.config.TRUST_ENV_VAR: the command line imports no more of the library
# than it needs before parsing.
TRUST_ENV_VAR = "TCAVKIT_TRUST_MODEL_FILE"

EXAMPLES_HELP = (
    "a folder of images, or for a text model a .txt file (one example per line), a "
    "folder of .txt files, or a .csv/.jsonl file with a 'text' column"
)

# Flags take no value: ``metavar=""`` keeps typer from printing a ``<bool>`` type beside them.
DebugOption = Annotated[
    bool,
    typer.Option("--debug", metavar="", help="Show the full traceback when something fails."),
]
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-model-file",
        metavar="",
        envvar=TRUST_ENV_VAR,
        help=(
            "Allow what runs code the experiment file chose: a pickled model file "
            "(torch.save), a Keras file with Lambda layers, a model.factory that is not a "
            f"model builder of torchvision, timm, transformers or tcavkit (or set "
            f"{TRUST_ENV_VAR}=1; an experiment file cannot allow it)."
        ),
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        metavar="",
        help="No progress bars (warnings and errors are still printed).",
    ),
]


@app.callback()
def main(debug: DebugOption = False) -> None:
    """tcavkit: Testing with Concept Activation Vectors (Kim et al., 2018)."""
    _state["debug"] = debug
    _skip_the_last_collections()


def _skip_the_last_collections() -> None:
    """Freeze the garbage collector when the interpreter exits (once per process).

    At exit the interpreter runs full garbage collections over every object still alive
    (the tables, pandas, pydantic and the rest of what a command imported): 0.3-0.4 s of
    a warm `tcavkit run` of W1, a fifth of it. Frozen, the objects are still released by
    reference counting as the modules are torn down, and files are closed and atexit
    handlers run as before; only the search for reference cycles, whose memory the
    ending process hands back anyway, is skipped.
    """
    if not _state["quick_exit"]:
        _state["quick_exit"] = True
        atexit.register(gc.freeze)


def _quiet_libraries() -> None:
    """``--quiet`` for the libraries a command loads too: no progress bars from
    huggingface_hub and transformers ("Loading weights"), whether they are imported yet or
    not."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when they are imported
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _os_error(exc: OSError) -> str:
    """An OS error as ``file: reason`` (``file -> other: reason`` for a rename)."""
    reason = exc.strerror or one_line(exc)
    names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside the block Ctrl-C raises ``KeyboardInterrupt`` (Python's default), so that
    ``finally`` blocks run; outside it the console script (:mod:`tcavkit.entry`) exits at
    once with one line. The handler before the block is put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _errors(debug: bool = False) -> Iterator[None]:
    """TcavError or OSError → one ``error:`` line on stderr and exit 1 (the traceback too
    with ``--debug``); Ctrl-C → one line and exit 130. Each command runs its whole body,
    imports included, inside this block."""
    try:
        with interruptible():
            yield
    except (TcavError, OSError) as exc:
        if debug or _state["debug"]:
            traceback.print_exc()
        text = _os_error(exc) if isinstance(exc, OSError) else str(exc)
        _err("error: " + " ".join(text.split()))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err("interrupted; run again to resume from the cache")
        raise typer.Exit(130) from None


@contextmanager
def _warnings_shown() -> Iterator[list[str]]:
    """Print each distinct TcavWarning once, as ``warning: ...`` on stderr, as soon as it is
    raised; yields the list of texts printed (for :func:`_recap`). Other warnings are not
    shown.

    ``Experiment.run`` records its warnings (to put them in the results) and re-emits them
    only when it ends; to see them while it runs, ``warnings._showwarnmsg``, which Python
    calls for every warning that passes the filters, recorded or not, is wrapped inside the
    block. Where it does not exist, warnings are printed when they reach this block.
    """
    seen: list[str] = []

    def show(message: warnings.WarningMessage) -> None:
        if issubclass(message.category, TcavWarning):
            text = " ".join(str(message.message).split())
            if text not in seen:
                seen.append(text)
                _err(f"warning: {text}")

    original = getattr(warnings, "_showwarnmsg", None)

    def hook(message: warnings.WarningMessage) -> None:
        show(message)
        assert original is not None
        original(message)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TcavWarning)
        if original is not None:
            warnings._showwarnmsg = hook  # type: ignore[attr-defined]
        try:
            yield seen
        finally:
            if original is not None:
                warnings._showwarnmsg = original  # type: ignore[attr-defined]
            for message in caught:
                show(message)


def _recap(seen: list[str], result: Any = None) -> None:
    """After the results, each warning once and how many there are in all.

    The warnings of ``result`` (a :class:`~tcavkit.results.TcavResult`) that its report
    lists but that were not printed while it was computed (those the tables imply, such
    as near-chance CAVs: :func:`tcavkit.report.text.report_warnings`) are printed here;
    then one line counts every warning printed, the number the report lists.
    """
    texts = list(seen)
    if result is not None:
        from tcavkit.report.text import report_warnings

        for text in report_warnings(result.summary, result.meta):
            if text not in texts:
                texts.append(text)
                _err(f"warning: {text}")
    if texts:
        listed = "; report.html lists the same" if result is not None else ""
        _err(f"{len(texts)} warning(s) above bear on how to read these results{listed}")


def print_summary(summary: Any, echo: Callable[[str], None] = typer.echo) -> None:
    """A compact table of what was tested: target, concept, layer, the tested statistic with
    its interval, that of random concepts (mean ± sd), the TCAV score, p (adjusted), marker.

    The marker is ``+`` for a significant positive row (the tested statistic is above random
    concepts), ``−`` for a significant negative one, blank otherwise; the direction comes
    from :func:`tcavkit.report.common.directions`, and a marked row's interval excludes
    random concepts' mean. ``−`` (U+2212) becomes ``-`` where standard output cannot encode
    it.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tcavkit.report.common import DIRECTION_MARKS
    from tcavkit.report.text import headline, statistic_label

    marks = dict(DIRECTION_MARKS)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        marks["negative"].encode(encoding)
    except (LookupError, UnicodeEncodeError):
        marks["negative"] = "-"
    name, rows = headline(summary)
    label = statistic_label(name)
    has_interval = any("[" in row.statistic for row in rows)
    tested = f"{label} [interval]" if has_interval else label
    columns = ["target", "concept", "layer", tested, "random concepts", "score", "p_adjusted", ""]
    if name == "tcav_score":
        columns.remove("score")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        justify = "left" if column in ("target", "concept", "layer", "") else "right"
        table.add_column(Text(column), justify=justify)
    for row in rows:
        cells = [row.target, row.concept, row.layer, row.statistic, row.null, row.score]
        if name == "tcav_score":
            cells.pop()
        # Text: names such as "[bold]" are shown as written, never read as rich markup
        table.add_row(*(Text(c) for c in (*cells, row.p_adjusted, marks[row.direction])))
    console = Console(width=200, soft_wrap=True, highlight=False)
    with console.capture() as capture:
        console.print(table)
    echo(capture.get().rstrip())
    echo(
        f"+ / {marks['negative']} significant after correction: + positive (the {label} is "
        f"above random concepts), {marks['negative']} negative (below); the TCAV score "
        "(share of examples whose logit rises) is descriptive"
        if name != "tcav_score"
        else f"+ / {marks['negative']} significant after correction: + positive (the class "
        f"logit rises along the concept for more examples than along random concepts), "
        f"{marks['negative']} negative (for fewer)"
    )


def _print_controls(meta: dict[str, Any]) -> None:
    """The negative controls' sentence and what the test could see (see
    :func:`tcavkit.report.text.controls_text` and ``detectable_text``)."""
    from tcavkit.report.text import controls_text, detectable_text

    for text in (controls_text(meta.get("controls")), detectable_text(meta.get("detectable"))):
        if text:
            typer.echo(text)


def executor_overrides(executor: str | None, ray_address: str | None) -> list[str]:
    """``--executor`` and ``--ray-address`` as ``--set`` overrides (an address selects
    ray unless ``--executor`` says otherwise; quoted, so YAML reads it as text)."""
    overrides = []
    if executor is not None:
        overrides.append(f"executor={json.dumps(executor)}")
    if ray_address is not None:
        if executor is None:
            overrides.append('executor="ray"')
        overrides.append(f"ray.address={json.dumps(ray_address)}")
    return overrides


@app.command()
def run(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default: output:).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set cav.method=hinge."),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            metavar="local|ray",
            help=(
                # typer reads help as rich markup: "\\[" shows "[" (else "[ray]" vanishes)
                "Where the model passes and the CAVs run: local (this process) or ray (a Ray "
                "cluster; pip install 'tcavkit\\[ray]'). Default: the experiment's executor:, "
                "else local."
            ),
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help=(
                "The Ray cluster to run on (auto, HOST:PORT or ray://HOST:10001); implies "
                "--executor ray. Default: the experiment's ray.address, else a Ray instance "
                "started on this machine."
            ),
        ),
    ] = None,
    trust_model_file: TrustOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Run a TCAV experiment, save its tables and write report.html."""
    if quiet:
        _quiet_libraries()
    with _errors(debug):
        with _warnings_shown() as seen:
            from tcavkit.workflow import run_experiment_file  # imports torch: not at --help

            outcome = run_experiment_file(
                experiment,
                out=out,
                overrides=[*(set_ or []), *executor_overrides(executor, ray_address)],
                trust_model_file=trust_model_file,
                progress=not quiet,
            )
        print_summary(outcome.result.summary)
        _print_controls(outcome.result.meta)
        typer.echo(f"report: {outcome.report}")
        _recap(seen, outcome.result)


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="A folder written by `tcavkit run`.")],
    debug: DebugOption = False,
) -> None:
    """Rebuild plots and report.html from a results folder."""
    with _errors(debug), _warnings_shown():
        from tcavkit.report import build_report

        path = build_report(results_dir)
        typer.echo(f"report: {path}")


@app.command()
def layers(
    model: Annotated[Path, typer.Argument(help="A model file or an experiment YAML file.")],
    trust_model_file: TrustOption = False,
    size: Annotated[
        tuple[int, int] | None,
        typer.Option(
            "--size",
            metavar="H W",
            help=(
                "Input height and width, two numbers from 1 to 4096: --size 64 64 "
                "(default: the experiment's model.input.size, else the model's own, else "
                "224 224)."
            ),
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """List the model's layers with their output shapes for one input."""
    with _errors(debug), _warnings_shown():
        if size is not None:
            from tcavkit.options import check_input_size

            check_input_size(size, "--size")
        from tcavkit.models.inspect import layer_shapes  # imports torch: not at --help

        rows = layer_shapes(model, trust_model_file=trust_model_file, size=size)
        width = max((len(name) for name, _, _ in rows), default=5)
        kind_width = max((len(kind) for _, kind, _ in rows), default=0)
        for name, kind, shape in rows:
            typer.echo(f"{name:<{width}}  {kind:<{kind_width}}  {shape}")


@app.command()
def sort(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file.")],
    concept: Annotated[str, typer.Option("--concept", "-c", help="Concept to sort by.")],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer of the CAVs.")],
    examples: Annotated[
        Path,
        typer.Option(
            "--examples",
            "--images",
            help=f"What to sort: {EXAMPLES_HELP}.",
        ),
    ],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Examples shown per end.")] = 8,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=(
                "Folder for the table and the contact sheet (images only) (default: the "
                "experiment's output: folder). Their names hold the concept, the layer and "
                "the --examples folder's or file's name, e.g. sort-red-conv-pics.csv, so "
                "other sorts keep theirs."
            ),
        ),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
    trust_model_file: TrustOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Rank images (or, for a text model, texts) by cosine similarity with a concept's mean
    CAV at a layer."""
    if quiet:
        _quiet_libraries()
    with _errors(debug):
        if not examples.exists():  # before the model is loaded and the CAVs are computed
            raise DataError(f"--examples {examples} does not exist; give {EXAMPLES_HELP}")
        with _warnings_shown() as seen:
            from tcavkit.pipeline.experiment import Experiment  # imports torch: not at --help
            from tcavkit.sorter import output_stem, sort_examples

            exp = Experiment.from_config(
                experiment,
                overrides=set_ or [],
                trust_model_file=trust_model_file,
                progress=not quiet,
            )
            result = sort_examples(exp, concept, layer, examples)
            folder = Path(out) if out is not None else Path((exp.config or {})["output"])
            stem = output_stem(concept, layer, examples)
            csv_path = result.write_csv(folder / f"{stem}.csv")
            sheet = None
            if not result.is_text:
                sheet = result.write_contact_sheet(folder / f"{stem}.png", top)
        n = len(result)
        k = min(top, n)
        typer.echo(f"most like {concept!r} at {layer}:")
        for i in range(k):
            typer.echo(f"  {i + 1:>4}  {result.cosine[i]:+.3f}  {result.label(i)}")
        typer.echo(f"least like {concept!r} at {layer}:")
        for i in range(max(k, n - k), n) if n > k else []:
            typer.echo(f"  {i + 1:>4}  {result.cosine[i]:+.3f}  {result.label(i)}")
        typer.echo(f"table: {csv_path}")
        if sheet is not None:
            typer.echo(f"contact sheet: {sheet}")
        _recap(seen)


def _print_concepts(outcome: Any) -> None:
    """One line per discovered concept, in the order of their results, and the outputs."""
    from tcavkit.report.common import DIRECTION_MARKS, format_p

    for concept in outcome.concepts:
        row = concept.result or {}
        mark = DIRECTION_MARKS.get(str(row.get("direction")), " ")
        folder = concept.folder.relative_to(outcome.out_dir).as_posix()
        typer.echo(
            f"  {mark or ' '} {concept.name}: {len(concept.patches)} patches from "
            f"{concept.n_images} images, p_adjusted {format_p(row.get('p_adjusted'))}  {folder}"
        )
    typer.echo(f"concepts: {outcome.concepts_file}")
    typer.echo(f"report: {outcome.report}")


@app.command()
def discover(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file (its discover:).")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="A class to discover concepts for (repeat for several; default: "
            "discover.targets, else every target).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: discover inside output:)."),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
    trust_model_file: TrustOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Discover the concepts a class uses from its own images (ACE or NMF) and test each one."""
    if quiet:
        _quiet_libraries()
    with _errors(debug):
        with _warnings_shown() as seen:
            from tcavkit.discover import discover as run_discovery  # imports torch

            outcome = run_discovery(
                experiment,
                targets=target or None,
                out=out,
                overrides=set_ or [],
                trust_model_file=trust_model_file,
                progress=not quiet,
                echo=typer.echo,
            )
        print_summary(outcome.result.summary)
        _print_controls(outcome.result.meta)
        _print_concepts(outcome)
        _recap(seen, outcome.result)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")] = Path(
        "tcavkit-demo"
    ),
    size: Annotated[int, typer.Option("--size", min=16, help="Image side in pixels.")] = 64,
    quick: Annotated[
        bool, typer.Option("--quick", metavar="", help="Smaller, faster run (CI).")
    ] = False,
    discover: Annotated[
        bool,
        typer.Option(
            "--discover",
            metavar="",
            help="Concept discovery instead: find fire's concepts in its own images "
            "(tcavkit discover; needs scikit-image).",
        ),
    ] = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Generate data with a known answer, train a CNN, run TCAV and check the answer."""
    if discover:
        _discover_demo(out, size, quiet, debug)
        return
    with _errors(debug):
        with _warnings_shown() as seen:
            from tcavkit.demo.run import run_demo  # imports torch: not at --help
            from tcavkit.demo.synthetic import CREATURE_COLOURS

            outcome = run_demo(out, size=size, quick=quick, progress=not quiet, echo=typer.echo)
        print_summary(outcome.run.result.summary)
        _print_controls(outcome.run.result.meta)
        typer.echo(f"experiment: {outcome.experiment_file}")
        typer.echo(f"report: {outcome.run.report}")
        typer.echo(f"time: {outcome.seconds:.1f} s")
        for target, ok in outcome.passed.items():
            colour = CREATURE_COLOURS[target]
            verdict = "recovered" if ok else "NOT recovered"
            typer.echo(f"  {target}: {colour} {verdict}")
        _recap(seen, outcome.run.result)
        if outcome.ok:
            typer.echo("PASS: TCAV recovered the planted ground truth (each class's body colour)")
        else:
            typer.echo("FAIL: TCAV did not recover the planted ground truth")
            raise typer.Exit(1)


def _discover_demo(out: Path, size: int, quiet: bool, debug: bool) -> None:
    with _errors(debug):
        with _warnings_shown() as seen:
            from tcavkit.demo.run import run_discover_demo  # imports torch: not at --help

            outcome = run_discover_demo(out, size=size, progress=not quiet, echo=typer.echo)
        discovery = outcome.discovery
        print_summary(discovery.result.summary)
        _print_concepts(discovery)
        typer.echo(f"experiment: {outcome.experiment_file}")
        typer.echo(f"time: {outcome.seconds:.1f} s (discovery and tests {discovery.seconds:.1f} s)")
        _recap(seen, discovery.result)


def entry() -> None:  # pragma: no cover - for python -m
    from tcavkit.entry import main

    main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
