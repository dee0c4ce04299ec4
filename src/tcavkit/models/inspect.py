"""Layer inspection for ``tcavkit layers``: each layer of a model and its output shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tcavkit.config import ModelSpec, load_config
from tcavkit.models.loading import load_model
from tcavkit.options import check_input_size

_DEFAULT_SIZE = (224, 224)
SAMPLE_TEXT = "tcavkit lists the layers of this model"
"""The sentence a text model is run on to show its layers' output shapes."""


def _linear_inputs(adapter: Any) -> int | None:
    """The input width of a model whose first weighted module is a linear layer (a tabular
    model), else ``None``."""
    module = getattr(adapter, "module", None)
    if module is None:
        return None
    for _, child in module.named_modules():
        weight = getattr(child, "weight", None)
        if isinstance(weight, torch.Tensor):
            kind = getattr(child, "original_name", type(child).__name__)
            return int(weight.shape[1]) if kind == "Linear" and weight.ndim == 2 else None
    return None


def _sample_input(adapter: Any, spec: ModelSpec, size: tuple[int, int] | None) -> Any:
    """One input: a tokenized sentence (text models), a row of zeros (tabular models:
    ``model.columns`` or a first linear layer), else an all-zero image."""
    encoder = getattr(adapter, "encoder", None)
    if encoder is not None:
        return encoder([SAMPLE_TEXT])
    features = len(spec.columns) if spec.columns else None
    if features is None and size is None:
        features = _linear_inputs(adapter)
    if features is not None:
        return torch.zeros((1, features))
    height, width = size or getattr(adapter, "input_size", None) or _DEFAULT_SIZE
    channels_last = spec.input.channels_last
    return torch.zeros((1, height, width, 3) if channels_last else (1, 3, height, width))


def layer_shapes(
    path: str | Path,
    *,
    trust_model_file: bool = False,
    size: tuple[int, int] | None = None,
) -> list[tuple[str, str, str]]:
    """Each layer of a model with its type and the shape of its output for one all-zero
    input.

    Args:
        path: a model file, a folder written by ``save_pretrained`` (a HuggingFace
            ``transformers`` model, run on one tokenized sentence), or an experiment YAML
            file (``.yaml``/``.yml``) whose ``model`` section is loaded with the file's
            folder as base directory. A tabular model (``model.columns``, or a model whose
            first weighted layer is linear) is run on one row of zeros.
        trust_model_file: allow unpickling a ``torch.save``\\ d module (runs code from it).
        size: input ``(height, width)``, each from 1 to
            :data:`~tcavkit.options.MAX_IMAGE_SIDE`; by default the experiment's
            ``model.input.size``, else the model's own input size, else 224 x 224.

    Returns:
        ``(layer name, type, shape)`` for every layer, in the model's order: the type as
        the adapter knows it (``Conv2d``, ``Dense``, ``Conv``; ``""`` when unknown) and the
        output's shape as text, e.g. ``"(1, 8, 16, 16)"``, or ``"-"`` for a layer that
        does not run on the input (a container the forward pass never calls, a model that
        fails before it) or whose output is not a tensor. One forward pass where the
        adapter can capture what runs (any ``torch.nn.Module``; see
        :meth:`~tcavkit.models.ModelAdapter.capture_what_runs`).

    Raises:
        ConfigError, ModelError, LayerError: the experiment file or the model cannot be
            loaded (see :func:`~tcavkit.models.loading.load_model`).
    """
    if size is not None:
        check_input_size(size, "size")
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        spec = load_config(path).model
        adapter = load_model(
            spec, device="cpu", trust_model_file=trust_model_file, base_dir=path.parent
        )
        size = size or spec.input.size
    elif path.is_dir():
        spec = ModelSpec(huggingface={"path": str(path.resolve())}, layers=["(any)"])
        adapter = load_model(spec, device="cpu")
    else:
        spec = ModelSpec(path=path.resolve(), layers=["(any)"])
        adapter = load_model(spec, device="cpu", trust_model_file=trust_model_file)
    x = _sample_input(adapter, spec, size)
    names = adapter.layer_names()
    kinds = adapter.layer_kinds()
    with torch.inference_mode():
        captured = adapter.capture_what_runs(x, names)
    return [
        (name, kinds.get(name, ""), str(tuple(captured[name].shape)) if name in captured else "-")
        for name in names
    ]
