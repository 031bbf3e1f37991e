"""The pieces several feed-forward variants share: the gated-linear-unit products (value *
sigmoid(gate) for gln/ggl, value * swish(gate) for swi) with their backward. The init scale of
residual projections is ``layers.residual_std`` (the mixers use it too)."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.nn.layers import sigmoid, silu, silu_backward


# ---- gated linear units ---------------------------------------------------------------------------
# ``fused`` holds [value | gate] along the last axis (one matmul produced both halves).

GATES = ("sigmoid", "swish")


def glu(fused: Any, gate: str) -> tuple[Any, Any]:
    """value * act(gate) with act = sigmoid (GLU) or swish (SwiGLU). Returns (y, cache for glu_backward)."""
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    if gate == "sigmoid":
        s = sigmoid(pre)
        return value * s, (value, pre, s, s, gate)
    a, s = silu(pre)
    return value * a, (value, pre, a, s, gate)


def glu_backward(cache: Any, dy: Any) -> Any:
    """Gradient w.r.t. the fused [value | gate] input."""
    # d: y = value * act(pre): dvalue = dy * act, dpre = dy * value * act'(pre), with act' = s (1 - s) for
    #    sigmoid and silu_backward's s (1 + pre (1 - s)) for swish
    value, pre, act, s, gate = cache
    dvalue = dy * act
    dact = dy * value
    dpre = dact * s * (1.0 - s) if gate == "sigmoid" else silu_backward(pre, s, dact)
    return backend.xp.concatenate([dvalue, dpre], axis=-1)
