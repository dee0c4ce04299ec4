"""Which source holds a set of the experiment file: ``<data>/<name>`` as a folder of images,
a CSV table of features, or texts.

- a text model (one with a tokenizer): ``<name>.txt``, ``<name>.jsonl``, ``<name>.csv`` (a
  ``text`` column) or a folder ``<name>/`` of ``.txt`` files, looked for in that order;
- otherwise ``<name>.csv`` when it exists or ``model.columns`` is set: a feature table;
- otherwise the image folder ``<name>/``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
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
