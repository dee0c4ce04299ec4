"""Pooling a sequence layer's output ``(n, T, H)`` to one vector per example ``(n, H)``.

A layer's CAV lives in the space of its pooled activations, so the width of a layer does not
depend on the length of the inputs and sets padded to different lengths share one CAV.

- ``cls``: the first token, ``a = h_0``; the pooled gradient is ``g_0``.
- ``mean``: the mean over the real tokens (attention mask 1), ``a = Σ_t m_t h_t / Σ_t m_t``.
  The pooled gradient is the masked *sum* of the token gradients, ``Σ_t m_t g_t``: the
  exact derivative of the logit when every real token moves by ``ε v`` (the pooled
  activation then moves by exactly ``ε v``), ``d/dε z(h + ε v 1ᵀ) = (Σ_t m_t g_t) · v``.
- ``last``: the last real token (decoder models); its gradient ``g_last``.
- ``none``: the output flattened ``(n, T·H)``; all inputs must have the same length.

``g_t`` is d logit / d h_t. Padding tokens (mask 0) never enter ``mean`` or ``last``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcavkit.errors import LayerError
from tcavkit.options import POOLINGS, check_choice

if TYPE_CHECKING:  # torch is imported where tensors are made
    import torch


def _check(value: torch.Tensor, mask: torch.Tensor | None, how: str, layer: str) -> torch.Tensor:
    """The ``(n, T)`` mask (all ones when ``None``) after checking the shapes."""
    import torch

    check_choice(how, POOLINGS, f"pooling of layer {layer!r}")
    if value.ndim != 3:
        raise LayerError(
            f"layer {layer!r}: pooling {how!r} applies to sequence outputs (n, T, H), but the "
            f"layer's output is {tuple(value.shape)}: set its pooling to 'none'"
        )
    n, length = value.shape[:2]
    if mask is None:
        return torch.ones((n, length), dtype=value.dtype, device=value.device)
    if tuple(mask.shape) != (n, length):
        raise LayerError(
            f"layer {layer!r}: its output {tuple(value.shape)} is not (batch, tokens, width) "
            f"for the attention mask {tuple(mask.shape)}: choose a layer whose output has one "
            "vector per token, or set its pooling to 'none'"
        )
    return mask.to(device=value.device, dtype=value.dtype)


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token ``(n,)`` (0 for a row without one)."""
    import torch

    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask > 0, positions, torch.zeros_like(positions)).amax(dim=1)


def check_fixed_length(mask: torch.Tensor | None, layer: str) -> None:
    """Raise :class:`LayerError` naming the lengths when ``mask`` ``(n, T)`` pads any row."""
    if mask is None or bool((mask > 0).all()):
        return
    lengths = sorted({int(k) for k in (mask > 0).sum(dim=1).tolist()})
    shown = ", ".join(map(str, lengths[:8])) + (" …" if len(lengths) > 8 else "")
    raise LayerError(
        f"layer {layer!r} has pooling 'none', which needs inputs of one length, but the "
        f"inputs have {len(lengths)} lengths ({shown} tokens): set model.pooling to cls, mean "
        "or last"
    )


def pool(value: torch.Tensor, mask: torch.Tensor | None, how: str, layer: str) -> torch.Tensor:
    """Pooled activations.

    Args:
        value: the layer's output ``(n, T, H)`` (any shape ``(n, ...)`` for ``none``).
        mask: attention mask ``(n, T)``, 1 for real tokens (``None``: no padding).
        how: ``cls``, ``mean``, ``last`` or ``none``.

    Returns:
        ``(n, H)`` (``(n, prod(...))`` for ``none``), in ``value``'s dtype.
    """
    import torch

    if how == "none":
        check_fixed_length(mask, layer)
        return value.reshape(len(value), -1)
    weights = _check(value, mask, how, layer)
    if how == "cls":
        return value[:, 0]
    if how == "mean":
        counts = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.einsum("nt,nth->nh", weights, value) / counts
    rows = torch.arange(len(value), device=value.device)
    return value[rows, _last_index(weights)]


def pool_gradient(
    grad: torch.Tensor, mask: torch.Tensor | None, how: str, layer: str
) -> torch.Tensor:
    """The gradient with respect to the pooled activation (see the module's docstring).

    Args:
        grad: d logit / d output ``(n, T, H)`` (any shape ``(n, ...)`` for ``none``).
        mask: attention mask ``(n, T)`` (``None``: no padding).

    Returns:
        ``(n, H)``: ``g_0`` (cls), ``Σ_t m_t g_t`` (mean), ``g_last`` (last); the flattened
        gradient for ``none``.
    """
    import torch

    if how == "mean":
        weights = _check(grad, mask, how, layer)
        return torch.einsum("nt,nth->nh", weights, grad)
    return pool(grad, mask, how, layer)
