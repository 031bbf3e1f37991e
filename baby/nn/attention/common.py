"""Pieces shared by every attention variant: head split/merge, masks, causal softmax attention and its
backward, rotary positions, the KV cache, and ``HeadAttention``, the quadratic-attention module that
mha/gqa/moh/swh specialise by overriding a hook or two.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Module
from baby.nn.layers import Linear

# ---- head reshapes --------------------------------------------------------------------------------


def split_heads(x: Any, n_heads: int) -> Any:
    """(B, T, H*D) -> (B, H, T, D) as a view (matmul reads the strides directly)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(y: Any) -> Any:
    """(B, H, T, D) -> (B, T, H*D)."""
    b, h, t, d = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, t, h * d)


# ---- masks ------------------------------------------------------------------------------------------

_MASKS: dict[tuple[int, int, Any, str], Any] = {}


def blocked_value(dtype: Any) -> float:
    """A large finite negative: a row with every key blocked (a pad query) stays finite."""
    return float(numpy.finfo(dtype).min) / 4


def causal_bias(n_queries: int, n_keys: int, ctx: Context | None = None) -> Any:
    """Additive (.., Tq, Tk) bias: 0 where query i may see key j, very negative elsewhere. Queries are
    the last Tq of the Tk positions (a KV cache holds the earlier ones). Padding keys are blocked."""
    key = (n_queries, n_keys, numpy.dtype(backend.dtype).str, backend.xp.__name__)
    bias = _MASKS.get(key)
    if bias is None:
        xp = backend.xp
        i = xp.arange(n_queries)[:, None] + (n_keys - n_queries)
        j = xp.arange(n_keys)[None, :]
        bias = xp.where(j > i, blocked_value(backend.dtype), 0.0).astype(backend.dtype)
        _MASKS[key] = bias
    if ctx is not None and ctx.valid is not None and not ctx.decoding:
        pad = (~ctx.valid)[:, None, None, :] * blocked_value(backend.dtype)
        return bias + pad.astype(backend.dtype)
    return bias


# ---- attention core ---------------------------------------------------------------------------------


def softmax_rows_(s: Any) -> Any:
    """Row softmax in place over the last axis (scores are large; no copies)."""
    xp = backend.xp
    s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def attend(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
    """softmax(q k^T * scale + bias) v for (B, H, Tq, D) queries; returns (output, probabilities)."""
    s = q @ k.swapaxes(-1, -2)
    s *= scale
    s += bias
    p = softmax_rows_(s)
    return p @ v, p


def attend_backward(dy: Any, q: Any, k: Any, v: Any, p: Any, scale: float) -> tuple[Any, Any, Any]:
    """Gradients of ``attend`` w.r.t. q, k, v (the probabilities are not kept afterwards)."""
    dv = p.swapaxes(-1, -2) @ dy
    ds = dy @ v.swapaxes(-1, -2)
    ds -= (ds * p).sum(axis=-1, keepdims=True)
    ds *= p
    ds *= scale
    return ds @ k, ds.swapaxes(-1, -2) @ q, dv


# ---- rotary positions -------------------------------------------------------------------------------


def rope_tables(positions: Any, dim: int, base: float = 10000.0) -> tuple[Any, Any]:
    """cos and sin of shape (B or 1, 1, T, dim/2) for the rotate-half convention of LLaMA/GPT-NeoX."""
    xp = backend.xp
    inv = 1.0 / base ** (xp.arange(0, dim // 2, dtype=xp.float64) * 2.0 / dim)
    angles = positions.astype(xp.float64)[:, None, :, None] * inv
    return xp.cos(angles).astype(backend.dtype), xp.sin(angles).astype(backend.dtype)


def rope(x: Any, cos: Any, sin: Any, inverse: bool = False) -> Any:
    """Rotate (x1, x2) halves of the last axis by the angles; ``inverse`` rotates back (the backward)."""
    xp = backend.xp
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if inverse:
        sin = -sin
    return xp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


# ---- KV cache -------------------------------------------------------------------------------------


def cache_append(state: dict[str, Any], k: Any, v: Any, capacity: int) -> tuple[Any, Any]:
    """Append new (B, K, t, D) keys/values to a preallocated cache; return all keys/values so far.
    The model re-prefills instead of letting the cache pass ``capacity`` (n_ctx), so positions never
    wrap around."""
    xp = backend.xp
    if "k" not in state:
        b, h, _, d = k.shape
        state["k"] = xp.empty((b, h, capacity, d), dtype=k.dtype)
        state["v"] = xp.empty((b, h, capacity, d), dtype=v.dtype)
        state["n"] = 0
    n, t = state["n"], k.shape[2]
    if n + t > capacity:
        raise RuntimeError(f"KV cache of {capacity} positions overflowed; the model must re-prefill")
    state["k"][:, :, n:n + t] = k
    state["v"][:, :, n:n + t] = v
    state["n"] = n + t
    return state["k"][:, :, :n + t], state["v"][:, :, :n + t]


# ---- the quadratic-attention module ------------------------------------------------------------------


class HeadAttention(Module):
    """Causal multi-head softmax attention with a fused QKV projection, optional rotary positions and a
    KV cache. Variants override ``kv_heads`` (gqa) or ``mix_heads``/``mix_heads_backward`` (moh, swh)."""

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_width // cfg.n_heads
        self.n_kv = self.kv_heads(cfg)
        self.n_ctx = cfg.n_ctx
        self.rotary = cfg.c_position == "rope"
        self.scale = 1.0 / (math.sqrt(self.head_dim) * cfg.r_temp)
        width = (self.n_heads + 2 * self.n_kv) * self.head_dim
        self.qkv = Linear(rng, cfg.n_emb, width, bias=cfg.c_bias)
        self.proj = Linear(rng, cfg.head_width, cfg.n_emb, bias=cfg.c_bias,
                           std=0.02 / math.sqrt(2 * max(cfg.n_layers, 1)))
        self.cache: Any = None

    def kv_heads(self, cfg: Any) -> int:
        return cfg.n_heads

    # hooks: how head outputs (B, H, T, D) are combined before the output projection
    def mix_heads(self, x: Any, y: Any, ctx: Context) -> Any:
        return y

    def mix_heads_backward(self, dy: Any) -> tuple[Any, Any]:
        """Returns (gradient w.r.t. head outputs, extra gradient w.r.t. the block input or None)."""
        return dy, None

    def forward(self, x: Any, ctx: Context) -> Any:
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv, self.head_dim
        qkv = self.qkv(x).reshape(b, t, h + 2 * kv, d)
        q = qkv[:, :, :h].transpose(0, 2, 1, 3)
        k = qkv[:, :, h:h + kv].transpose(0, 2, 1, 3)
        v = qkv[:, :, h + kv:].transpose(0, 2, 1, 3)
        rot = None
        if self.rotary:
            rot = rope_tables(ctx.positions, d)
            q, k = rope(q, *rot), rope(k, *rot)
        if ctx.decoding:
            k, v = cache_append(ctx.module_state(self), k, v, self.n_ctx)
        k_full, v_full = self.expand_kv(k), self.expand_kv(v)
        y, p = attend(q, k_full, v_full, causal_bias(t, k.shape[2], ctx), self.scale)
        y = self.mix_heads(x, y, ctx)
        if not ctx.decoding:
            self.cache = (q, k_full, v_full, p, rot, qkv.shape)
        return self.proj(merge_heads(y))

    def expand_kv(self, k: Any) -> Any:
        """Repeat each of K key/value heads for its H/K query heads (no-op when K == H)."""
        reps = self.n_heads // self.n_kv
        return k if reps == 1 else backend.xp.repeat(k, reps, axis=1)

    def reduce_kv(self, dk: Any) -> Any:
        """Backward of expand_kv: sum the gradients of each group."""
        reps = self.n_heads // self.n_kv
        if reps == 1:
            return dk
        b, _, t, d = dk.shape
        return dk.reshape(b, self.n_kv, reps, t, d).sum(axis=2)

    def backward(self, dout: Any) -> Any:
        q, k, v, p, rot, shape = self.cache
        self.cache = None
        h, kv = self.n_heads, self.n_kv
        dy = split_heads(self.proj.backward(dout), h)
        dy, dx_extra = self.mix_heads_backward(dy)
        dq, dk, dv = attend_backward(dy, q, k, v, p, self.scale)
        dk, dv = self.reduce_kv(dk), self.reduce_kv(dv)
        if rot is not None:
            dq, dk = rope(dq, *rot, inverse=True), rope(dk, *rot, inverse=True)
        dqkv = backend.xp.empty(shape, dtype=dq.dtype)
        dqkv[:, :, :h] = dq.transpose(0, 2, 1, 3)
        dqkv[:, :, h:h + kv] = dk.transpose(0, 2, 1, 3)
        dqkv[:, :, h + kv:] = dv.transpose(0, 2, 1, 3)
        dx = self.qkv.backward(dqkv.reshape(shape[0], shape[1], -1))
        if dx_extra is not None:
            dx += dx_extra
        return dx


def _attention_flops(self: HeadAttention, n_ctx: int) -> float:
    # QK^T and PV: 2 matmuls x 2 FLOPs x n_ctx keys x head width, per token.
    return 4.0 * n_ctx * self.n_heads * self.head_dim


HeadAttention.mixing_flops = _attention_flops
