"""Pieces shared by every attention variant: head split/merge, masks, causal softmax attention and its
backward, rotary positions, the KV cache, and two base modules:

- ``HeadAttention``: quadratic softmax attention. mha uses it as it is; gqa overrides ``kv_heads``,
  moh and swh override ``mix_heads``/``mix_heads_backward``, rfa overrides ``attend_heads``/
  ``attend_heads_backward`` (a sliding window instead of the whole causal prefix).
- ``PrefixMeanMixer``: O(T) attention without queries, y_t = sum_{j<=t} w_j v_j / sum_{j<=t} w_j per
  channel. aft and gla differ only in how the non-negative weights w come from the keys.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Module
from baby.nn.layers import Linear, softmax_, softmax_backward_

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

_MASKS: dict[tuple[Any, ...], Any] = {}


def blocked_value(dtype: Any) -> float:
    """A large finite negative: a row with every key blocked (a pad query) stays finite."""
    return float(numpy.finfo(dtype).min) / 4


def cached_mask(name: str, shape: tuple[int, ...], build: Any) -> Any:
    """A constant additive mask built once per (name, shape, dtype, library): ``build()`` returns a
    boolean array, True where a query may see a key."""
    key = (name, shape, numpy.dtype(backend.dtype).str, backend.xp.__name__)
    bias = _MASKS.get(key)
    if bias is None:
        bias = backend.xp.where(build(), 0.0, blocked_value(backend.dtype)).astype(backend.dtype)
        _MASKS[key] = bias
    return bias


def padding_bias(valid: Any, rank: int) -> Any:
    """Additive bias blocking padding keys: (B, Tk) bool -> (B, 1, ..., 1, Tk) of ``rank`` axes."""
    shape = (valid.shape[0],) + (1,) * (rank - 2) + (valid.shape[1],)
    return ((~valid).reshape(shape) * blocked_value(backend.dtype)).astype(backend.dtype)


def training_valid(ctx: Context) -> Any:
    """The (B, T) padding mask of a full forward, or None. While decoding there is none: prompts are
    not padded then (the KV cache and recurrent states would have to remember it)."""
    return None if ctx.decoding else ctx.valid


def causal_bias(n_queries: int, n_keys: int, ctx: Context | None = None, rank: int = 4) -> Any:
    """Additive (.., Tq, Tk) bias: 0 where query i may see key j, very negative elsewhere. Queries are
    the last Tq of the Tk positions (a KV cache holds the earlier ones). Padding keys are blocked;
    ``rank`` is the number of axes of the scores the bias is added to."""
    def visible() -> Any:
        xp = backend.xp
        i = xp.arange(n_queries)[:, None] + (n_keys - n_queries)
        return xp.arange(n_keys)[None, :] <= i

    bias = cached_mask("causal", (n_queries, n_keys), visible)
    valid = training_valid(ctx) if ctx is not None else None
    return bias if valid is None else bias + padding_bias(valid, rank)


# ---- attention core ---------------------------------------------------------------------------------


def attend(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
    """softmax(q k^T * scale + bias) v for (..., Tq, D) queries; returns (output, probabilities).
    Leading axes broadcast, so (B, K, G, T, D) queries can share (B, K, 1, T, D) keys (gqa)."""
    s = q @ k.swapaxes(-1, -2)
    s *= scale
    s += bias
    p = softmax_(s)
    return p @ v, p


def attend_backward(dy: Any, q: Any, k: Any, v: Any, p: Any, scale: float) -> tuple[Any, Any, Any]:
    """Gradients of ``attend`` w.r.t. q, k, v, shaped like the broadcast product (a caller that
    broadcast keys over an axis sums their gradients over it)."""
    dv = p.swapaxes(-1, -2) @ dy
    ds = softmax_backward_(p, dy @ v.swapaxes(-1, -2))
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
    KV cache. Hooks: ``kv_heads`` (gqa: fewer K/V heads), ``mix_heads``/``mix_heads_backward`` (moh,
    swh: combine head outputs before the output projection), ``attend_heads``/
    ``attend_heads_backward`` (rfa: which keys each query sees)."""

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
        self.attn_cache: Any = None

    def kv_heads(self, cfg: Any) -> int:
        return cfg.n_heads

    # hooks: how head outputs (B, H, T, D) are combined before the output projection
    def mix_heads(self, x: Any, y: Any, ctx: Context) -> Any:
        return y

    def mix_heads_backward(self, dy: Any) -> tuple[Any, Any]:
        """Returns (gradient w.r.t. head outputs, extra gradient w.r.t. the block input or None)."""
        return dy, None

    # hooks: attention of (B, H, T, D) queries over (B, K, T, D) keys/values, cache included
    def attend_heads(self, q: Any, k: Any, v: Any, ctx: Context) -> Any:
        """Every query sees every earlier key (and itself). While decoding the keys/values of earlier
        calls come from the KV cache. Query heads are grouped by the K/V head they share, so gqa's
        keys are broadcast, never copied."""
        if ctx.decoding:
            k, v = cache_append(ctx.module_state(self), k, v, self.n_ctx)
        b, h, t, d = q.shape
        q = q.reshape(b, self.n_kv, h // self.n_kv, t, d)
        k, v = k[:, :, None], v[:, :, None]
        y, p = attend(q, k, v, causal_bias(t, k.shape[3], ctx, rank=5), self.scale)
        valid = training_valid(ctx)
        if valid is not None:  # padding queries output 0 (left padding: they would average blocked keys)
            keep = valid[:, None, None, :, None].astype(p.dtype)
            p *= keep
            y *= keep
        if not ctx.decoding:
            self.attn_cache = q, k, v, p
        return y.reshape(b, h, t, d)

    def attend_heads_backward(self, dy: Any) -> tuple[Any, Any, Any]:
        q, k, v, p = self.attn_cache
        self.attn_cache = None
        b, kv, g, t, d = q.shape
        dq, dk, dv = attend_backward(dy.reshape(q.shape), q, k, v, p, self.scale)
        return dq.reshape(b, kv * g, t, d), dk.sum(axis=2), dv.sum(axis=2)

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
        y = self.mix_heads(x, self.attend_heads(q, k, v, ctx), ctx)
        if not ctx.decoding:
            self.cache = rot, qkv.shape
        return self.proj(merge_heads(y))

    def backward(self, dout: Any) -> Any:
        rot, shape = self.cache
        self.cache = None
        h, kv = self.n_heads, self.n_kv
        dy, dx_extra = self.mix_heads_backward(split_heads(self.proj.backward(dout), h))
        dq, dk, dv = self.attend_heads_backward(dy)
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

    def mixing_flops(self, n_ctx: int) -> float:
        """QK^T and PV: 2 matmuls x 2 FLOPs x n_ctx keys x head width, per token."""
        return 4.0 * n_ctx * self.n_heads * self.head_dim


# ---- the prefix-mean (linear, query-free) module ------------------------------------------------------


def suffix_sum(x: Any, axis: int = 1) -> Any:
    """s[t] = sum over t' >= t: the backward of a prefix sum (cumsum)."""
    xp = backend.xp
    return xp.flip(xp.cumsum(xp.flip(x, axis=axis), axis=axis), axis=axis)


def prefix_mean(w: Any, v: Any, eps: float, state: dict[str, Any] | None) -> tuple[Any, Any]:
    """y_t = sum_{j<=t} w_j v_j / (eps + sum_{j<=t} w_j), per channel, for (B, T, C) w >= 0 and v.

    The sums are accumulated in at least float32 (fp16 would overflow and lose the small terms).
    With ``state`` (decoding) the running sums of earlier calls are added and the new totals kept:
    two (B, C) arrays, whatever the length so far. Returns (y, the safe denominator for backward);
    where nothing has any weight yet (only padding so far, eps = 0) y is 0."""
    xp = backend.xp
    acc = numpy.promote_types(w.dtype, numpy.float32)
    num = xp.cumsum(w * v, axis=1, dtype=acc)
    den = xp.cumsum(w, axis=1, dtype=acc)
    if state is not None:
        if "num" in state:
            num += state["num"][:, None]
            den += state["den"][:, None]
        state["num"], state["den"] = num[:, -1], den[:, -1]
    den = den + eps if eps else xp.where(den > 0, den, 1.0)
    return (num / den).astype(w.dtype), den


def prefix_mean_backward(dy: Any, w: Any, v: Any, y: Any, den: Any) -> tuple[Any, Any]:
    """Gradients of ``prefix_mean`` w.r.t. w and v. With num_t, den_t the prefix sums:
    dnum_t = dy_t / den_t, dden_t = -dy_t y_t / den_t; a prefix sum's backward is a suffix sum, so
    dv_j = w_j R_j and dw_j = v_j R_j + Q_j with R, Q the suffix sums of dnum and dden."""
    dnum = dy / den
    r = suffix_sum(dnum)
    q = suffix_sum(-dnum * y)
    return (v * r + q).astype(w.dtype), (w * r).astype(w.dtype)


class PrefixMeanMixer(Module):
    """Query-free linear attention: K and V projections (one fused matmul), per-channel non-negative
    weights w = f(k) from a subclass, y_t = sum_{j<=t} w_j v_j / sum_{j<=t} w_j, output projection.
    O(T) in training (prefix sums), a fixed-size state while decoding. Padding tokens (ctx.valid) get
    a zero key and a zero weight, so they change nothing, and output 0."""

    eps: float = 0.0  # weight of an always-present zero value in the mean (see gla)

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.width = cfg.head_width
        self.kv = Linear(rng, cfg.n_emb, 2 * self.width, bias=cfg.c_bias)
        self.proj = Linear(rng, self.width, cfg.n_emb, bias=cfg.c_bias,
                           std=0.02 / math.sqrt(2 * max(cfg.n_layers, 1)))
        self.cache: Any = None

    # hooks: per-channel weights from the keys (B, T, C) -> (B, T, C), >= 0, and their backward
    def key_weights(self, k: Any, ctx: Context) -> Any:
        raise NotImplementedError

    def key_weights_backward(self, dw: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any, ctx: Context) -> Any:
        kv = self.kv(x)
        k, v = kv[..., :self.width], kv[..., self.width:]
        valid = training_valid(ctx)
        keep = None if valid is None else valid[..., None].astype(kv.dtype)
        if keep is not None:
            k = k * keep
        w = self.key_weights(k, ctx)
        if keep is not None:
            w = w * keep
        y, den = prefix_mean(w, v, self.eps, ctx.module_state(self) if ctx.decoding else None)
        if keep is not None:  # padding positions output 0, as in HeadAttention
            y *= keep
        if not ctx.decoding:
            self.cache = w, v, y, den, keep
        return self.proj(y)

    def backward(self, dout: Any) -> Any:
        w, v, y, den, keep = self.cache
        self.cache = None
        dy = self.proj.backward(dout)
        if keep is not None:
            dy *= keep
        dw, dv = prefix_mean_backward(dy, w, v, y, den)
        if keep is not None:
            dw *= keep
        dk = self.key_weights_backward(dw)
        if keep is not None:
            dk *= keep
        return self.kv.backward(backend.xp.concatenate([dk, dv], axis=-1))

    def mixing_flops(self, n_ctx: int) -> float:
        """w*v, two prefix sums and a division per channel, and the weight function (~2)."""
        return 6.0 * self.width
