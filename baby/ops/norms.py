"""Row norms over the last axis, forward and backward side by side: LayerNorm and RMSNorm. The
per-row statistics are taken in at least float32 (squares overflow fp16 above 256)."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.ops.registry import op, wide


def _leading(a: Any) -> tuple[int, ...]:
    return tuple(range(a.ndim - 1))


@op
def layer_norm(x: Any, gain: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """y = xhat * gain + bias, xhat = (x - mean(x)) / sqrt(var(x) + eps) over the last axis.
    Returns (y, (xhat, rstd)) with rstd = 1 / sqrt(var + eps) per row, for layer_norm_backward."""
    x32 = wide(x)
    centred = x32 - x32.mean(axis=-1, keepdims=True)
    rstd = 1.0 / backend.xp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    xhat = (centred * rstd).astype(x.dtype)
    return xhat * gain + bias, (xhat, rstd)


@op
def layer_norm_backward(dy: Any, xhat: Any, rstd: Any, gain: Any) -> tuple[Any, Any, Any]:
    """(dx, dgain, dbias) of layer_norm."""
    # d: xhat = (x - mean(x)) * rstd, y = xhat * gain + bias; with g = dy * gain:
    #    dgain = sum(dy * xhat), dbias = sum(dy), dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    acc = rstd.dtype
    g = dy * gain
    dx = rstd * (g - g.mean(axis=-1, keepdims=True, dtype=acc) - xhat * (g * xhat).mean(axis=-1, keepdims=True, dtype=acc))
    return dx.astype(dy.dtype), (dy * xhat).sum(axis=_leading(dy), dtype=acc), dy.sum(axis=_leading(dy), dtype=acc)


@op
def rms_norm(x: Any, gain: Any, eps: float) -> tuple[Any, Any]:
    """y = xhat * gain, xhat = x / sqrt(mean(x^2) + eps) (LLaMA: no centring, no bias).
    Returns (y, (xhat, r)) with r = 1 / sqrt(mean(x^2) + eps) per row."""
    x32 = wide(x)
    r = 1.0 / backend.xp.sqrt((x32 * x32).mean(axis=-1, keepdims=True) + eps)
    xhat = (x32 * r).astype(x.dtype)
    return xhat * gain, (xhat, r)


@op
def rms_norm_backward(dy: Any, xhat: Any, r: Any, gain: Any) -> tuple[Any, Any]:
    """(dx, dgain) of rms_norm."""
    # d: xhat = x * r, r = 1 / sqrt(mean(x^2) + eps), y = xhat * gain; with g = dy * gain:
    #    dgain = sum(dy * xhat), dx = r * (g - xhat * mean(g * xhat))  (LayerNorm without the centring)
    g = dy * gain
    dx = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True, dtype=r.dtype))
    return dx.astype(dy.dtype), (dy * xhat).sum(axis=_leading(dy), dtype=r.dtype)


__all__ = ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]
