"""Pieces several feed-forward variants share: the init scale of projections back into the residual
stream, the gated-linear-unit products (value * sigmoid(gate) for gln/ggl, value * swish(gate) for
swi) with their backward, and the config check that turns a bad combination into a clear error.
"""
from __future__ import annotations

import math
from typing import Any

from baby import backend
from baby.nn.layers import sigmoid, silu, silu_backward


def residual_std(cfg: Any) -> float:
    """GPT-2's init for a projection that writes into the residual stream: 0.02 / sqrt(2 * layers),
    so the sum over layers does not grow with depth."""
    return 0.02 / math.sqrt(2 * max(cfg.n_layers, 1))


def require(ok: bool, message: str) -> None:
    """Raise the config's error type (so callers catch one kind) when a relation between settings fails."""
    if not ok:
        from baby.config import ConfigError  # noqa: PLC0415 - config imports the registry, not us
        raise ConfigError(message)


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
    value, pre, act, s, gate = cache
    dvalue = dy * act
    dact = dy * value
    dpre = dact * s * (1.0 - s) if gate == "sigmoid" else silu_backward(pre, s, dact)
    return backend.xp.concatenate([dvalue, dpre], axis=-1)
