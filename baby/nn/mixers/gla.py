"""gla: gated linear attention, query-free (the README of the original also calls it lda). K and V
projections; each key, seen through a short causal depthwise convolution and a ReLU, becomes a
non-negative per-channel gate on its value; the gated values are averaged over the prefix:

    k_t, v_t = x_t W_k + b_k, x_t W_v + b_v                 (head_size channels each)
    a_t = sum_{i<K} u_i * k_{t-i} + c                        causal depthwise conv, K = n_gla_taps
                                                             (k before the first position is 0)
    g_t = ReLU(a_t)                                          element-wise gate, >= 0, often exactly 0
    y_t = sum_{j<=t} g_j * v_j / (EPS + sum_{j<=t} g_j)      normalisation by the gate mass so far
    out_t = W_o y_t + b_o

A token whose gate is 0 in a channel writes nothing there; the conv lets the gate depend on the last
K tokens (local order), the prefix mean gives unbounded reach in O(T). EPS acts as an always-present
zero value of weight EPS, so y is continuous where no gate has opened yet (y = 0 there). The taps
start as the identity (u_0 = 1, g = ReLU(k)). Decoding keeps the last K-1 keys and the two running
sums: a fixed-size state.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import register
from baby.nn.layers import param
from baby.nn.mixers.kit import recent_window
from baby.nn.mixers.prefix_mixer import PrefixMeanMixer
from baby.nn.settings import Setting


def causal_depthwise_conv(x: Any, taps: Any, padded: Any) -> Any:
    """out_t = sum_i taps[i] * x_{t-i} per channel for (B, T, C) x and (K, C) taps; ``padded`` is x
    after the K-1 inputs before it (``recent_window``)."""
    n_taps, t = taps.shape[0], x.shape[1]
    out = taps[0] * x
    for i in range(1, n_taps):  # K is a handful of taps, each a vectorized shift
        out += taps[i] * padded[:, n_taps - 1 - i:n_taps - 1 - i + t]
    return out


def causal_depthwise_conv_backward(dout: Any, taps: Any, padded: Any, dtaps: Any) -> Any:
    """Adds the taps' gradient into ``dtaps``; returns the gradient w.r.t. x."""
    # d: out_t = sum_i u_i k_{t-i}: du_i = sum_t dout_t k_{t-i}; dk_{t-i} += u_i dout_t (dout shifted back by i)
    n_taps, t = taps.shape[0], dout.shape[1]
    dpadded = backend.xp.zeros_like(padded)
    for i in range(n_taps):
        start = n_taps - 1 - i
        dtaps[i] += (dout * padded[:, start:start + t]).sum(axis=(0, 1))
        dpadded[:, start:start + t] += taps[i] * dout
    return dpadded[:, n_taps - 1:]


@register("mixer", "gla", aliases=("lda",), settings=(
    Setting("n_gla_taps", int, 4, "gla: taps K of the causal depthwise conv over the keys", 1, 64),
))
class GatedLinearAttention(PrefixMeanMixer):
    eps = 1e-3

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        super().__init__(cfg, rng)
        identity = numpy.zeros((cfg.n_gla_taps, self.width))
        identity[0] = 1.0
        self.taps = param(identity)
        self.shift = param(numpy.zeros(self.width)) if cfg.c_bias else None
        self.gate_cache: Any = None

    def key_weights(self, k: Any, ctx: Context) -> Any:
        padded = recent_window(self.decoding_state(ctx), "keys", k, self.taps.shape[0] - 1)
        a = causal_depthwise_conv(k, self.taps.data, padded)
        if self.shift is not None:
            a += self.shift.data
        if not ctx.decoding:
            self.gate_cache = a, padded
        return backend.xp.maximum(a, 0.0)

    def key_weights_backward(self, dw: Any) -> Any:
        # d: g = ReLU(a), a = conv(k) + c: da = dw * [a > 0], dc = sum(da), dk and the taps' du by the conv's backward
        a, padded = self.gate_cache
        self.gate_cache = None
        da = dw * (a > 0)
        if self.shift is not None:
            self.shift.grad += da.sum(axis=(0, 1))
        return causal_depthwise_conv_backward(da, self.taps.data, padded, self.taps.grad)

    def mixing_flops(self, n_ctx: int) -> float:
        return super().mixing_flops(n_ctx) + 2.0 * self.taps.shape[0] * self.width
