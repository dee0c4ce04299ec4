"""HuggingFace ``transformers`` sequence classifiers and their tokenizers, from local folders.

``model.huggingface: {path: FOLDER, tokenizer: FOLDER}`` (or ``model.factory: transformers``
with ``model.path: FOLDER``) loads ``AutoModelForSequenceClassification`` and
``AutoTokenizer`` from what ``save_pretrained`` wrote. Nothing is downloaded: a hub name is
used only when a local copy of it is cached, and is otherwise a one-line error. Layers are
named as in ``named_modules()`` (``bert.encoder.layer.5``); the logits are the output's
``logits``. Needs ``pip install 'tcavkit[text]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcavkit.errors import ModelError, one_line
from tcavkit.examples.text import TokenizerEncoder
from tcavkit.models.adapter import OutputSelector, Pooling, TorchModel, module_fingerprint
from tcavkit.models.extras import require

DEFAULT_MAX_LENGTH = 512
"""Tokens per example when neither ``model.max_length`` nor the model says."""


class TextModel(TorchModel):
    """A ``transformers`` model with the tokenizer that makes its inputs.

    Args:
        module: the model (its forward takes ``input_ids``, ``attention_mask``, …).
        tokenizer: its tokenizer.
        max_length: the most tokens per example (default: the smallest of the tokenizer's
            ``model_max_length``, the model's ``max_position_embeddings`` and 512).

    Attributes:
        encoder: texts → model inputs, padded per batch (:class:`TokenizerEncoder`).
        labels: the class names of the model's config (``id2label``), in output order.
    """

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        logits_layer: str | None = None,
        output: OutputSelector = "logits",
        device: str | torch.device = "auto",
        pooling: Pooling = "none",
    ) -> None:
        super().__init__(
            module, logits_layer=logits_layer, output=output, device=device, pooling=pooling
        )
        config = getattr(module, "config", None)
        limits = [
            DEFAULT_MAX_LENGTH,
            getattr(tokenizer, "model_max_length", None),
            getattr(config, "max_position_embeddings", None),
        ]
        limit = min(int(v) for v in limits if isinstance(v, (int, float)) and v > 0)
        self.encoder = TokenizerEncoder(tokenizer, max_length or limit)
        id2label = getattr(config, "id2label", None) or {}
        self.labels = [str(id2label[i]) for i in range(len(id2label))] if id2label else None

    def fingerprint(self) -> str:
        """The network's fingerprint and the tokenizer's: both decide the activations."""
        return f"{module_fingerprint(self.module)}:{self.encoder.fingerprint()[:16]}"

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs ``{name: (n, T)}`` for ``texts``."""
        return self.encoder(texts)


def _local_error(what: str, name: str, error: Exception) -> ModelError:
    if Path(name).exists():
        return ModelError(f"cannot load the {what} in {name}: {one_line(error)}")
    return ModelError(
        f"model.huggingface: {name!r} is not a local folder and no local copy of it is "
        "cached; nothing is downloaded: save it once with model.save_pretrained(FOLDER) and "
        "tokenizer.save_pretrained(FOLDER) and give FOLDER"
    )


def load_huggingface(
    path: str,
    tokenizer: str | None = None,
    *,
    max_length: int | None = None,
    logits_layer: str | None = None,
    output: OutputSelector = None,
    device: str | torch.device = "auto",
) -> TextModel:
    """Load a sequence classifier and its tokenizer from local folders (no download).

    Raises:
        ModelError: ``transformers`` is missing, or a folder (or cached copy) cannot be
            loaded.
    """
    transformers = require("transformers", "text", "loading HuggingFace models")
    try:
        module = transformers.AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True
        )
    except Exception as error:
        raise _local_error("model", path, error) from error
    source = tokenizer or path
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as error:
        raise _local_error("tokenizer", source, error) from error
    return TextModel(
        module,
        tok,
        max_length=max_length,
        logits_layer=logits_layer,
        output="logits" if output is None and logits_layer is None else output,
        device=device,
    )
