"""HeadAttention: causal multi-head softmax attention, the base of mha, gqa, moh, swh and rfa.
mha uses it as it is; gqa overrides ``kv_heads``, moh and swh override ``mix_heads``/
``mix_heads_backward``, rfa overrides ``attend_heads``/``attend_heads_backward`` (a sliding window
instead of the whole causal prefix). ``GatedHeadAttention`` adds the per-head gate of moh and swh.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Mixer
from baby.nn.layers import Linear, residual_std
from baby.nn.mixers.kit import (
    HeadGate,
    attend,
    attend_backward,
    causal_bias,
    history_append,
    merge_heads,
    rope,
    rope_tables,
    split_heads,
    training_valid,
)
from baby.nn.settings import require


class HeadAttention(Mixer):
    """Causal multi-head softmax attention with a fused QKV projection, optional rotary positions and a
    KV cache. Hooks: ``kv_heads`` (gqa: fewer K/V heads), ``mix_heads``/``mix_heads_backward`` (moh,
    swh: combine head outputs before the output projection), ``attend_heads``/
    ``attend_heads_backward`` (rfa: which keys each query sees)."""

    uses_rope = True
    inside_view = "attention"
    hf_families = ("gpt2", "llama")

    @classmethod
    def score_floats(cls, cfg: Any, n_ctx: int) -> float:
        return cfg.n_heads * n_ctx  # the (B, H, T, T) probabilities backward needs

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        width = cfg.head_width // cfg.n_heads
        require(cfg.c_position != "rope" or (width >= 2 and width % 2 == 0),
                f"c_position='rope' rotates pairs of channels: the head width head_size/n_heads = "
                f"{cfg.head_width}/{cfg.n_heads} = {width} must be even and at least 2")

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
                           std=residual_std(cfg))
        self.cache: Any = None
        self.attn_cache: Any = None

    # hooks: how head outputs (B, H, T, D) are combined before the output projection
    def mix_heads(self, x: Any, y: Any, ctx: Context) -> Any:
        return y

    def mix_heads_backward(self, dy: Any) -> tuple[Any, Any]:
        """Returns (gradient w.r.t. head outputs, extra gradient w.r.t. the block input or None)."""
        # d: mix = identity: the gradient passes through
        return dy, None

    # hooks: attention of (B, H, T, D) queries over (B, K, T, D) keys/values, cache included
    def attend_heads(self, q: Any, k: Any, v: Any, ctx: Context) -> Any:
        """Every query sees every earlier key (and itself). While decoding the keys/values of earlier
        calls come from the KV cache. Query heads are grouped by the K/V head they share, so gqa's
        keys are broadcast, never copied."""
        if ctx.decoding:
            k, v = history_append(ctx.module_state(self), self.n_ctx, 2, k, v)
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
            if ctx.capture is not None:  # for baby.inspect: query head i reads K/V head i // group
                ctx.note(self, probs=p.reshape(b, h, t, -1), values=v[:, :, 0], heads=y.reshape(b, h, t, d),
                         group=h // self.n_kv)
        return y.reshape(b, h, t, d)

    def attend_heads_backward(self, dy: Any) -> tuple[Any, Any, Any]:
        # d: attend_backward per (K/V head, query head of its group); a key broadcast over the G query heads
        #    of its group (gqa) collects their gradients: dk, dv sum over the group axis
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
            rot = ctx.once(f"rope_tables:{d}", lambda: rope_tables(ctx.positions, d))  # shared by the layers
            q, k = rope(q, *rot), rope(k, *rot)
        y = self.mix_heads(x, self.attend_heads(q, k, v, ctx), ctx)
        if not ctx.decoding:
            self.cache = rot, qkv.shape
        return self.proj(merge_heads(y))

    def backward(self, dout: Any) -> Any:
        # d: out = W_o merge(mix(attend(R q, R k, v))), [q | k | v] = x W_qkv, R the rotary rotation:
        #    projection, mix_heads_backward, attend_heads_backward; R is orthogonal, so d(q) = R^T d(R q) =
        #    rope(., inverse=True); dq, dk, dv go back into one [dq | dk | dv] for W_qkv's backward
        rot, shape = self.cache
        self.cache = None
        h, kv = self.n_heads, self.n_kv
        dy, dx_extra = self.mix_heads_backward(split_heads(self.proj.backward(dout), h))
        dq, dk, dv = self.attend_heads_backward(dy)
        dqkv = backend.xp.empty(shape, dtype=dq.dtype)
        slots = dqkv[:, :, :h].transpose(0, 2, 1, 3), dqkv[:, :, h:h + kv].transpose(0, 2, 1, 3)
        if rot is not None:  # rotated back straight into their slots of [dq | dk | dv]
            rope(dq, *rot, inverse=True, out=slots[0])
            rope(dk, *rot, inverse=True, out=slots[1])
        else:
            slots[0][...], slots[1][...] = dq, dk
        dqkv[:, :, h + kv:] = dv.transpose(0, 2, 1, 3)
        dx = self.qkv.backward(dqkv.reshape(shape[0], shape[1], -1))
        if dx_extra is not None:
            dx += dx_extra
        return dx

    def mixing_flops(self, n_ctx: int) -> float:
        """QK^T and PV: 2 matmuls x 2 FLOPs x n_ctx keys x head width, per token."""
        return 4.0 * n_ctx * self.n_heads * self.head_dim


class GatedHeadAttention(HeadAttention):
    """HeadAttention whose head outputs are weighed by a per-token softmax gate over heads read from
    the block input (``kit.HeadGate``): the common set-up of moh and swh."""

    hf_families = ()  # the gate changes the math: no HF class computes it (exports as remote code)

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        super().__init__(cfg, rng)
        self.gate = HeadGate(cfg, rng)
        self.temp = cfg.r_temp
        self.gate_cache: Any = None
