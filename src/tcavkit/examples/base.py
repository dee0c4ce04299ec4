"""The contract every example source keeps.

A *source* says where examples come from (a folder, a tensor, any sequence). Resolving it
with the experiment's selection settings gives an :class:`ExampleSet`: a deterministic
choice of examples with a content fingerprint that is known *before* anything is decoded,
so a warm cache never touches the pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tcavkit.examples.digests import FileDigests
from tcavkit.options import Preprocessing, check_example_limits

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch


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
    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        """Decode and preprocess the chosen examples.

        Returns:
            float32 tensor ``(n, C, H, W)`` (or ``(n, H, W, C)`` with ``channels_last``; or
            the stored shape ``(n, *input_shape)`` for in-memory tensors), with
            ``min_examples <= n <= max_examples``.

        Raises:
            TooFewExamplesError: fewer than ``min_examples`` examples could be decoded.
        """

    @property
    def skipped(self) -> list[str]:
        """Files skipped as unreadable during the last :meth:`load` (empty otherwise)."""
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
