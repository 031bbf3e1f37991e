"""Softmax along an axis (in place: attention scores are the largest arrays), its backward, and the
loss of the head: log-softmax and the token cross-entropy with its gradient."""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.ops.registry import op, wide


@op
def softmax_(s: Any, axis: int = -1) -> Any:
    """p = exp(s - max(s)) / sum(exp(s - max(s))) along ``axis``, written over ``s`` and returned.
    (Subtracting the max changes nothing mathematically and keeps exp from overflowing.)"""
    e = backend.xp.exp(s - s.max(axis=axis, keepdims=True))
    s[...] = e / e.sum(axis=axis, keepdims=True, dtype=backend.accumulator(s.dtype))
    return s


def softmax(s: Any, axis: int = -1) -> Any:
    """softmax_ of a copy."""
    return softmax_(s.copy(), axis)


@op
def softmax_backward_(p: Any, dp: Any, axis: int = -1) -> Any:
    """The gradient through p = softmax(s), p * (dp - <dp, p>), written over ``dp`` and returned."""
    # d: p = softmax(s): dp_i/ds_j = p_i (delta_ij - p_j), so ds = p * (dp - rowsum(p * dp))
    dp[...] = p * (dp - (dp * p).sum(axis=axis, keepdims=True, dtype=backend.accumulator(dp.dtype)))
    return dp


def softmax_backward(p: Any, dp: Any, axis: int = -1) -> Any:
    """softmax_backward_ into a copy of ``dp``."""
    return softmax_backward_(p, dp.copy(), axis)


@op
def log_softmax(z: Any) -> Any:
    """log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))) along the last axis."""
    xp = backend.xp
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


@op
def cross_entropy(logits: Any, targets: Any, ignore: int = -1, grad_scale: Any = 1.0) -> tuple[Any, Any]:
    """Mean token cross-entropy and its gradient w.r.t. the logits.

        L = (1/N) sum_n [log sum_v exp z_nv - z_n,y_n],   dL/dz_nv = (softmax(z_n)_v - [v = y_n]) / N

    Targets equal to ``ignore`` count for nothing (padding, unlabelled MQAR positions; N counts the
    others). The gradient is multiplied by ``grad_scale`` (fp16's loss scale: softmax(z)/N for
    N = 4096 lies below fp16's smallest number) before it is rounded to the logits' dtype. Returns
    (loss as a 0-d device array summed in float64, dlogits); nothing is read on the host."""
    # d: L = mean_n (log sum_v exp z_nv - z_n,y_n):  dz = (softmax(z) - onehot(y)) / count, 0 on ignored rows
    xp = backend.xp
    z = wide(logits.reshape(-1, logits.shape[-1]))
    t = targets.reshape(-1)
    valid = t != ignore
    count = xp.maximum(valid.sum(), 1)  # a device scalar: no host sync
    rows, picked = xp.arange(t.shape[0]), xp.where(valid, t, 0)
    logp = log_softmax(z)
    loss = (-logp[rows, picked] * valid).sum(dtype=xp.float64) / count
    dz = xp.exp(logp)
    dz[rows, picked] -= 1.0
    dz *= (valid * (grad_scale / count))[:, None]
    return loss, dz.astype(logits.dtype).reshape(logits.shape)


__all__ = ["softmax_", "softmax", "softmax_backward_", "softmax_backward", "log_softmax", "cross_entropy"]
