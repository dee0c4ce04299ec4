"""Text example sets: sentences read from files, tokenized and padded one batch at a time.

A set is ``<name>.txt`` (one example per non-blank line; lines end at ``\\n``, ``\\r\\n``
or ``\\r`` only), a folder of ``*.txt`` files (one example per file), or a ``.csv`` /
``.jsonl`` file with a ``text`` column (key). Examples are chosen with the same seeded rule
as every other source, and the fingerprint hashes the chosen texts and the tokenizer (its
vocabulary, settings and ``max_length``), so a change to either misses the cache. A text
longer than the tokenizer can use is cut to :data:`CHARS_PER_TOKEN` characters per token of
``max_length`` when it is read, so memory does not grow with the length of a line.

Loading gives :class:`TextBatches`: each batch is tokenized in one call of the (Rust)
tokenizer, padded to its own longest example, with its attention mask.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tcavkit.errors import DataError, one_line
from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
from tcavkit.examples.digests import FileDigests
from tcavkit.examples.sources import chosen_indices, record_digest, selection_record
from tcavkit.options import Preprocessing

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch

TEXT_COLUMN = "text"
"""The column of a ``.csv`` file, or key of a ``.jsonl`` line, that holds the example."""
TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")
CHARS_PER_TOKEN = 64
"""The most characters one token is taken to span on average: a text is cut to
``max_length * CHARS_PER_TOKEN`` characters before it is tokenized (on the side the
tokenizer truncates), so that a huge line costs no more than that. Real text runs about 4
characters a token; only a text whose first ``max_length`` tokens average more than 64
characters each is cut before its last kept token."""


class TokenizerEncoder:
    """Texts → model inputs with a HuggingFace tokenizer: ``input_ids``, ``attention_mask``
    (and ``token_type_ids`` where the tokenizer makes them), padded to the longest text of
    the call and truncated to ``max_length`` tokens.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast or slow).
        max_length: the most tokens per example, special tokens included.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @property
    def max_chars(self) -> int:
        """The most characters of an example that are tokenized (see
        :data:`CHARS_PER_TOKEN`)."""
        return self.max_length * CHARS_PER_TOKEN

    def clip(self, text: str) -> str:
        """``text`` cut to :attr:`max_chars` characters, keeping the side the tokenizer
        keeps when it truncates (the start, or the end for ``truncation_side="left"``)."""
        if len(text) <= self.max_chars:
            return text
        if getattr(self.tokenizer, "truncation_side", "right") == "left":
            return text[-self.max_chars :]
        return text[: self.max_chars]

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs ``{name: (n, T)}`` for ``n`` texts, ``T`` the longest (≤ max_length)."""
        import torch

        encoded = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}

    def fingerprint(self) -> str:
        """sha256 of the tokenizer's class, vocabulary and rules, and ``max_length``."""
        tokenizer = self.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # without the padding and truncation a call leaves set
            state = json.loads(backend.to_str())
            state.pop("padding", None)
            state.pop("truncation", None)
            rules = json.dumps(state, sort_keys=True)
        else:
            rules = json.dumps(sorted(tokenizer.get_vocab().items()))
        settings = {
            "class": type(tokenizer).__name__,
            "max_length": self.max_length,
            "padding_side": getattr(tokenizer, "padding_side", None),
            "truncation_side": getattr(tokenizer, "truncation_side", None),
            "inputs": list(getattr(tokenizer, "model_input_names", [])),
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        digest.update(rules.encode())
        return digest.hexdigest()


def read_texts(path: Path, name: str) -> list[str]:
    """The examples of one text set, in file order (blank ones left out).

    Raises:
        DataError: the file or folder is missing, unreadable, has no ``text`` column or
            holds no text; the message names the file.
    """
    fix = f"create it or remove '{name}' from the experiment"
    if not path.exists():
        raise DataError(f"example set '{name}': {path} does not exist; {fix}")
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
            texts = [p.read_text(encoding="utf-8-sig").strip() for p in files]
        elif path.suffix == ".txt":
            texts = [line.strip() for line in _lines(path)]
        elif path.suffix == ".jsonl":
            texts = _jsonl_texts(path, name)
        elif path.suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if TEXT_COLUMN not in table.columns:
                raise DataError(
                    f"example set '{name}': {path} has no column {TEXT_COLUMN!r} (its columns: "
                    f"{', '.join(map(repr, list(table.columns)[:12]))}); name the column of "
                    f"the examples {TEXT_COLUMN!r}"
                )
            texts = [str(text).strip() for text in table[TEXT_COLUMN]]
        else:
            raise DataError(
                f"example set '{name}': {path} is not a .txt, .csv or .jsonl file or a folder"
            )
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"example set '{name}': cannot read {path} ({one_line(error)})") from error
    texts = [text for text in texts if text]
    if not texts:
        raise DataError(
            f"example set '{name}': {path} holds no text; add examples or remove '{name}' "
            "from the experiment"
        )
    return texts


def _lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, split at line breaks only (``\\n``, ``\\r\\n``,
    ``\\r``): a form feed, NEL (U+0085) or line separator (U+2028) inside a line stays in it,
    where ``str.splitlines`` would split there."""
    with path.open(encoding="utf-8-sig", newline=None) as handle:  # every break becomes \n
        return handle.read().split("\n")


def _jsonl_texts(path: Path, name: str) -> list[str]:
    texts = []
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"example set '{name}': {path} line {number} is not JSON ({one_line(error)})"
            ) from error
        if not isinstance(record, dict) or not isinstance(record.get(TEXT_COLUMN), str):
            raise DataError(
                f"example set '{name}': {path} line {number} has no string {TEXT_COLUMN!r} "
                f'key; write one object per line, e.g. {{"{TEXT_COLUMN}": "..."}}'
            )
        texts.append(record[TEXT_COLUMN].strip())
    return texts


class TextSource(ExampleSource):
    """Texts from a ``.txt``/``.csv``/``.jsonl`` file or a folder of ``.txt`` files.

    Args:
        path: the file or folder.
        encoder: turns a batch of texts into model inputs (see :class:`TokenizerEncoder`).
    """

    def __init__(self, path: str | os.PathLike[str], encoder: TokenizerEncoder) -> None:
        self.path = Path(path)
        self.encoder = encoder

    def __repr__(self) -> str:
        return f"TextSource({str(self.path)!r})"

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> TextSet:
        """Read the texts, choose a seeded subset (kept in file order) and hash them.

        Raises:
            DataError: see :func:`read_texts`.
            TooFewExamplesError: fewer texts than ``selection.min_examples``.
        """
        texts = [self.encoder.clip(text) for text in read_texts(self.path, name)]
        indices = chosen_indices(name, len(texts), selection, str(self.path))
        chosen = [texts[i] for i in indices]
        record = selection_record(name, selection)
        record.update(
            source="text",
            texts=hashlib.sha256(json.dumps(chosen).encode()).hexdigest(),
            tokenizer=self.encoder.fingerprint(),
        )
        return TextSet(
            name=name,
            fingerprint=record_digest(record),
            description=f"{self.path} ({len(texts)} texts)",
            texts=chosen,
            encoder=self.encoder,
        )


@dataclass(frozen=True)
class TextBatches:
    """Texts tokenized one batch at a time: ``batches[a:b]`` is the model input of texts
    ``a`` to ``b``, padded to the longest of them (see :class:`~tcavkit.examples.base.Batches`)."""

    texts: list[str]
    encoder: TokenizerEncoder

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, rows: slice) -> dict[str, torch.Tensor]:
        return self.encoder(self.texts[rows])


@dataclass(eq=False)
class TextSet(ExampleSet):
    """The chosen texts of a :class:`TextSource`."""

    name: str
    fingerprint: str
    description: str
    texts: list[str] = field(repr=False)
    encoder: TokenizerEncoder = field(repr=False)

    def load(self, preprocessing: Preprocessing) -> TextBatches:
        """The texts, tokenized per batch when a batch is taken; ``preprocessing`` (for
        images) is ignored."""
        return TextBatches(self.texts, self.encoder)

    def preview(self, k: int = 3) -> list[str]:
        return self.texts[:k]
