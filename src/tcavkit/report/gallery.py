"""The gallery of discovered concepts (``tcavkit discover``): read from ``concepts.json``
and the concept folders beside the tables, never recomputed.

For each concept, in the order ``concepts.json`` lists them (by result): a row of patches
from different source images, and one source image with the patch's segment outlined.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcavkit.report.common import DIRECTION_MARKS, format_number, format_p, is_missing

CONCEPTS_FILE = "concepts.json"
PATCHES_SHOWN = 8
"""Patches shown per concept, each from a different source image where there are enough."""


@dataclass
class GalleryItem:
    """One concept of the gallery: texts and images as ``data:`` URIs."""

    name: str
    where: str
    result: str
    css: str | None
    patches: list[dict[str, str]] = field(default_factory=list)
    source: dict[str, str] | None = None


def _data_uri(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def gallery(folder: Path, notes: list[str]) -> list[GalleryItem]:
    """The gallery items of a results folder written by ``tcavkit discover`` (none when the
    folder has no ``concepts.json``). A ``concepts.json`` that does not go with the folder's
    ``summary.csv`` (left by an earlier run) is not shown, and a note says so."""
    path = folder / CONCEPTS_FILE
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        summary_digest = hashlib.sha256((folder / "summary.csv").read_bytes()).hexdigest()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path} cannot be read ({exc}): the gallery is not shown.")
        return []
    if not isinstance(document, dict) or document.get("summary_sha256") != summary_digest:
        notes.append(
            f"{path} does not go with this folder's summary.csv (left by another run): the "
            "gallery of discovered concepts is not shown; run `tcavkit discover` again."
        )
        return []
    items = []
    for concept in document.get("concepts") or []:
        if isinstance(concept, dict):
            items.append(_item(folder, concept))
    return items


def _item(folder: Path, concept: dict[str, Any]) -> GalleryItem:
    direction = str(concept.get("direction") or "none")
    if direction in ("positive", "negative"):
        verdict = f"{DIRECTION_MARKS[direction]} significant"
    else:
        verdict = "not significant"
    statistic = concept.get("statistic") or "statistic"
    result = (
        f"{verdict}: {statistic} {format_number(concept.get('statistic_mean'))}, "
        f"p_adjusted {format_p(concept.get('p_adjusted'))}, TCAV score "
        f"{format_number(concept.get('tcav_score'))}, CAV accuracy "
        f"{format_number(concept.get('cav_accuracy'))}"
    )
    where = (
        f"{concept.get('target')} at {concept.get('layer')}: {concept.get('n_patches')} "
        f"patches from {concept.get('n_images')} images, folder {concept.get('folder')}"
    )
    item = GalleryItem(
        name=str(concept.get("name")),
        where=where,
        result=result,
        css={"positive": "sig-pos", "negative": "sig-neg"}.get(direction),
    )
    patches = [p for p in concept.get("patches") or [] if isinstance(p, dict)]
    chosen, seen = [], set()
    for patch in patches:  # one per source image first, nearest the centre first
        if patch.get("source") not in seen:
            seen.add(patch.get("source"))
            chosen.append(patch)
    chosen += [p for p in patches if p not in chosen]
    for patch in chosen[:PATCHES_SHOWN]:
        uri = _data_uri(folder / str(concept.get("folder")) / str(patch.get("file")))
        if uri:
            item.patches.append({"src": uri, "title": f"from {patch.get('source')}"})
    gallery_file = concept.get("gallery")
    if not is_missing(gallery_file) and patches:
        uri = _data_uri(folder / str(gallery_file))
        if uri:
            item.source = {"src": uri, "title": f"{patches[0].get('source')}, segment outlined"}
    return item
