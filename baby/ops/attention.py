"""The core of softmax attention, scores -> probabilities -> values, with its backward, and the rotary
position rotation (RoPE, LLaMA/GPT-NeoX's rotate-half convention)."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.ops.registry import op
from baby.ops.softmax import softmax_, softmax_backward_


def _t(a: Any) -> Any:
    return a.swapaxes(-1, -2)


@op
def attend(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
    """y = p v, p = softmax(q k^T * scale + bias), for (..., Tq, D) queries; returns (y, p).
    Leading axes broadcast, so (B, K, G, T, D) queries can share (B, K, 1, T, D) keys (gqa)."""
    mm = backend.matmul  # a @ b (fp16 operands as fp32 GEMMs on the CPU)
    s = mm(q, _t(k)) * scale + bias
    p = softmax_(s)
    return mm(p, v), p


@op
def attend_backward(dy: Any, q: Any, k: Any, v: Any, p: Any, scale: float) -> tuple[Any, Any, Any]:
    """Gradients of ``attend`` w.r.t. q, k, v, shaped like the broadcast product (a caller that
    broadcast keys over an axis sums their gradients over it)."""
    # d: s = q k^T * scale + bias, p = softmax(s), y = p v:
    #    dv = p^T dy, dp = dy v^T, ds = p * (dp - rowsum(p * dp)), dq = ds k * scale, dk = ds^T q * scale
    mm = backend.matmul
    ds = softmax_backward_(p, mm(dy, _t(v))) * scale
    return mm(ds, k), mm(_t(ds), q), mm(_t(p), dy)


@op
def rope(x: Any, cos: Any, sin: Any, inverse: bool = False, out: Any = None) -> Any:
    """Rotate each pair (x1_i, x2_i) of the halves of the last axis by its angle theta_i:
    (x1 cos - x2 sin, x1 sin + x2 cos). ``inverse`` rotates by -theta: R^T, the backward (R is
    orthogonal, so the gradient through y = R x is dx = R^T dy). Written into ``out`` when given."""
    # d: y = R x with R a rotation: dx = R^T dy = rope(dy, inverse=True)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if inverse:
        sin = -sin
    y = backend.xp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    if out is None:
        return y
    out[...] = y
    return out


__all__ = ["attend", "attend_backward", "rope"]
