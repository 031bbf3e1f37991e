"""The optimizer's elementwise work on the flat parameter buffers: the AdamW update (decoupled weight
decay) and the global gradient norm that clipping reads."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.ops.registry import op


@op
def adamw(g: Any, decay_mask: Any, w: Any, m: Any, v: Any, lr: Any, b1: Any, b2: Any, eps: float, decay: float,
          c1: Any, c2: Any) -> None:
    """One AdamW step, in place on w, m, v (flat buffers; c1 = 1 - b1^t, c2 = 1 - b2^t correct the bias
    of moments that start at 0):

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        w = w - lr decay mask w - lr (m / c1) / (sqrt(v / c2) + eps)

    The decay shrinks the weights directly (decoupled: never through the gradient), only where
    ``decay_mask`` is 1 (matrices, not biases or gains)."""
    xp = backend.xp
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    step = lr * decay * decay_mask * w + lr * (m / c1) / (xp.sqrt(v / c2) + eps)
    w -= step.astype(w.dtype)


@op
def grad_norm(g: Any) -> Any:
    """||g|| = sqrt(sum g^2), summed in float64 (a long sum), as a 0-d device array."""
    xp = backend.xp
    g64 = g.astype(xp.float64)
    return xp.sqrt((g64 * g64).sum())


@op
def clip_(g: Any, norm: Any, max_norm: float) -> Any:
    """g scaled in place to the norm max_norm when its norm (``grad_norm(g)``) is above it: g * max_norm / norm
    (+ 1e-6 in the denominator); left as it is below. Returns g."""
    xp = backend.xp
    factor = xp.where(norm > max_norm, xp.minimum(1.0, max_norm / (norm + 1e-6)), 1.0)
    g *= factor.astype(g.dtype)
    return g


__all__ = ["adamw", "grad_norm", "clip_"]
