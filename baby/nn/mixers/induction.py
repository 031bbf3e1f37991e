"""induction: "what came after this token last time?" - exact-match recall without attention.

For position t the index (``induction_index.py``) lists the last M earlier positions c_1..c_M that held
the same token id. Per head (H heads of width D):

    q_t = W_q h_t,   k_j = W_k h[c_j],   v_j = W_v h[c_j + 1]      (the token that FOLLOWED c_j)
    s_j = q_t . k_j / sqrt(D)   for usable candidates (c_j >= 0, c_j + 1 < t), -inf otherwise
    s_sink = q_t . sink_key / sqrt(D)                               (a learned key per head)
    p = softmax(s_1..s_M, s_sink),   y_t = sum_j p_j v_j + p_sink sink_value
    out_t = W_o concat_heads(y_t)

Scores are also divided by r_temp (1 by default), as in attention. The sink lets a position with no
usable candidate (or no trustworthy one) abstain. Cost per token is O(M * C): the time per token does
not grow with T. The candidates are gathered by index, so the backward of those gathers is a
scatter-add of the key/value gradients onto the positions they came from.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Mixer, register
from baby.nn.layers import Linear, param, residual_std, softmax_backward
from baby.nn.mixers.induction_index import build_index, grow_index
from baby.nn.mixers.kit import history_append, masked_softmax_
from baby.nn.settings import Setting, require

INDEX_KEY = "induction_index"  # ctx.once key and the decoding state shared by all induction layers


@register("mixer", "induction", settings=(
    Setting("n_induction_m", int, 5, "induction: earlier occurrences of the token scored per position (M)", 1, 64),
    Setting("n_induction_heads", int, 4, "induction: heads; must divide n_emb", 1, 1024),
    Setting("c_induction_sink", bool, True, "induction: a learned sink key/value lets a position abstain "
            "(false, an ablation: a position without an earlier occurrence outputs 0)"),
))
class Induction(Mixer):
    inside_view = "induction"

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        require(cfg.n_emb % cfg.n_induction_heads == 0,
                f"n_induction_heads={cfg.n_induction_heads} must divide n_emb={cfg.n_emb}")

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.check_config(cfg)
        width, heads = cfg.n_emb, cfg.n_induction_heads
        self.n_heads, self.head_dim, self.m = heads, width // heads, cfg.n_induction_m
        self.n_ctx = cfg.n_ctx
        self.scale = 1.0 / (math.sqrt(self.head_dim) * cfg.r_temp)
        self.qkv = Linear(rng, width, 3 * width, bias=cfg.c_bias)  # W_q, W_k, W_v side by side
        self.proj = Linear(rng, width, width, bias=cfg.c_bias, std=residual_std(cfg))
        # The sink: one key and one value per head (biases rather than matrices: no weight decay).
        self.sink = cfg.c_induction_sink
        sink_key = rng.normal(0.0, 0.02, (heads, self.head_dim))
        sink_value = rng.normal(0.0, 0.02, (heads, self.head_dim))  # drawn either way: same init otherwise
        self.sink_key = param(sink_key) if self.sink else None
        self.sink_value = param(sink_value) if self.sink else None
        self.cache: Any = None

    def index(self, ctx: Context) -> tuple[Any, Any]:
        """(candidates, usable mask), built once per forward and shared by every induction layer."""
        if ctx.decoding:
            state = ctx.state.setdefault(INDEX_KEY, {})
            return ctx.once(INDEX_KEY, lambda: grow_index(state, ctx.ids, ctx.valid, self.m, self.n_ctx))
        return ctx.once(INDEX_KEY, lambda: build_index(ctx.ids, ctx.valid, self.m))

    def forward(self, x: Any, ctx: Context) -> Any:
        xp = backend.xp
        b, t, c = x.shape
        h, d, m = self.n_heads, self.head_dim, self.m
        qkv = self.qkv(x).reshape(b, t, 3, h, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, D) each
        cand, mask = self.index(ctx)
        if ctx.decoding:  # candidates reach back into this layer's key/value history
            k, v = history_append(ctx.module_state(self), self.n_ctx, 1, k, v)
        n_keys = k.shape[1]

        # Gather keys at the candidates and values at their followers, as rows of (B*S, H, D).
        row0 = xp.arange(b, dtype=xp.int64)[:, None, None] * n_keys
        key_rows = row0 + xp.maximum(cand, 0)  # (B, T, M)
        value_rows = row0 + cand + 1  # cand >= -1, and cand + 1 < n_keys
        kc = k.reshape(b * n_keys, h, d)[key_rows]  # (B, T, M, H, D)
        vc = v.reshape(b * n_keys, h, d)[value_rows]
        if not ctx.decoding:  # unusable slots send their (zero) gradients to a spare row, see scatter_rows
            key_rows = xp.where(mask, key_rows, b * n_keys)
            value_rows = xp.where(mask, value_rows, b * n_keys)

        slots = m + 1 if self.sink else m
        scores = xp.empty((b, t, slots, h), dtype=x.dtype)  # entry m is the sink
        # (einsum contracts the small head axis without a (B, T, M, H, D) temporary: ~4x faster)
        scores[:, :, :m] = xp.einsum("bthd,btmhd->btmh", q, kc)
        if self.sink:
            scores[:, :, m] = xp.einsum("bthd,hd->bth", q, self.sink_key.data)
        scores *= self.scale
        usable = xp.ones((b, t, slots, 1), dtype=bool)  # the sink is always usable
        usable[:, :, :m, 0] = mask
        raw = None if ctx.capture is None else scores.copy()  # the softmax below works in place
        p = masked_softmax_(scores, usable, axis=2)
        if not self.sink:  # no candidate and no sink: nothing to copy, the position outputs 0
            p *= mask.any(axis=2)[:, :, None, None]

        y = xp.einsum("btmh,btmhd->bthd", p[:, :, :m], vc)
        if self.sink:
            y += p[:, :, m, :, None] * self.sink_value.data
        if not ctx.decoding:
            self.cache = q, kc, vc, p, key_rows, value_rows, n_keys
        ctx.note(self, candidates=cand, usable=mask, scores=raw, probs=p, values=vc, heads=y)
        return self.proj(y.reshape(b, t, c))

    def backward(self, dout: Any) -> Any:
        # d: y = sum_j p_j v_j + p_sink sv, p = softmax(s), s_j = q . k_j * scale, k_j = k[c_j], v_j = v[c_j + 1]:
        #    dp, ds, dq, dk_j, dv_j as written below; the gathers' backward is a scatter-add onto rows c_j, c_j + 1
        xp = backend.xp
        q, kc, vc, p, key_rows, value_rows, n_keys = self.cache
        self.cache = None
        b, t, m, h, d = kc.shape
        dy = self.proj.backward(dout).reshape(b, t, h, d)

        # y = sum_j p_j v_j (+ p_sink sink_value): dp_j = <v_j, dy>, dv_j = p_j dy
        dp = xp.empty_like(p)
        dp[:, :, :m] = xp.einsum("btmhd,bthd->btmh", vc, dy)
        dvc = p[:, :, :m, :, None] * dy[:, :, None]
        if self.sink:
            dp[:, :, m] = xp.einsum("bthd,hd->bth", dy, self.sink_value.data)
            self.sink_value.grad += xp.einsum("bth,bthd->hd", p[:, :, m], dy)

        # p = softmax(s): ds = p * (dp - sum_j p_j dp_j); blocked candidates (and abstaining rows
        # without a sink) have p = 0, hence ds = 0. s_j = q . k_j * scale.
        ds = softmax_backward(p, dp, axis=2)
        ds *= self.scale
        dq = xp.einsum("btmh,btmhd->bthd", ds[:, :, :m], kc)
        dkc = ds[:, :, :m, :, None] * q[:, :, None]
        if self.sink:
            dq += ds[:, :, m, :, None] * self.sink_key.data
            self.sink_key.grad += xp.einsum("bth,bthd->hd", ds[:, :, m], q)

        # Backward of the gathers: each candidate's gradient is added back onto the row it was read from.
        dk = scatter_rows(b * n_keys, key_rows, dkc)
        dv = scatter_rows(b * n_keys, value_rows, dvc)
        dqkv = xp.empty((b, t, 3, h, d), dtype=dy.dtype)
        dqkv[:, :, 0] = dq
        dqkv[:, :, 1] = dk.reshape(b, t, h, d)
        dqkv[:, :, 2] = dv.reshape(b, t, h, d)
        return self.qkv.backward(dqkv.reshape(b, t, 3 * h * d))

    def mixing_flops(self, n_ctx: int) -> float:
        # scores and weighted values over M candidates + the sink: 2 x 2 FLOPs x (M + 1) x width
        return 4.0 * (self.m + 1) * self.n_heads * self.head_dim


def scatter_rows(n_rows: int, rows: Any, grads: Any) -> Any:
    """sum over (b, t, j) of grads[b, t, j] added onto row rows[b, t, j]: the backward of the gathers.

    Usually a job for ``backend.scatter_add`` (a row can be gathered by several positions). Here one
    candidate slot j at a time suffices, with plain ``+=``: within a slot the usable rows are all
    distinct, because a position c is the j-th earlier occurrence of exactly one later position (the
    j-th next occurrence of its token), and its follower c + 1 likewise. Unusable slots point at a
    spare row n_rows that is dropped. This is ~6x faster than numpy.add.at."""
    xp = backend.xp
    b, t, m = rows.shape
    out = xp.zeros((n_rows + 1,) + grads.shape[3:], dtype=grads.dtype)
    for j in range(m):  # M is a small constant
        out[rows[:, :, j].reshape(-1)] += grads[:, :, j].reshape((b * t,) + grads.shape[3:])
    return out[:n_rows]
