"""The contract every example source keeps.

A *source* says where examples come from (a folder, a tensor, any sequence). Resolving it
with the experiment's selection settings gives an :class:`ExampleSet`: a deterministic
choice of examples with a content fingerprint that is known *before* anything is decoded,
so a warm cache never touches the pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

from tcavkit.examples.digests import FileDigests
from tcavkit.options import Preprocessing, check_example_limits

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch


class Batches(Protocol):
    """Examples made into model inputs one batch at a time (e.g. texts tokenized and padded
    per batch): ``len`` is the number of examples, a slice is one batch's model input."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice) -> Any: ...


Inputs = Union["torch.Tensor", Mapping[str, "torch.Tensor"], Batches]
"""What :meth:`ExampleSet.load` returns: a tensor ``(n, ...)``, tensors ``(n, ...)`` by the
model's keyword argument names, or :class:`Batches`."""


def count_rows(data: Inputs) -> int:
    """The number of examples ``n`` in ``data``."""
    if isinstance(data, Mapping):
        return len(next(iter(data.values()))) if data else 0
    return len(data)


def batch_of(data: Inputs, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of ``data`` as one model input (a tensor or a mapping)."""
    if isinstance(data, Mapping):
        return {key: value[start:stop] for key, value in data.items()}
    return data[start:stop]


@dataclass(frozen=True)
class Selection:
    """How many examples a set may use, and the seed that picks them.

    Attributes:
        max_examples: use at most this many examples (``None``: all).
        min_examples: fewer usable examples than this is a :class:`TooFewExamplesError`.
        seed: the experiment seed; the choice is a pure function of (seed, set name, content).
    """

    max_examples: int | None = None
    min_examples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        check_example_limits(self.max_examples, self.min_examples)


class ExampleSet(ABC):
    """A resolved, deterministic set of examples.

    Attributes:
        name: the set's name in the experiment (concept, target or random set name).
        fingerprint: hex digest of exactly what decides the examples (file paths and
            contents or tensor bytes, plus the selection); preprocessing is *not* in it.
        description: where the examples come from, for reports (e.g. the folder path).
    """

    name: str
    fingerprint: str
    description: str

    @abstractmethod
    def load(self, preprocessing: Preprocessing) -> Inputs:
        """Decode and preprocess the chosen examples.

        Returns:
            float32 tensor ``(n, C, H, W)`` (or ``(n, H, W, C)`` with ``channels_last``; or
            the stored shape ``(n, *input_shape)`` for in-memory tensors and tables; or
            :class:`Batches` of tokenized texts), with
            ``min_examples <= n <= max_examples``.

        Raises:
            TooFewExamplesError: fewer than ``min_examples`` examples could be decoded.
        """

    def first_input(self, preprocessing: Preprocessing) -> Any:
        """The model input of one example (a batch of one), the first that loads: what the
        model is tried on before a run's passes. By default the first row of :meth:`load`;
        a source that decodes files decodes one."""
        return batch_of(self.load(preprocessing), 0, 1)

    @property
    def skipped(self) -> list[str]:
        """Files skipped as unreadable during the last :meth:`load` (empty otherwise)."""
        return []

    def preview(self, k: int = 3) -> list[str]:
        """Up to ``k`` of the chosen examples as text, for the report (texts only; empty
        for images and tensors)."""
        return []


class ExampleSource(ABC):
    """Where examples come from; :meth:`resolve` fixes the choice."""

    @abstractmethod
    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> ExampleSet:
        """Choose the examples deterministically and fingerprint them.

        ``digests`` remembers file digests between runs; a source that hashes files may
        use it (see :mod:`tcavkit.examples.digests`), others ignore it.

        Raises:
            DataError: the source does not exist or holds no usable examples.
            TooFewExamplesError: fewer than ``selection.min_examples`` candidates.
        """
