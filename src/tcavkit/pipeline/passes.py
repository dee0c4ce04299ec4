"""The model passes: activations of concept and random sets, gradients of target sets.

Each set's content goes through the model at most once per run, for all layers at once,
and only when the cache does not already hold it. Results stay in the cache: a pass
returns loaders that read a set's array when asked, so nothing large stays in memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tcavkit.errors import (
    CacheError,
    ConfigError,
    DataError,
    ModelError,
    TcavError,
    TcavWarning,
    one_line,
)
from tcavkit.examples.base import ExampleSet, batch_of, count_rows
from tcavkit.lazy import is_tensor
from tcavkit.pipeline.context import RunContext

if TYPE_CHECKING:  # torch is imported where the model runs, not on cache reads
    import torch

    from tcavkit.cav.batch import SetLoader

Loader = Callable[[], np.ndarray]
"""``() -> (n, d)`` float32: a set's activations (or gradients) at one layer."""

Arrays = dict[str, dict[str, Loader]]
"""set name → layer → loader."""


def sets_to_compute(
    ctx: RunContext,
    sets: dict[str, ExampleSet],
    example_sets: Sequence[str],
    targets: dict[str, int],
) -> list[tuple[ExampleSet, int | None]]:
    """The sets that go through the model in this run, in the order they will: concept
    and random sets missing from the cache (each content once; class index ``None``: their
    activations), then targets (with their class index: activations and gradients)."""
    order: list[tuple[ExampleSet, int | None]] = []
    seen: set[str] = set()
    for name in example_sets:
        examples = sets[name]
        if examples.fingerprint not in seen:
            seen.add(examples.fingerprint)
            if not in_cache(ctx, ctx.keys.activations(ctx.layers, examples)):
                order.append((examples, None))
    for name, index in targets.items():
        if not in_cache(ctx, gradient_keys(ctx, sets[name], index)):
            order.append((sets[name], index))
    return order


def check_model(
    ctx: RunContext,
    order: Sequence[ExampleSet],
    targets: dict[str, int],
    labels: Sequence[str] | None,
) -> None:
    """Before the passes: the model runs on one example of the first set it will be given
    (``order``, as :func:`sets_to_compute` gives it), and its output width (the number of
    classes) fits the labels and the targets' class indices.

    The width is cached under the model's fingerprint and logits settings, so that a run
    that sends nothing through the model checks the labels without loading it; with no
    cached width and nothing to compute, nothing is checked.

    Raises:
        ModelError: the model fails on the example; the message says what the example was
            (an image's size is ``model.input.size``) and the model's own error.
        ConfigError: more labels than outputs, or a target's class index past the outputs.
    """
    adapter = ctx.adapter
    key = ctx.keys.outputs(adapter.logits_layer, adapter.output)
    width = ctx.store.get_meta(key).get("outputs")
    if order:
        width = _probe(ctx, order[0])
        if ctx.store.root is not None:
            ctx.store.put(key, np.zeros(0, dtype=np.uint8), meta={"outputs": width})
    if not isinstance(width, int):
        return
    if labels is not None and len(labels) > width:
        raise ConfigError(
            f"model.labels lists {len(labels)} labels but the model has {width} outputs: give "
            f"one label per output, in output order"
        )
    for name, index in targets.items():
        if not 0 <= index < width:
            raise ConfigError(
                f"target {name!r} is class index {index} but the model has {width} outputs "
                f"(0 to {width - 1}): check the target and model.labels"
            )


def _probe(ctx: RunContext, examples: ExampleSet) -> int:
    """The model's output width, from a run on one example of ``examples``."""
    preprocessing = ctx.keys.preprocessing
    x = examples.first_input(preprocessing)
    try:
        return int(ctx.adapter.logits(x).shape[1])
    except TcavError:
        raise
    except Exception as error:  # the model's own code: any exception
        if is_tensor(x) and x.ndim == 4:
            height, width = x.shape[1:3] if preprocessing.channels_last else x.shape[2:4]
            setting = (
                f"model.input.size is {list(preprocessing.size)}"
                if preprocessing.size
                else f"model.input.size is unset (the images' own size, {height}x{width})"
            )
            what = f"{setting}, which does not fit this model: set the size it expects"
        elif is_tensor(x) and x.ndim == 2 and x.is_floating_point():
            what = (
                f"a row of {x.shape[1]} features does not fit this model: give the model's "
                "feature columns, in its order, with model.columns"
            )
        else:
            shape = {k: tuple(v.shape) for k, v in x.items()} if isinstance(x, dict) else None
            shown = shape or (tuple(x.shape) if is_tensor(x) else type(x).__name__)
            what = f"an input {shown} does not fit this model: check the examples"
        raise ModelError(
            f"the model fails on one example of set {examples.name!r}: {what} (model error: "
            f"{one_line(error, 200)})"
        ) from None


def activation_pass(ctx: RunContext, sets: dict[str, ExampleSet], names: Sequence[str]) -> Arrays:
    """{set name: {layer: loader of (n, d)}} for the named sets; one pass per unique
    content."""
    by_fingerprint: Arrays = {}
    result: Arrays = {}
    with ctx.bar(len(names), "activations", "set") as bar:
        for name in names:
            examples = sets[name]
            if examples.fingerprint not in by_fingerprint:
                by_fingerprint[examples.fingerprint] = _layer_arrays(
                    ctx,
                    examples,
                    ctx.keys.activations(ctx.layers, examples),
                    lambda x: ctx.adapter.activations(x, ctx.layers),
                    "forward_batches",
                )
            result[name] = by_fingerprint[examples.fingerprint]
            bar.update()
    return result


def gradient_pass(ctx: RunContext, sets: dict[str, ExampleSet], targets: dict[str, int]) -> Arrays:
    """{target: {layer: loader of (n, d)}}: gradients of each target's class logit, or its
    log-softmax (``ctx.gradient``), on its own examples (``targets``: target name → class
    index)."""
    result = {}
    with ctx.bar(len(targets), "gradients", "target") as bar:
        for name, index in targets.items():
            result[name] = _layer_arrays(
                ctx,
                sets[name],
                gradient_keys(ctx, sets[name], index),
                lambda x, k=index: ctx.adapter.gradients(x, k, ctx.layers, ctx.gradient),
                "backward_batches",
            )
            bar.update()
    return result


def layer_loader(ctx: RunContext, arrays: Arrays, layer: str) -> SetLoader:
    """set name → float32 tensor ``(n, d)`` at ``layer`` on the model's device, read when
    asked."""
    import torch

    device = ctx.adapter.device

    def load(name: str) -> torch.Tensor:
        return torch.from_numpy(arrays[name][layer]()).to(device=device, dtype=torch.float32)

    return load


def gradient_keys(ctx: RunContext, examples: ExampleSet, index: int) -> dict[str, str]:
    """{layer: cache key} of the gradients of class ``index`` on ``examples``."""
    adapter = ctx.adapter
    return ctx.keys.gradients(
        ctx.layers, examples, index, adapter.logits_layer, adapter.output, ctx.gradient
    )


def in_cache(ctx: RunContext, keys: dict[str, str]) -> bool:
    """Whether every entry of ``keys`` (layer → cache key, as :func:`gradient_keys` or
    :meth:`~tcavkit.pipeline.keys.KeyMaker.activations` give them) is in the cache."""
    return all(ctx.store.get(key) is not None for key in keys.values())


def _batches(ctx: RunContext, examples: ExampleSet) -> Iterator[Any]:
    """The set's model inputs, ``ctx.batch_size`` examples at a time (a tensor or a mapping
    of tensors; texts are tokenized and padded per batch)."""
    assert ctx.loads is not None, "the model passes run inside a Prefetcher"
    data = ctx.loads.load(examples)
    for start in range(0, count_rows(data), ctx.batch_size):
        yield batch_of(data, start, start + ctx.batch_size)


def _layer_arrays(
    ctx: RunContext,
    examples: ExampleSet,
    keys: dict[str, str],
    compute: Callable[[Any], dict[str, torch.Tensor]],
    counter: str,
) -> dict[str, Loader]:
    """Per-layer loaders of a set's arrays from the cache, or computed batch by batch
    (``compute``: inputs → {layer: (b, d)}) and stored first."""
    cached = {layer: ctx.store.get(key) for layer, key in keys.items()}
    if all(array is not None for array in cached.values()):
        ctx.counts.sets_from_cache += 1
        skipped = ctx.store.get_meta(next(iter(keys.values()))).get("skipped", [])
        _note_skipped(ctx, examples.name, skipped, from_cache=True)
        ctx.sizes[examples.name] = len(next(iter(cached.values())))  # type: ignore[arg-type]
        return {layer: _cache_loader(ctx, key) for layer, key in keys.items()}
    del cached

    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in keys}
    for batch in _batches(ctx, examples):
        out = compute(batch)
        setattr(ctx.counts, counter, getattr(ctx.counts, counter) + 1)
        for layer in keys:
            parts[layer].append(out[layer])
    ctx.counts.sets_computed += 1
    skipped = [str(path) for path in examples.skipped]
    _note_skipped(ctx, examples.name, skipped, from_cache=False)
    loaders: dict[str, Loader] = {}
    for layer, key in keys.items():
        array = _joined(parts.pop(layer), examples.name, layer).numpy()
        _check_finite(array, examples.name, layer)
        ctx.sizes[examples.name] = len(array)
        if ctx.store.root is None:
            loaders[layer] = lambda array=array: array
            continue
        meta = {"set": examples.name, "layer": layer, "skipped": skipped}
        ctx.store.put(key, array, meta=meta, dtype=ctx.keys.cache_dtype)
        loaders[layer] = _cache_loader(ctx, key)
    return loaders


def _cache_loader(ctx: RunContext, key: str) -> Loader:
    """A loader of the float32 array under ``key``."""
    store = ctx.store

    def load() -> np.ndarray:
        array = store.get_float32(key)
        if array is None:
            raise CacheError(
                f"cache entry {key} disappeared during the run (was the cache folder "
                f"{store.root} cleared?); run again"
            )
        return array

    return load


def _note_skipped(ctx: RunContext, name: str, skipped: list[str], *, from_cache: bool) -> None:
    """Remember skipped files for the results; repeat the warning on a cache hit."""
    ctx.skipped[name] = list(skipped)
    if from_cache:
        for path in skipped:
            warnings.warn(
                f"example set '{name}': unreadable file {path} was skipped (cached result)",
                TcavWarning,
                stacklevel=4,
            )


def _joined(parts: list[torch.Tensor], name: str, layer: str) -> torch.Tensor:
    """The batches' ``(b, d)`` arrays as one ``(n, d)``; batches of different widths (a
    layer flattened over inputs of different lengths) are an error that says what to do."""
    widths = sorted({int(part.shape[1]) for part in parts})
    if len(widths) > 1:
        raise DataError(
            f"set {name!r}: layer {layer!r} has {len(widths)} widths across batches "
            f"({', '.join(map(str, widths[:6]))}): its output depends on the input length; "
            "set model.pooling to cls, mean or last for it"
        )
    import torch

    return torch.cat(parts)


def _check_finite(array: np.ndarray, name: str, layer: str) -> None:
    if not np.isfinite(array).all():
        raise DataError(
            f"set {name!r}: the model produced NaN or infinite values at layer {layer!r}; "
            "check the inputs' preprocessing and the model weights"
        )
