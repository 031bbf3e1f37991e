"""Elementwise activations and gates, as the formulas read: GELU (tanh form), sigmoid, SiLU, the
gated linear units of glu/swi/ggl (value * sigmoid(gate), value * swish(gate)) and dropout. Each
forward returns what its backward needs; fp16 inputs are computed in fp32 (``wide``)."""
from __future__ import annotations

import math
from typing import Any

from baby import backend
from baby.ops.registry import op, wide

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
GELU_FORM = "tanh"  # the approximation gelu() computes (GPT-2's "gelu_new"); model files record it
GATES = ("sigmoid", "swish")


@op
def gelu(x: Any) -> tuple[Any, Any]:
    """y = 0.5 x (1 + t), t = tanh(c (x + a x^3)), c = sqrt(2 / pi), a = 0.044715. Returns (y, t)."""
    w = wide(x)
    t = backend.xp.tanh(GELU_C * (w + GELU_A * w ** 3))
    return (0.5 * w * (1.0 + t)).astype(x.dtype), t.astype(x.dtype)


@op
def gelu_backward(x: Any, t: Any, dy: Any) -> Any:
    """dx = dy [0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)] with t = tanh(c (x + a x^3))."""
    # d: y = 0.5 x (1 + t), dt/dx = (1 - t^2) c (1 + 3 a x^2):  dy/dx = 0.5 (1 + t) + 0.5 x dt/dx
    x, t = wide(x), wide(t)
    return (dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * GELU_A * x * x))).astype(dy.dtype)


@op
def sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x)), written as 0.5 (1 + tanh(x / 2)): the same value, and exp never overflows."""
    return 0.5 * (1.0 + backend.xp.tanh(0.5 * x))


@op
def silu(x: Any) -> tuple[Any, Any]:
    """x * sigmoid(x); returns (y, sigmoid) for silu_backward."""
    s = sigmoid(x)
    return x * s, s


@op
def silu_backward(x: Any, s: Any, dy: Any) -> Any:
    """dx = dy s (1 + x (1 - s)) with s = sigmoid(x)."""
    # d: y = x s, s = sigmoid(x), s' = s (1 - s):  dx = dy (s + x s (1 - s)) = dy s (1 + x (1 - s))
    return dy * s * (1.0 + x * (1.0 - s))


@op
def glu(fused: Any, gate: str) -> tuple[Any, Any]:
    """value * act(pre) for ``fused`` = [value | pre] along the last axis (one matmul made both halves),
    act = sigmoid (GLU) or swish (SwiGLU: pre * sigmoid(pre)). Returns (y, cache for glu_backward)."""
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    s = sigmoid(pre)
    act = s if gate == "sigmoid" else pre * s
    return value * act, (fused, act, s, gate)


@op
def glu_backward(cache: Any, dy: Any) -> Any:
    """Gradient w.r.t. the fused [value | pre] input."""
    # d: y = value * act(pre): dvalue = dy * act, dpre = dy * value * act'(pre), with act' = s (1 - s) for
    #    sigmoid and silu_backward's s (1 + pre (1 - s)) for swish
    fused, act, s, gate = cache
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    dact = dy * value
    dpre = dact * s * (1.0 - s) if gate == "sigmoid" else dact * s * (1.0 + pre * (1.0 - s))
    return backend.xp.concatenate([dy * act, dpre], axis=-1)


@op
def dropout(x: Any, rate: float, rng: Any) -> tuple[Any, Any]:
    """Inverted dropout: each value kept with probability 1 - rate and scaled by 1 / (1 - rate), so the
    expected output is x. The mask comes from ``rng`` (the step's generator: a resumed run draws the
    same). Returns (y, mask)."""
    keep = rng.random(x.shape, dtype=backend.xp.float32) >= rate
    mask = keep.astype(x.dtype) * (1.0 / (1.0 - rate))
    return x * mask, mask


@op
def dropout_backward(dy: Any, mask: Any) -> Any:
    """dx = dy * mask."""
    # d: y = x * mask (mask fixed in the forward): dx = dy * mask
    return dy * mask


__all__ = ["GELU_C", "GELU_A", "GELU_FORM", "GATES", "gelu", "gelu_backward", "sigmoid", "silu", "silu_backward",
           "glu", "glu_backward", "dropout", "dropout_backward"]
