"""The pieces several feed-forward variants share: the gated-linear-unit products (value *
sigmoid(gate) for gln/ggl, value * swish(gate) for swi) with their backward. The init scale of
residual projections is ``layers.residual_std`` (the mixers use it too)."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.nn.layers import sigmoid, silu_backward


# ---- gated linear units ---------------------------------------------------------------------------
# ``fused`` holds [value | gate] along the last axis (one matmul produced both halves).

GATES = ("sigmoid", "swish")


def glu(fused: Any, gate: str) -> tuple[Any, Any]:
    """value * act(gate) with act = sigmoid (GLU) or swish (SwiGLU). Returns (y, cache for glu_backward)."""
    xp = backend.xp
    y = xp.empty(fused.shape[:-1] + (fused.shape[-1] // 2,), dtype=fused.dtype)
    s = xp.empty_like(y)
    act = s if gate == "sigmoid" else xp.empty_like(y)
    fused = xp.ascontiguousarray(fused)
    backend.blockwise(lambda f, y_, s_, a_: _glu_rows(f, y_, s_, a_, gate), fused, y, s, act)
    return y, (fused, act, s, gate)


def _glu_rows(fused: Any, y: Any, s: Any, act: Any, gate: str) -> None:
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    s[...] = sigmoid(pre)
    if gate == "swish":
        backend.xp.multiply(pre, s, out=act)  # silu(pre) = pre * sigmoid(pre)
    backend.xp.multiply(value, act, out=y)


def glu_backward(cache: Any, dy: Any) -> Any:
    """Gradient w.r.t. the fused [value | gate] input."""
    # d: y = value * act(pre): dvalue = dy * act, dpre = dy * value * act'(pre), with act' = s (1 - s) for
    #    sigmoid and silu_backward's s (1 + pre (1 - s)) for swish
    fused, act, s, gate = cache
    dfused = backend.xp.empty(fused.shape, dtype=dy.dtype)
    backend.blockwise(lambda f, a, s_, dy_, d: _glu_backward_rows(f, a, s_, dy_, d, gate),
                      fused, act, s, backend.xp.ascontiguousarray(dy), dfused)
    return dfused


def _glu_backward_rows(fused: Any, act: Any, s: Any, dy: Any, dfused: Any, gate: str) -> None:
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    backend.xp.multiply(dy, act, out=dfused[..., :half])
    dact = dy * value
    dfused[..., half:] = dact * s * (1.0 - s) if gate == "sigmoid" else silu_backward(pre, s, dact)
