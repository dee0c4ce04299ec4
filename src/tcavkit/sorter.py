"""Sort examples along a concept: cosine similarity of each example's activations with the
mean CAV of the concept (the CAVs ``tcavkit run`` trains against each random run).

The examples are a folder of images, or, for a text model (an adapter with an ``encoder``),
texts in any of the text sets' forms (a ``.txt`` file with one example per line, a folder
of ``.txt`` files, a ``.csv``/``.jsonl`` file with a ``text`` column). Both go through one
path: the source gives batches, the adapter their activations at the layer, and
:func:`rank_by_direction` the order.

Used by ``tcavkit sort``; the ranking, the CSV and the contact sheet (images only) live here.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tcavkit.atomic import atomic_write
from tcavkit.errors import DataError
from tcavkit.examples.base import Selection
from tcavkit.examples.sources import ImageFolder
from tcavkit.examples.text import TextSource
from tcavkit.pipeline.experiment import Experiment

THUMBNAIL = 96
CAPTION_LINES = 2  # rank and cosine; file name
LINE_HEIGHT = 13


def output_stem(concept: str, layer: str, images: str | Path) -> str:
    """The name, without suffix, of ``tcavkit sort``'s files for one sort:
    ``sort-<concept>-<layer>-<name of the images folder or text file>``, each part reduced
    to letters, digits, ``_``, ``.`` and ``-`` (so that a layer such as ``/features/conv``
    stays one name)."""
    folder = Path(images).resolve().name or "images"
    parts = [re.sub(r"[^\w.-]", "_", str(part)).strip("._") or "_" for part in (concept, layer)]
    folder = re.sub(r"[^\w.-]", "_", folder).strip("._") or "images"
    return "-".join(["sort", *parts, folder])


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, font: Any) -> str:
    """``text``, shortened in the middle with ``…`` until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2 :]
        shortened = f"{head}…{tail}"
        if draw.textlength(shortened, font=font) <= width:
            return shortened
    return "…"


@dataclass(frozen=True)
class SortResult:
    """Examples ranked by cosine similarity with a concept's mean CAV (best first).

    Attributes:
        files: ``(n,)`` image paths, best first (empty when texts were sorted).
        cosine: ``(n,)`` cosine similarity of each example's activations with the mean CAV.
        projection: ``(n,)`` dot product of the activations with the unit mean CAV.
        concept, layer: what was sorted by.
        texts: ``(n,)`` the sorted texts, best first, as read; ``None`` for images.
    """

    concept: str
    layer: str
    files: list[Path]
    cosine: np.ndarray
    projection: np.ndarray
    texts: list[str] | None = None

    @property
    def is_text(self) -> bool:
        return self.texts is not None

    def __len__(self) -> int:
        return len(self.cosine)

    def label(self, index: int) -> str:
        """What the console shows for an example: its text as given, or its file name."""
        return self.texts[index] if self.texts is not None else self.files[index].name

    def write_csv(self, path: Path) -> Path:
        """Columns: rank (1 = most like the concept), file (``text`` for texts), cosine,
        projection; one row per example."""
        path = Path(path)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        column = "text" if self.texts is not None else "file"
        writer.writerow(["rank", column, "cosine", "projection"])
        items = self.texts if self.texts is not None else [str(file) for file in self.files]
        for i, (item, cos, proj) in enumerate(
            zip(items, self.cosine, self.projection, strict=True), start=1
        ):
            writer.writerow([i, item, f"{cos:.6g}", f"{proj:.6g}"])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.getvalue())
        return path

    def write_contact_sheet(self, path: Path, k: int) -> Path:
        """A PNG with the top ``k`` images in the first row and the bottom ``k`` in the second
        (least like the concept first); below each thumbnail its rank and cosine, then its
        file name (shortened in the middle when it does not fit). Images only.

        Raises:
            DataError: texts were sorted (they have no contact sheet).
        """
        if self.texts is not None:
            raise DataError("sorted texts have no contact sheet; the table holds them")
        path = Path(path)
        k = max(1, min(k, len(self.files)))
        rows = [list(range(k)), list(range(len(self.files) - k, len(self.files)))[::-1]]
        pad = 6
        cell_w, cell_h = THUMBNAIL + pad, THUMBNAIL + CAPTION_LINES * LINE_HEIGHT + pad
        sheet = Image.new("RGB", (k * cell_w + pad, 2 * cell_h + pad), "white")
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.load_default()
        for r, indices in enumerate(rows):
            for c, index in enumerate(indices):
                with Image.open(self.files[index]) as img:
                    thumb = img.convert("RGB")
                    thumb.thumbnail((THUMBNAIL, THUMBNAIL))
                x, y = pad + c * cell_w, pad + r * cell_h
                sheet.paste(thumb, (x, y))
                captions = [
                    f"#{index + 1} {self.cosine[index]:+.2f}",
                    _fit(draw, self.files[index].name, THUMBNAIL, font),
                ]
                for line, caption in enumerate(captions):
                    top = y + THUMBNAIL + 1 + line * LINE_HEIGHT
                    draw.text((x, top), caption, fill="black", font=font)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda stream: sheet.save(stream, format="PNG"))
        return path


def mean_direction(directions: np.ndarray) -> np.ndarray:
    """The normalised mean of unit CAV directions ``(runs, d)`` → ``(d,)``."""
    mean = np.asarray(directions, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    if not np.isfinite(norm) or norm == 0:
        raise DataError("the concept's CAVs cancel out (mean direction is zero); cannot sort")
    return mean / norm


def rank_by_direction(acts: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, ...]:
    """Order, cosine and projection of activations ``(n, d)`` along a unit ``(d,)`` direction.

    Returns:
        (order ``(n,)`` best first, cosine ``(n,)``, projection ``(n,)``) in input order.
    """
    acts = np.asarray(acts, dtype=np.float64)
    projection = acts @ direction
    norms = np.linalg.norm(acts, axis=1)
    cosine = np.divide(projection, norms, out=np.zeros_like(projection), where=norms > 0)
    order = np.lexsort((-projection, -cosine))
    return order, cosine, projection


def sort_examples(experiment: Experiment, concept: str, layer: str, examples: Path) -> SortResult:
    """Rank every example in ``examples`` by similarity to ``concept`` at ``layer``.

    ``examples`` is a folder of images, or, when the experiment's model is a text model,
    a text file or folder (read like a text set: every non-blank example, in file order).

    Raises:
        DataError: the examples cannot be read, or their activations do not match the CAVs.
    """
    path = Path(examples)
    encoder = getattr(experiment.adapter, "encoder", None)
    if not path.exists():  # before the CAVs are computed
        kind = (
            "a .txt file (one example per line), a folder of .txt files, or a .csv/.jsonl "
            "file with a 'text' column"
            if encoder is not None
            else "a folder of images"
        )
        raise DataError(f"--examples {path} does not exist; give {kind}")
    cavs = experiment.concept_cavs(concept, layer)
    direction = mean_direction(np.stack([cav.direction for cav in cavs]))
    selection = Selection(max_examples=None, min_examples=1, seed=0)
    texts: list[str] | None = None
    if encoder is not None:
        text_set = TextSource(path, encoder).resolve(path.name or "examples", selection)
        data = text_set.load(experiment.preprocessing)
        files: list[Path] = []
        texts = text_set.texts
        what = f"texts in {path}"
        fix = "use a pooling (model.pooling: cls, mean or last) so every length fits"
    else:
        folder_set = ImageFolder(path).resolve("images", selection)
        data = folder_set.load(experiment.preprocessing)
        skipped = set(folder_set.skipped)
        files = [path / f for f in folder_set.files if str(path / f) not in skipped]
        what = f"images in {path}"
        fix = "the images must be preprocessed like the experiment's (model.input.size)"
    acts = _activations(experiment, data, layer)
    widths = sorted({chunk.shape[1] for chunk in acts} - {direction.shape[0]})
    if widths:
        raise DataError(
            f"{what} give {widths[0]} activations at layer {layer!r} but the CAVs have "
            f"{direction.shape[0]}: {fix}"
        )
    acts = np.concatenate(acts)
    order, cosine, projection = rank_by_direction(acts, direction)
    return SortResult(
        concept=concept,
        layer=layer,
        files=[files[i] for i in order] if texts is None else [],
        cosine=cosine[order],
        projection=projection[order],
        texts=[texts[i] for i in order] if texts is not None else None,
    )


def _activations(experiment: Experiment, data: Any, layer: str) -> list[np.ndarray]:
    """Activations at ``layer`` of ``data`` (``data[a:b]`` is a model input), one forward
    pass and one ``(b, d)`` array per ``experiment.batch_size`` examples (``d`` may differ
    between batches of texts when the layer is not pooled)."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(data), experiment.batch_size):
            batch = data[start : start + experiment.batch_size]
            out = experiment.adapter.activations(batch, [layer])[layer].numpy()
            chunks.append(out.reshape(out.shape[0], -1))
    return chunks
