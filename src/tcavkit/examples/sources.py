"""Example sources: image folders, in-memory tensors and arbitrary sequences.

Every source picks its examples with the same stable rule: candidate ``i`` (a file name or a
row index) gets the key ``sha256(seed, set name, candidate)`` and candidates are taken in
key order. The choice is a pure function of (seed, name, candidates), identical across
machines, Python and NumPy versions, and adding one candidate leaves the relative order of
the others unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tcavkit.errors import ConfigError, DataError, TcavWarning, TooFewExamplesError, one_line
from tcavkit.examples.base import ExampleSet, ExampleSource, Selection
from tcavkit.examples.digests import FileDigests, file_sha256
from tcavkit.examples.images import (
    IMAGE_EXTENSIONS,
    DecodedImage,
    UnreadableImage,
    arrays_to_tensor,
    check_preprocessing,
    decode_image,  # noqa: F401 (kept in this namespace: tests replace it to catch decoding)
    is_image_file,
    preprocess,
    read_image,
)
from tcavkit.lazy import is_tensor
from tcavkit.options import Preprocessing

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch

# --------------------------------------------------------------------------- helpers


def stable_order(keys: Sequence[str], seed: int, name: str) -> list[int]:
    """Indices of ``keys`` in a seeded order that depends only on (seed, name, key).

    Args:
        keys: ``n`` distinct candidate identifiers (file names, row indices as strings).

    Returns:
        a permutation of ``range(n)``.
    """
    prefix = hashlib.sha256(json.dumps([int(seed), name]).encode()).digest()

    def rank(index: int) -> tuple[bytes, int]:
        return hashlib.sha256(prefix + keys[index].encode()).digest(), index

    return sorted(range(len(keys)), key=rank)


def selection_record(name: str, selection: Selection) -> dict[str, Any]:
    """The selection fields that enter a set's fingerprint: the record every source
    (here, :mod:`~tcavkit.examples.tables`, :mod:`~tcavkit.examples.text`) extends with its
    content before :func:`record_digest`."""
    return {
        "name": name,
        "seed": int(selection.seed),
        "max_examples": selection.max_examples,
        "min_examples": selection.min_examples,
    }


def record_digest(record: dict[str, Any]) -> str:
    """sha256 hex digest of a JSON-serialisable record (canonical key order)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def tensor_sha256(data: torch.Tensor | np.ndarray) -> str:
    """sha256 hex digest of a tensor/array's dtype, shape and bytes (``data``: any shape;
    a tensor and an array of the same values digest differently)."""
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data)
        header, payload = f"numpy|{array.dtype.str}|{array.shape}", array.reshape(-1).view(np.uint8)
    else:
        import torch

        tensor = data.detach().cpu().contiguous()
        header = f"torch|{tensor.dtype}|{tuple(tensor.shape)}"
        payload = tensor.reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.sha256(header.encode())
    digest.update(payload)
    return digest.hexdigest()


def _image_sha256(img: Image.Image) -> str:
    """sha256 hex digest of a PIL image's mode, size, palette, transparency and pixels."""
    header = f"pil|{img.mode}|{img.size}|{img.info.get('transparency')!r}"
    digest = hashlib.sha256(header.encode())
    if img.mode in ("P", "PA"):
        digest.update(bytes(img.getpalette() or []))
    digest.update(img.tobytes())
    return digest.hexdigest()


def _default_workers() -> int:
    """Threads for decoding and hashing files."""
    return min(32, (os.cpu_count() or 1) + 4)


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """float64 becomes float32; every other dtype is kept."""
    import torch

    return tensor.to(torch.float32) if tensor.dtype == torch.float64 else tensor


def check_finite(
    name: str, rows: torch.Tensor | np.ndarray, row_ids: Sequence[int], what: str
) -> None:
    """Refuse examples that hold NaN or an infinity, as the model would get them (float64
    rows are checked as float32, where a too large value becomes infinite).

    Args:
        rows: ``(n, ...)``; integer and boolean rows pass unchecked.
        row_ids: each row's index in its source, for the message.
        what: the source, e.g. ``"the tensor"``.

    Raises:
        DataError: naming the set, the row and the value.
    """
    if isinstance(rows, np.ndarray):
        if not np.issubdtype(rows.dtype, np.floating):
            return
        with np.errstate(over="ignore"):
            values = rows.astype(np.float32, copy=False) if rows.dtype == np.float64 else rows
        finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        bad = np.flatnonzero(~finite)
    else:
        if not rows.is_floating_point():
            return
        values = _float32(rows.detach())
        finite = values.isfinite().reshape(len(values), -1).all(dim=1).cpu().numpy()
        bad = np.flatnonzero(~finite)
    if len(bad):
        row = values[int(bad[0])].reshape(-1)
        value = next(float(v) for v in row.tolist() if not np.isfinite(v))
        raise DataError(
            f"example set '{name}': row {row_ids[int(bad[0])]} of {what} holds {value} "
            f"({len(bad)} row(s) hold NaN or an infinity); every input must be a finite number "
            "(as float32): fix or drop those rows"
        )


def chosen_indices(name: str, n: int, selection: Selection, what: str) -> list[int]:
    """The sorted row indices a seeded subset of ``n`` rows keeps (at most max_examples).

    Raises:
        TooFewExamplesError: ``n < selection.min_examples``.
    """
    if n < selection.min_examples:
        raise TooFewExamplesError(
            f"example set '{name}': {what} has {n} examples but at least "
            f"{selection.min_examples} are needed; pass more examples or lower examples.min"
        )
    if selection.max_examples is None or selection.max_examples >= n:
        return list(range(n))
    order = stable_order([str(i) for i in range(n)], selection.seed, name)
    return sorted(order[: selection.max_examples])


# ------------------------------------------------------------------------ image folders


def list_image_files(
    folder: Path, on_error: Callable[[str, OSError], None] | None = None
) -> list[str]:
    """Names of the image files directly in ``folder``, sorted (hidden files ignored).

    An entry whose type cannot be read (a symlink loop, a link into a folder without
    permission) is left out: ``on_error(name, error)`` is called for it, or, without
    ``on_error``, a :class:`~tcavkit.errors.TcavWarning` names it.
    """
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_image_file(entry.name):
                continue
            try:
                if entry.is_file():
                    names.append(entry.name)
            except OSError as error:
                if on_error is None:
                    warnings.warn(
                        f"skipped unreadable file {entry.path} ({one_line(error)})",
                        TcavWarning,
                        stacklevel=2,
                    )
                else:
                    on_error(entry.name, error)
    return sorted(names)


LARGE_IMAGE_RATIO = 16
"""An image decoded with more than this many times the pixels of the model input is
reported (one :class:`~tcavkit.errors.TcavWarning` per set and load)."""


def _read_image(path: Path, size: tuple[int, int] | None) -> DecodedImage | UnreadableImage:
    """Decode and resize one file (``(H, W, 3)`` uint8 with its sizes), or the error."""
    try:
        return read_image(path, size)
    except UnreadableImage as error:
        return error


class ImageFolder(ExampleSource):
    """The image files directly inside one folder (``<root>/<concept>/*.jpg`` layout).

    Files with the extensions in :data:`~tcavkit.examples.images.IMAGE_EXTENSIONS`
    (case-insensitive) are candidates; sub-folders, hidden files and other files are
    ignored. The fingerprint hashes the bytes of every candidate, so editing, adding or
    removing an image changes it; it never decodes pixels.

    Args:
        path: the folder.
        num_workers: threads used to hash and decode files (default: CPU count + 4, max 32).
    """

    def __init__(self, path: str | os.PathLike[str], num_workers: int | None = None) -> None:
        self.path = Path(path)
        self.num_workers = num_workers or _default_workers()

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.path)!r})"

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> ImageFolderSet:
        """Order the folder's images for (seed, name) and fingerprint their contents.

        Raises:
            DataError: the folder does not exist, is not a folder or has no image files.
            TooFewExamplesError: fewer image files than ``selection.min_examples``.
        """
        files = self._candidates(name)
        if len(files) < selection.min_examples:
            raise TooFewExamplesError(
                f"example set '{name}': folder {self.path} has {len(files)} image files but "
                f"at least {selection.min_examples} are needed; add images or lower examples.min"
            )
        paths = [self.path / f for f in files]
        # Remembered digests are looked up here; only the rest is read (in parallel).
        found = [digests.remembered(path) for path in paths] if digests else [None] * len(paths)
        missing = [i for i, digest in enumerate(found) if digest is None]
        if missing:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                hashing = digests.sha256 if digests else file_sha256
                for i, digest in zip(
                    missing, pool.map(hashing, [paths[i] for i in missing]), strict=True
                ):
                    found[i] = digest
        record = selection_record(name, selection)
        record.update(
            source="image_folder", files=[[f, d] for f, d in zip(files, found, strict=True)]
        )
        order = stable_order(files, selection.seed, name)
        return ImageFolderSet(
            name=name,
            fingerprint=record_digest(record),
            description=str(self.path),
            folder=self.path,
            files=tuple(files[i] for i in order),
            max_examples=selection.max_examples,
            min_examples=selection.min_examples,
            num_workers=self.num_workers,
            digests=tuple(str(found[i]) for i in order),
        )

    def _candidates(self, name: str) -> list[str]:
        """Sorted image file names, or a DataError saying what to fix."""
        fix = f"create it with images or remove '{name}' from the experiment"
        if not self.path.exists():
            raise DataError(f"example set '{name}': folder {self.path} does not exist; {fix}")
        if not self.path.is_dir():
            raise DataError(f"example set '{name}': {self.path} is not a folder; {fix}")

        def skip(file: str, error: OSError) -> None:
            warnings.warn(
                f"example set '{name}': skipped unreadable file {self.path / file} "
                f"({one_line(error)})",
                TcavWarning,
                stacklevel=5,
            )

        try:
            files = list_image_files(self.path, on_error=skip)
        except OSError as error:
            raise DataError(
                f"example set '{name}': cannot list folder {self.path}: {error}"
            ) from error
        if not files:
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(
                f"example set '{name}': folder {self.path} holds no image files ({extensions}); "
                f"add images or remove '{name}' from the experiment"
            )
        return files


@dataclass(eq=False)
class ImageFolderSet(ExampleSet):
    """The resolved images of an :class:`ImageFolder`.

    Each file is read once when it is decoded, and its bytes must have the digest it had
    when the set was resolved (the digest its fingerprint, and so every cache key, was made
    of): a file changed in between is a :class:`~tcavkit.errors.DataError`, so that nothing
    computed from other bytes is stored under the original ones' key.

    Attributes:
        folder: the folder.
        files: every candidate file name, in the seeded order; :meth:`load` uses the first
            ones that decode, up to ``max_examples``.
        digests: the SHA-256 of each of ``files`` when the set was resolved (same order;
            empty: not checked).
    """

    name: str
    fingerprint: str
    description: str
    folder: Path
    files: tuple[str, ...]
    max_examples: int | None
    min_examples: int
    num_workers: int = field(default_factory=_default_workers)
    digests: tuple[str, ...] = field(default=(), repr=False)
    _skipped: list[str] = field(default_factory=list, repr=False)

    @property
    def skipped(self) -> list[str]:
        """Paths of files skipped as unreadable during the last :meth:`load`."""
        return list(self._skipped)

    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        """Decode (in parallel, in the seeded order) and preprocess the chosen images.

        Unreadable files are skipped with a :class:`~tcavkit.errors.TcavWarning` and the
        next files in the order take their place.

        Returns:
            float32 ``(n, 3, H, W)`` (``(n, H, W, 3)`` with ``channels_last``).

        Raises:
            TooFewExamplesError: fewer than ``min_examples`` files could be decoded.
            DataError: ``preprocessing.size`` is ``None`` and the images differ in size, or
                a file changed since the set was resolved.
        """
        check_preprocessing(preprocessing)
        arrays, names = self._decode(preprocessing.size)
        if len(arrays) < self.min_examples:
            raise self._too_few(len(arrays))
        return arrays_to_tensor(arrays, preprocessing, [str(self.folder / n) for n in names])

    def first_input(self, preprocessing: Preprocessing) -> torch.Tensor:
        """The first image of the seeded order that decodes, preprocessed: ``(1, 3, H, W)``
        (``(1, H, W, 3)`` with ``channels_last``); unreadable files are left to :meth:`load`
        to report."""
        check_preprocessing(preprocessing)
        for file in self.files:
            result = _read_image(self.folder / file, preprocessing.size)
            if not isinstance(result, UnreadableImage):
                return arrays_to_tensor([result.array], preprocessing, [str(self.folder / file)])
        return self.load(preprocessing)  # raises: too few images decode

    def decode(
        self, size: tuple[int, int] | None, *, distinct: bool = False
    ) -> tuple[list[np.ndarray], list[str]]:
        """The chosen images as ``(H, W, 3)`` uint8 arrays resized to ``size``, with their
        file names, in the seeded order (unreadable files skipped with a warning). With
        ``distinct``, a file whose bytes are those of an earlier one is passed over (the
        next file takes its place), so that every image is a different content.

        Raises:
            TooFewExamplesError: fewer than ``min_examples`` files could be decoded.
            DataError: a file changed since the set was resolved.
        """
        arrays, names = self._decode(size, distinct)
        if len(arrays) < self.min_examples:
            raise self._too_few(len(arrays))
        return arrays, names

    def _decode(
        self, size: tuple[int, int] | None, distinct: bool = False
    ) -> tuple[list[np.ndarray], list[str]]:
        """Decode files in order until ``max_examples`` succeed (with ``distinct``, of
        different contents); record the skipped ones.

        Warns once when images are far larger than ``size`` (see
        :data:`LARGE_IMAGE_RATIO`), naming the largest.
        """
        wanted = len(self.files) if self.max_examples is None else self.max_examples
        arrays: list[np.ndarray] = []
        names: list[str] = []
        large: list[tuple[int, str, tuple[int, int]]] = []  # (decoded pixels, file, size)
        limit = None if size is None else LARGE_IMAGE_RATIO * size[0] * size[1]
        self._skipped = []
        seen: set[str] = set()  # contents decoded, with ``distinct``
        position = 0
        read = partial(_read_image, size=size)
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            while len(arrays) < wanted and position < len(self.files):
                start = position
                batch = self.files[start : start + wanted - len(arrays)]
                position += len(batch)
                results = pool.map(read, [self.folder / f for f in batch])
                for index, file, result in zip(range(start, position), batch, results, strict=True):
                    self._check_unchanged(index, result)
                    if isinstance(result, UnreadableImage):
                        self._skip(file, result)
                        continue
                    if distinct:
                        if result.sha256 in seen:
                            continue
                        seen.add(result.sha256)
                    arrays.append(result.array)
                    names.append(file)
                    pixels = result.decoded_size[0] * result.decoded_size[1]
                    if limit is not None and pixels > limit:
                        large.append((pixels, file, result.stored_size))
        if large and size is not None:
            self._warn_large(large, size)
        return arrays, names

    def _check_unchanged(self, index: int, result: DecodedImage | UnreadableImage) -> None:
        """Raise a DataError when the bytes read for ``files[index]`` are not those it was
        fingerprinted with (a file edited, replaced or removed since :meth:`resolve`)."""
        if not self.digests or result.sha256 == self.digests[index]:
            return
        path = self.folder / self.files[index]
        raise DataError(
            f"example set '{self.name}': file {path} changed during the run (its content "
            "differs from when the run started); nothing computed from it was cached: run "
            "again once the files are no longer being changed"
        )

    def _warn_large(
        self, large: list[tuple[int, str, tuple[int, int]]], size: tuple[int, int]
    ) -> None:
        """One warning for the images far larger than the model input, naming the largest."""
        _, file, (width, height) = max(large)
        others = f"; so do {len(large) - 1} more of its images" if len(large) > 1 else ""
        warnings.warn(
            f"example set '{self.name}': {self.folder / file} ({width}x{height} pixels) has "
            f"more than {LARGE_IMAGE_RATIO} times the pixels of the model input "
            f"({size[1]}x{size[0]}){others}; decoding such files costs time and memory: "
            f"resize them once beforehand",
            TcavWarning,
            stacklevel=4,
        )

    def _skip(self, file: str, error: UnreadableImage) -> None:
        """Warn about and record one unreadable file."""
        path = str(self.folder / file)
        self._skipped.append(path)
        warnings.warn(
            f"example set '{self.name}': skipped unreadable file {path} ({error.reason})",
            TcavWarning,
            stacklevel=4,
        )

    def _too_few(self, decoded: int) -> TooFewExamplesError:
        """The error for a folder with too few decodable images."""
        return TooFewExamplesError(
            f"example set '{self.name}': only {decoded} images in folder {self.folder} could "
            f"be decoded ({len(self._skipped)} unreadable) but at least {self.min_examples} "
            f"are needed; replace the unreadable files, add images or lower examples.min"
        )


# ------------------------------------------------------------------------------ tensors


class TensorSource(ExampleSource):
    """Rows of an in-memory tensor or array, taken as ready model inputs.

    No preprocessing is applied: ``load`` ignores its ``preprocessing`` argument and
    returns the chosen rows as stored (float64 becomes float32; other dtypes are kept, so
    integer token ids stay integers).

    Args:
        data: ``(n, *input_shape)`` tensor or numpy array.
    """

    def __init__(self, data: torch.Tensor | np.ndarray) -> None:
        import torch

        if not isinstance(data, (torch.Tensor, np.ndarray)):
            raise ConfigError(
                f"TensorSource needs a torch.Tensor or numpy.ndarray, got {type(data).__name__}"
            )
        if data.ndim < 1:
            raise ConfigError("TensorSource needs data of shape (n, ...), got a scalar")
        if isinstance(data, np.ndarray) and data.dtype == object:
            raise ConfigError(
                "TensorSource cannot use a numpy array of dtype object; "
                "convert it to a numeric array or use SequenceSource with collate="
            )
        self.data = data

    def __repr__(self) -> str:
        return f"TensorSource(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> TensorSet:
        """Choose a seeded subset of rows (kept in their original order) and hash them.

        Raises:
            TooFewExamplesError: fewer rows than ``selection.min_examples``.
        """
        indices = chosen_indices(name, int(self.data.shape[0]), selection, "the tensor")
        rows = _take(self.data, indices)
        check_finite(name, rows, indices, "the tensor")
        record = selection_record(name, selection)
        record.update(source="tensor", rows=tensor_sha256(rows))
        return TensorSet(
            name=name,
            fingerprint=record_digest(record),
            description=f"tensor {tuple(self.data.shape)} {self.data.dtype}",
            data=self.data,
            indices=tuple(indices),
        )


def _take(data: torch.Tensor | np.ndarray, indices: Sequence[int]) -> torch.Tensor | np.ndarray:
    """Rows ``indices`` of ``data``: ``(len(indices), ...)``."""
    import torch

    if isinstance(data, np.ndarray):
        return data[np.asarray(indices, dtype=np.int64)]
    index = torch.as_tensor(list(indices), dtype=torch.long, device=data.device)
    return data.detach().index_select(0, index)


@dataclass(eq=False)
class TensorSet(ExampleSet):
    """The chosen rows of a :class:`TensorSource`.

    Attributes:
        data: the full ``(N, ...)`` tensor or array.
        indices: the chosen row indices, ascending.
    """

    name: str
    fingerprint: str
    description: str
    data: torch.Tensor | np.ndarray = field(repr=False)
    indices: tuple[int, ...]

    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        """The chosen rows ``(n, *input_shape)``; ``preprocessing`` is ignored."""
        import torch

        return _float32(torch.as_tensor(_take(self.data, self.indices)))


# ---------------------------------------------------------------------------- sequences


class SequenceSource(ExampleSource):
    """Any sequence of inputs: tensors, arrays, PIL images, or anything plus ``collate``.

    PIL images go through the experiment's preprocessing (like files, but without EXIF
    rotation); tensors and arrays are stacked as ready inputs (no preprocessing); with
    ``collate`` the chosen items (a list, in their original order) are passed to it and it
    must return the model input tensor ``(n, ...)``. Only the chosen items are accessed, so
    a lazy sequence (e.g. a map-style dataset with ``__len__`` and ``__getitem__``) works.

    Args:
        items: the examples.
        collate: turns a list of items into one tensor ``(len(items), ...)``.
        fingerprint: a string identifying the content of ``items`` (and what ``collate``
            does). Required unless every item is a tensor, array or PIL image, whose bytes
            are hashed instead. Change it whenever the items or ``collate`` change, or stale
            cached activations are reused.
    """

    def __init__(
        self,
        items: Sequence[Any],
        collate: Callable[[list[Any]], torch.Tensor | np.ndarray] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if isinstance(items, (str, bytes)) or not (
            hasattr(items, "__len__") and hasattr(items, "__getitem__")
        ):
            raise ConfigError(
                f"SequenceSource needs a sequence (list, tuple, ...), got {type(items).__name__}"
            )
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ConfigError("SequenceSource fingerprint= must be a string")
        if collate is not None and not callable(collate):
            raise ConfigError("SequenceSource collate= must be a callable")
        self.items = items
        self.collate = collate
        self.user_fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"SequenceSource({len(self.items)} items)"

    def resolve(
        self, name: str, selection: Selection, *, digests: FileDigests | None = None
    ) -> SequenceSet:
        """Choose a seeded subset of items (kept in their original order) and fingerprint it.

        Raises:
            ConfigError: an item cannot be hashed without ``fingerprint=`` or batched
                without ``collate=``.
            TooFewExamplesError: fewer items than ``selection.min_examples``.
        """
        indices = chosen_indices(name, len(self.items), selection, "the sequence")
        chosen = [self.items[i] for i in indices]
        self._check_items(name, chosen, indices)
        record = selection_record(name, selection)
        record.update(source="sequence", n=len(self.items), indices=indices)
        if self.user_fingerprint is not None:
            record["user"] = self.user_fingerprint
        else:
            record["items"] = [_item_sha256(item) for item in chosen]
        return SequenceSet(
            name=name,
            fingerprint=record_digest(record),
            description=f"sequence of {len(self.items)} items",
            items=chosen,
            indices=tuple(indices),
            collate=self.collate,
        )

    def _check_items(self, name: str, items: list[Any], indices: Sequence[int]) -> None:
        """Items must be hashable by content (or fingerprinted) and batchable (or collated)."""
        for index, item in zip(indices, items, strict=True):
            if isinstance(item, (np.ndarray, Image.Image)) or is_tensor(item):
                continue
            kind = type(item).__name__
            if self.user_fingerprint is None:
                raise ConfigError(
                    f"example set '{name}': item {index} is a {kind}, whose content tcavkit "
                    f"cannot hash; pass SequenceSource(..., fingerprint='<a string that "
                    f"changes when the items change>')"
                )
            if self.collate is None:
                raise ConfigError(
                    f"example set '{name}': item {index} is a {kind}; pass collate= to turn "
                    f"a list of items into a model-input tensor"
                )
        images = [isinstance(item, Image.Image) for item in items]
        if self.collate is None and any(images) and not all(images):
            raise ConfigError(
                f"example set '{name}': the sequence mixes PIL images and tensors/arrays; "
                f"use one kind or pass collate="
            )


def _item_sha256(item: Any) -> str:
    """sha256 hex digest of one tensor, array or PIL image."""
    if isinstance(item, Image.Image):
        return _image_sha256(item)
    return tensor_sha256(item)


@dataclass(eq=False)
class SequenceSet(ExampleSet):
    """The chosen items of a :class:`SequenceSource`.

    Attributes:
        items: the chosen items, in their original order.
        indices: their positions in the source sequence, ascending.
    """

    name: str
    fingerprint: str
    description: str
    items: list[Any] = field(repr=False)
    indices: tuple[int, ...]
    collate: Callable[[list[Any]], torch.Tensor | np.ndarray] | None = field(
        default=None, repr=False
    )

    def load(self, preprocessing: Preprocessing) -> torch.Tensor:
        """The chosen items as one tensor.

        Returns:
            ``collate(items)``; or float32 ``(n, 3, H, W)`` preprocessed PIL images; or the
            stacked tensors/arrays ``(n, *item_shape)`` (float64 becomes float32).
        """
        if self.collate is not None:
            return self._collated()
        if self.items and isinstance(self.items[0], Image.Image):
            names = [f"example set '{self.name}' item {i}" for i in self.indices]
            return preprocess(self.items, preprocessing, names)
        return self._stacked()

    def first_input(self, preprocessing: Preprocessing) -> torch.Tensor:
        """The first chosen item alone, as :meth:`load` makes it (only it is collated)."""
        return replace(self, items=self.items[:1], indices=self.indices[:1]).load(preprocessing)

    def _collated(self) -> torch.Tensor:
        """Apply ``collate`` and check its output."""
        import torch

        assert self.collate is not None
        out = self.collate(list(self.items))
        if not isinstance(out, (torch.Tensor, np.ndarray)):
            raise ConfigError(
                f"example set '{self.name}': collate returned {type(out).__name__}; "
                f"it must return a torch.Tensor (or numpy array) of shape (n, ...)"
            )
        tensor = torch.as_tensor(out)
        if tensor.ndim < 1 or tensor.shape[0] != len(self.items):
            raise ConfigError(
                f"example set '{self.name}': collate returned shape {tuple(tensor.shape)} for "
                f"{len(self.items)} items; the first dimension must be the number of items"
            )
        check_finite(self.name, tensor, self.indices, "the sequence (after collate)")
        return _float32(tensor)

    def _stacked(self) -> torch.Tensor:
        """Stack tensor/array items ``(n, *item_shape)``."""
        import torch

        tensors = [torch.as_tensor(item).detach() for item in self.items]
        for tensor, index in zip(tensors, self.indices, strict=True):
            if tensor.shape != tensors[0].shape:
                raise DataError(
                    f"example set '{self.name}': item {index} has shape {tuple(tensor.shape)} "
                    f"but item {self.indices[0]} has {tuple(tensors[0].shape)}; items must "
                    f"share one shape (or pass collate=)"
                )
        if not tensors:
            return torch.zeros((0,), dtype=torch.float32)
        stacked = torch.stack(tensors)
        check_finite(self.name, stacked, self.indices, "the sequence")
        return _float32(stacked)


# ------------------------------------------------------------------------------ as_source


def as_source(obj: Any) -> ExampleSource:
    """Turn a user-supplied object into an :class:`ExampleSource`.

    ``ExampleSource`` -> itself; ``str``/``Path`` -> :class:`ImageFolder`;
    tensor/array -> :class:`TensorSource`; list/tuple -> :class:`SequenceSource`.

    Raises:
        ConfigError: any other type.
    """
    if isinstance(obj, ExampleSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return ImageFolder(obj)
    if isinstance(obj, np.ndarray) or is_tensor(obj):
        return TensorSource(obj)
    if isinstance(obj, (list, tuple)):
        return SequenceSource(obj)
    raise ConfigError(
        f"cannot use a {type(obj).__name__} as examples; pass a folder path, a tensor or "
        f"array of shape (n, ...), a list of examples, or an ExampleSource"
    )
