"""The result of an experiment: the runs and summary tables, plus the provenance that
reproduces them (config, seed, package versions, model and data fingerprints)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import secrets
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tcavkit.atomic import atomic_write
from tcavkit.errors import DataError, TcavWarning, one_line
from tcavkit.tables import NAME_COLUMNS
from tcavkit.version import __version__, installed_versions

if TYPE_CHECKING:  # importing tcavkit.cav loads torch, which `tcavkit report` does not need
    from tcavkit.cav.vector import CAV

RUNS_FILE = "runs.csv"
SUMMARY_FILE = "summary.csv"
PROJECTIONS_FILE = "projections.csv"
"""Written when the run tested against the measured null (``concept-resample``)."""
RESULTS_FILE = "results.json"
MANIFEST_FILE = "manifest.json"
"""Written last by :meth:`TcavResult.save`: the run id and the sha256 of every file it wrote."""
LOCK_FILE = ".tcavkit-lock"
"""The lock file of a results folder being written (:func:`output_lock`)."""

_MANIFEST_FORMAT = 1
_RERUN = "rerun `tcavkit run` to write the folder again"


@dataclass
class Counts:
    """What a run computed, and what it read from the cache (for tests and the benchmark)."""

    forward_batches: int = 0
    backward_batches: int = 0
    sets_computed: int = 0
    sets_from_cache: int = 0
    cavs_trained: int = 0
    cavs_from_cache: int = 0
    score_layers_from_cache: int = 0  # layers whose CAVs' scores were read, not computed


_ROWS = json.JSONEncoder(separators=(",\n   ", ": "))
"""Encodes a list of flat records with the items of each one laid out as
``json.dumps(..., indent=1)`` lays them out at depth 2 (the C encoder; see
:func:`dumps_indented`)."""

_SCALARS = (str, int, float, type(None))


def dumps_indented(document: dict[str, Any], tables: tuple[str, ...] = ("summary", "runs")) -> str:
    """``json.dumps(document, indent=1)``, character for character, in a fraction of the
    time: Python's encoder with ``indent`` is written in Python, and the results' tables
    (thousands of flat records) took it a large part of a warm run. The ``tables`` that
    close the document, lists of non-empty records of scalars, are encoded by the C
    encoder with separators that give the same layout; any other document is left to
    ``json.dumps``."""
    names = [name for name in document if name in tables]
    rows = [document[name] for name in names]
    if (
        not names
        or list(document)[-len(names) :] != names
        or not all(isinstance(table, list) for table in rows)
        or not all(
            isinstance(record, dict)
            and record
            and all(isinstance(k, str) and isinstance(v, _SCALARS) for k, v in record.items())
            for table in rows
            for record in table
        )
    ):
        return json.dumps(document, indent=1)
    head = {key: value for key, value in document.items() if key not in names}
    parts = [json.dumps(head, indent=1)[:-2] if head else "{"]
    for i, (name, table) in enumerate(zip(names, rows, strict=True)):
        parts.append(",\n " if head or i else "\n ")
        parts.append(f"{json.dumps(name)}: ")
        if not table:
            parts.append("[]")
            continue
        # '[{a},\n   {b}]': a string holds no raw newline and a record no container, so
        # '},\n   {' is found only between two records.
        inner = _ROWS.encode(table)[2:-2].replace("},\n   {", "\n  },\n  {\n   ")
        parts.append("[\n  {\n   " + inner + "\n  }\n ]")
    parts.append("\n}")
    return "".join(parts)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class TcavResult:
    """What :meth:`tcavkit.Experiment.run` returns.

    Attributes:
        runs: one row per scored CAV (see :data:`tcavkit.tables.RUN_COLUMNS`; null rows
            have ``is_null``).
        summary: one row per (target, concept, layer) (see :data:`tcavkit.tables.SUMMARY_COLUMNS`).
        meta: config, seed, versions, model and data fingerprints, timings, warnings.
        cavs: every trained :class:`~tcavkit.cav.CAV` by :class:`~tcavkit.cav.CavKey`
            ``(positive, negative, layer, run)`` (rebuilt from the cache on demand, or kept
            in memory without a cache; not written by :meth:`save`).
        projections: every concept and random example's projection on each target's mean
            gradient (:mod:`tcavkit.pipeline.projections`), what ``concept-resample``
            tested; ``None`` for other tests. Written as ``projections.csv``.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    cavs: Mapping[tuple[str, str, str, int], CAV] = field(default_factory=dict, repr=False)
    projections: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.meta.get("run_id"):
            self.meta = {**self.meta, "run_id": new_run_id()}

    @property
    def run_id(self) -> str:
        """The id of the run that made this result (``meta["run_id"]``), kept by save and load."""
        return str(self.meta["run_id"])

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    @property
    def counts(self) -> Counts:
        """What the run computed and what it read from the cache."""
        return Counts(**self.meta.get("counts", {}))

    @property
    def significant(self) -> pd.DataFrame:
        """The summary rows that are significant after correction."""
        return self.summary[self.summary["significant"]]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``runs.csv``, ``summary.csv``, ``results.json`` and, last, ``manifest.json``
        into ``out_dir``; other files in the folder are left alone.

        The manifest holds the run id and the sha256 of each of the three files, so a folder
        whose save was interrupted (files of two runs side by side) is refused by
        :meth:`load` and by the report. A folder without a manifest gets one first as well:
        until the save is complete, it disagrees with the files.

        Raises:
            DataError: the folder cannot be written (a file in the way, no space left,
                not writable); the message names it and what to do.
        """
        out = Path(out_dir)
        document = {
            **self.meta,
            "summary": self.summary.to_dict(orient="records"),
            "runs": self.runs.to_dict(orient="records"),
        }
        contents = {
            RUNS_FILE: self.runs.to_csv(index=False).encode("utf-8"),
            SUMMARY_FILE: self.summary.to_csv(index=False).encode("utf-8"),
            RESULTS_FILE: dumps_indented(_jsonable(document)).encode("utf-8"),
        }
        if self.projections is not None:
            contents[PROJECTIONS_FILE] = self.projections.to_csv(index=False).encode("utf-8")
        manifest = {
            "manifest": _MANIFEST_FORMAT,
            "run_id": self.run_id,
            "tcavkit_version": __version__,
            "files": {
                name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                for name, data in contents.items()
            },
        }
        manifest_text = json.dumps(manifest, indent=1)
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / MANIFEST_FILE).exists():
                atomic_write(out / MANIFEST_FILE, manifest_text)
            for name, data in contents.items():
                atomic_write(out / name, data)
            atomic_write(out / MANIFEST_FILE, manifest_text)
        except OSError as e:
            raise output_error(out, e) from e
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> TcavResult:
        """Read a folder written by :meth:`save`.

        Raises:
            DataError: a file of the folder disagrees with its ``manifest.json`` (the folder
                mixes files of two runs).
        """
        out = Path(out_dir)
        check_manifest(out)
        meta = json.loads((out / RESULTS_FILE).read_text())
        meta.pop("summary", None)
        meta.pop("runs", None)
        names = {column: str for column in NAME_COLUMNS}
        projections = None
        if (out / PROJECTIONS_FILE).exists():
            projections = pd.read_csv(
                out / PROJECTIONS_FILE,
                dtype={"target": str, "layer": str, "set": str},
                keep_default_na=False,
            )
        return cls(
            runs=pd.read_csv(out / RUNS_FILE, dtype=names, keep_default_na=False),
            summary=pd.read_csv(out / SUMMARY_FILE, dtype=names, keep_default_na=False),
            meta=meta,
            projections=projections,
        )


def new_run_id() -> str:
    """A new run id: the local time and 8 random hex digits, e.g. ``20240501T120000-1a2b3c4d``."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def check_manifest(folder: Path) -> dict[str, Any] | None:
    """Check the files of a results folder against its ``manifest.json``.

    Returns:
        The manifest, or ``None`` when the folder has none (written by a tcavkit before
        manifests, or by hand): its files cannot be checked.

    Raises:
        DataError: a listed file is missing or its sha256 differs (it belongs to another
            run, e.g. after an interrupted save), or the manifest cannot be read.
    """
    path = folder / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path} cannot be read ({one_line(e)}): {_RERUN}.") from e
    if isinstance(manifest, dict) and manifest.get("unfinished"):
        raise DataError(
            f"results folder {folder} was being rewritten when its run stopped (an "
            f"interrupted run?), so its files may belong to different runs: {_RERUN}."
        )
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        _plain_name(name) and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    ):
        raise DataError(f"{path} is not a tcavkit manifest (no file digests): {_RERUN}.")
    foreign: list[Path] = []
    missing: list[Path] = []
    for name, entry in files.items():
        file = folder / name
        try:
            digest = _sha256(file)
        except FileNotFoundError:
            missing.append(file)
            continue
        except OSError as e:
            raise DataError(f"{file} cannot be read ({one_line(e)}): {_RERUN}.") from e
        if digest != entry["sha256"].lower():
            foreign.append(file)
    if foreign or missing:
        run = manifest.get("run_id") or "unknown"
        problems = []
        if foreign:
            verb = "does" if len(foreign) == 1 else "do"
            problems.append(
                f"{_names(foreign)} {verb} not belong to run {run} (the content differs from "
                f"{MANIFEST_FILE})"
            )
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            problems.append(f"{_names(missing)} {verb} listed in {MANIFEST_FILE} but missing")
        raise DataError(
            f"results folder {folder} mixes files of different runs (an interrupted save?): "
            f"{'; '.join(problems)}; {_RERUN}."
        )
    return manifest


def mark_unfinished(folder: Path) -> None:
    """Mark the results ``folder`` as being rewritten (a manifest that lists no file and
    says so), before anything of the previous run in it is replaced: until
    :meth:`TcavResult.save` writes the new manifest, :func:`check_manifest` refuses it.

    Raises:
        DataError: the folder cannot be written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(
            folder / MANIFEST_FILE,
            json.dumps({"manifest": _MANIFEST_FORMAT, "unfinished": True, "files": {}}),
        )
    except OSError as e:
        raise output_error(folder, e) from e


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold the results ``folder`` (created if needed) for one run: a second run into it
    meanwhile fails at once, in one line naming it.

    The lock is an operating-system lock on :data:`LOCK_FILE` in the folder, so it ends
    with the process, however it ends: a crashed run's lock file does not block the next
    one. The file is removed on release (and the folder, if this call created it and
    nothing else was written into it).

    Raises:
        DataError: another process holds the folder, or it cannot be written.
    """
    folder = Path(folder)
    created = not folder.exists()
    handle: int | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = _acquire(folder / LOCK_FILE)
    except _NoLocks as e:
        warnings.warn(
            f"results folder {folder} cannot be locked ({one_line(e.__cause__ or e)}): a "
            "second run into it at the same time would not be noticed",
            TcavWarning,
            stacklevel=3,
        )
    except OSError as e:
        raise output_error(folder, e) from e
    else:
        if handle is None:
            holder = _lock_holder(folder / LOCK_FILE)
            raise DataError(
                f"results folder {folder} is in use by another tcavkit run{holder}: wait for "
                "it to end or choose another --out folder."
            )
    try:
        yield
    finally:
        if handle is not None:
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()  # still held: no other process can take it
            os.close(handle)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if nothing was written into it


def _acquire(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock (the process id written
    in it), or ``None`` when another process holds it."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_lock(handle):
                os.close(handle)
                return None
            try:
                same = os.path.samestat(os.fstat(handle), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder removed after we opened it
                os.ftruncate(handle, 0)
                os.write(handle, f"{os.getpid()}\n".encode())
                return handle
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)


class _NoLocks(OSError):
    """The file system of a results folder has no file locks."""


_UNSUPPORTED = {
    errno.ENOLCK,
    errno.ENOSYS,
    errno.EINVAL,
    getattr(errno, "EOPNOTSUPP", errno.ENOSYS),
    getattr(errno, "ENOTSUP", errno.ENOSYS),
}


def _try_lock(handle: int) -> bool:
    """Take the exclusive lock of an open file without waiting; ``False`` if it is held.

    Raises:
        _NoLocks: the file system does not lock files.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            raise _NoLocks(e.errno, e.strerror) from e
        raise
    return True


def _lock_holder(path: Path) -> str:
    """`` (process N)`` as the lock file names it, or nothing."""
    with contextlib.suppress(OSError, ValueError):
        return f" (process {int(path.read_text().strip())})"
    return ""


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _names(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_folder(folder: str | Path) -> None:
    """Fail early, before a run, when ``folder`` cannot become a results folder because it,
    or a folder above it, is a file.

    Raises:
        DataError: names the file in the way.
    """
    folder = Path(folder)
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise DataError(
            f"cannot write results to {folder}: {blocker} is a file, not a folder; "
            "choose another --out folder."
        )


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path``'s ancestors (or ``path`` itself) that exists and is no folder."""
    for candidate in [*reversed(path.parents), path]:
        try:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        except OSError:
            return None
    return None


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def output_error(folder: Path, exc: OSError, *, report: bool = False) -> DataError:
    """A one-line :class:`DataError` for an operating-system error while writing into the
    results ``folder``: it names the folder, the cause and what to do (results: choose
    another ``--out`` folder; the report: fix the cause and run ``tcavkit report`` again).
    """
    what = "the report" if report else "results"
    blocker = None
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = _file_in_the_way(Path(exc.filename) if exc.filename else folder)
    if blocker is not None:
        reason, action = f"{blocker} is a file, not a folder", "move it away" if report else ""
    elif exc.errno in _NO_SPACE:
        reason, action = "no space left on the device", "free disk space"
    elif exc.errno in _NOT_WRITABLE:
        reason, action = f"it is not writable ({one_line(exc)})", "make it writable"
    else:
        reason, action = one_line(exc), ""
    if report:
        again = f"run `tcavkit report {folder}` again"
        fix = f"{action} and {again}" if action else again
    else:
        fix = (
            f"{action} or choose another --out folder" if action else "choose another --out folder"
        )
    return DataError(f"cannot write {what} to {folder}: {reason}; {fix}.")


def provenance(
    *,
    config: dict[str, Any],
    seed: int,
    model: dict[str, Any],
    sets: dict[str, dict[str, Any]],
    stats: Any,
    warnings: list[str],
    timings: dict[str, float],
    counts: Counts,
    controls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta`` of a :class:`TcavResult`: everything needed to reproduce it."""
    return {
        "tcavkit_version": __version__,
        "run_id": new_run_id(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        "config": config,
        "versions": package_versions(),
        "model": model,
        "sets": sets,
        "stats": asdict(stats),
        "warnings": warnings,
        "timings": timings,
        "counts": asdict(counts),
        "controls": controls,
    }


def package_versions() -> dict[str, str]:
    """Versions of the packages behind a result (read from their metadata: importing
    scikit-learn and matplotlib here alone took 0.4 s of a run, and a run read whole from
    the cache does not import torch)."""
    packages = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib")
    return {
        "tcavkit": __version__,
        "python": platform.python_version(),
        **installed_versions(packages),
    }
