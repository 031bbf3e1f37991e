"""PrefixMeanMixer: O(T) attention without queries, y_t = sum_{j<=t} w_j v_j / sum_{j<=t} w_j per
channel. aft and gla differ only in how the non-negative weights w come from the keys.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Mixer
from baby.nn.layers import Linear, residual_std
from baby.nn.mixers.kit import prefix_mean, prefix_mean_backward, training_valid


class PrefixMeanMixer(Mixer):
    """Query-free linear attention: K and V projections (one fused matmul), per-channel non-negative
    weights w = f(k) from a subclass, y_t = sum_{j<=t} w_j v_j / sum_{j<=t} w_j, output projection.
    O(T) in training (prefix sums), a fixed-size state while decoding. Padding tokens (ctx.valid) get
    a zero key and a zero weight, so they change nothing, and output 0."""

    inside_view = "prefix mean"

    eps: float = 0.0  # weight of an always-present zero value in the mean (see gla)

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.width = cfg.head_width
        self.kv = Linear(rng, cfg.n_emb, 2 * self.width, bias=cfg.c_bias)
        self.proj = Linear(rng, self.width, cfg.n_emb, bias=cfg.c_bias,
                           std=residual_std(cfg))
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
        y, den = prefix_mean(w, v, self.eps, self.decoding_state(ctx))
        if keep is not None:  # padding positions output 0, as in HeadAttention
            y *= keep
        if not ctx.decoding:
            self.cache = w, v, y, den, keep
        ctx.note(self, weights=w, values=v, denominators=den, means=y)
        return self.proj(y)

    def backward(self, dout: Any) -> Any:
        # d: out = W_o y, y = prefix_mean(w(k), v), [k | v] = x W_kv: dy from the projection, (dw, dv) from
        #    prefix_mean_backward, dk = key_weights_backward(dw); padding rows are zeroed at every stage, as forward
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
