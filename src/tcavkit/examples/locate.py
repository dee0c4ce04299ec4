"""Which source holds a set of the experiment file: ``<data>/<name>`` as a folder of images,
a CSV table of features, or texts.

- a text model (one with a tokenizer): ``<name>.txt``, ``<name>.jsonl``, ``<name>.csv`` (a
  ``text`` column) or a folder ``<name>/`` of ``.txt`` files, looked for in that order;
- otherwise ``<name>.csv`` when it exists or ``model.columns`` is set: a feature table;
- otherwise the image folder ``<name>/``.
"""

from __future__ import annotations

import fnmatch
import os
import unicodedata
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from tcavkit.errors import DataError
from tcavkit.examples.base import ExampleSource
from tcavkit.examples.sources import ImageFolder
from tcavkit.examples.tables import CsvTable
from tcavkit.examples.text import TEXT_SUFFIXES, TextSource, TokenizerEncoder


def source_for(
    data: Path,
    name: str,
    *,
    encoder: TokenizerEncoder | None = None,
    columns: Sequence[str] | None = None,
) -> ExampleSource:
    """The source of set ``name`` in the data folder ``data``.

    Args:
        encoder: the text model's tokenizer (``None``: not a text model).
        columns: the tabular model's feature columns (``None``: every column of the CSV).

    Raises:
        DataError: a text model and none of the text files exist.
    """
    if encoder is not None:
        for path in [data / f"{name}{suffix}" for suffix in TEXT_SUFFIXES] + [data / name]:
            if path.exists():
                return TextSource(path, encoder)
        raise DataError(
            f"example set '{name}': {data} holds no {name}.txt, {name}.jsonl or {name}.csv "
            f"and no folder {name}/ of .txt files; create one (one example per line of "
            f"{name}.txt) or remove '{name}' from the experiment"
        )
    table = data / f"{name}.csv"
    if columns is not None or table.is_file():
        return CsvTable(table, columns)
    return ImageFolder(data / name)


def check_sets_exist(
    data: Path, sets: dict[str, Sequence[str]], *, text: bool, columns: bool
) -> None:
    """Refuse, before any per-set object is made, the sets that :func:`source_for` would not
    find in ``data``: one listing of the folder, so that thousands of names cost milliseconds
    (a name listed only in another case or Unicode form is looked up on its own).

    Args:
        sets: the experiment file's key (``targets``, ``concepts``, ``random.sets``) → names.
        text: a text model (``.txt``/``.jsonl``/``.csv`` or a folder of ``.txt`` files).
        columns: ``model.columns`` is set (a ``.csv`` feature table).

    Raises:
        DataError: naming the key, the first few missing names, how many, and the fix.
    """
    folders: set[str] = set()
    files: set[str] = set()
    try:
        with os.scandir(data) as entries:
            for entry in entries:
                with suppress(OSError):
                    (folders if entry.is_dir() else files).add(entry.name)
    except OSError:
        return  # source_for says what is wrong with the folder itself
    if text:
        suffixes, need_folder = TEXT_SUFFIXES, True
    elif columns:
        suffixes, need_folder = (".csv",), False
    else:
        suffixes, need_folder = (".csv",), True
    wanted = [(s, files) for s in suffixes] + ([("", folders)] if need_folder else [])
    # A name listed in another case or Unicode form is looked up on its own: it may be the
    # same entry on a case-insensitive file system (macOS, Windows).
    loose = {_loose(name) for name in folders | files}

    def found(name: str) -> bool:
        if any(name + suffix in listed for suffix, listed in wanted):
            return True
        return any(_loose(name + suffix) in loose for suffix, _ in wanted) and any(
            os.path.exists(os.path.join(data, name + suffix)) for suffix, _ in wanted
        )

    looked_for = ", ".join((["<name>/"] if need_folder else []) + [f"<name>{s}" for s in suffixes])
    for key, names in sets.items():
        missing = [name for name in names if not found(name)]
        if missing:
            shown = ", ".join(repr(name) for name in missing[:5])
            if len(missing) > 5:
                shown += f" … ({len(missing)} of the {len(names)} named)"
            raise DataError(
                f"{key}: no folder or file for {shown} in the data folder {data} (looked for "
                f"{looked_for}): create them, or remove them from {key}"
            )


def _loose(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def set_names_in(data: Path, pattern: str) -> list[str]:
    """The names of the sets in ``data`` that match a glob: folders by their name, and
    ``.csv``/``.txt``/``.jsonl`` files by their name without the suffix (sorted, unique)."""
    names = set()
    for path in data.iterdir():
        if path.name.startswith("."):
            continue
        if path.is_dir():
            stem = path.name
        elif path.suffix in TEXT_SUFFIXES and path.is_file():
            stem = path.stem
        else:
            continue
        if fnmatch.fnmatchcase(stem, pattern):
            names.add(stem)
    return sorted(names)
