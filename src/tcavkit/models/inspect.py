"""Layer inspection for ``tcavkit layers``: each layer of a model and its output shape."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import torch

from tcavkit.config import ModelSpec, load_config
from tcavkit.errors import LayerError
from tcavkit.models.loading import load_model

_DEFAULT_SIZE = (224, 224)


def layer_shapes(
    path: str | Path,
    *,
    trust_model_file: bool = False,
    size: tuple[int, int] | None = None,
) -> list[tuple[str, str]]:
    """Each layer of a model with the shape of its output for one all-zero input.

    Args:
        path: a model file, or an experiment YAML file (``.yaml``/``.yml``) whose ``model``
            section is loaded with the file's folder as base directory.
        trust_model_file: allow unpickling a ``torch.save``\\ d module (runs code from it).
        size: input ``(height, width)``; by default the experiment's ``model.input.size``,
            else the model's own input size, else 224 x 224.

    Returns:
        ``(layer name, shape)`` for every layer, in the model's order; the shape is the
        layer output's shape as text, e.g. ``"(1, 8, 16, 16)"``, or ``"-"`` when it cannot
        be captured. When one run capturing every layer fails, each layer is captured in a
        full run of its own, so only the layers that fail alone (not called by the forward
        pass, output not a tensor) get ``"-"``; a model that fails on the input gets
        ``"-"`` everywhere.

    Raises:
        ConfigError, ModelError, LayerError: the experiment file or the model cannot be
            loaded (see :func:`~tcavkit.models.loading.load_model`).
    """
    path = Path(path)
    channels_last = False
    if path.suffix.lower() in (".yaml", ".yml"):
        spec = load_config(path).model
        adapter = load_model(
            spec, device="cpu", trust_model_file=trust_model_file, base_dir=path.parent
        )
        size = size or spec.input.size
        channels_last = spec.input.channels_last
    else:
        spec = ModelSpec(path=path.resolve(), layers=["(any)"])
        adapter = load_model(spec, device="cpu", trust_model_file=trust_model_file)
    height, width = size or getattr(adapter, "input_size", None) or _DEFAULT_SIZE
    shape = (1, height, width, 3) if channels_last else (1, 3, height, width)
    x = torch.zeros(shape)
    names = adapter.layer_names()
    with torch.inference_mode():
        try:
            _, captured = adapter.run(x, names, need_output=True)
        except (LayerError, RuntimeError):
            captured = {}
            for name in names:  # one at a time: report the layers that do run
                with suppress(LayerError, RuntimeError):
                    captured.update(adapter.run(x, [name], need_output=True)[1])
    return [(name, str(tuple(captured[name].shape)) if name in captured else "-") for name in names]
