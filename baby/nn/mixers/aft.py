"""aft: attention-free transformer (AFT-simple, causal). K and V projections, no queries; per channel
c, position t is a softmax-over-time weighted mean of the values so far:

    k_t, v_t = x_t W_k + b_k, x_t W_v + b_v               (head_size channels each)
    w_t = exp(KEY_CAP * tanh(k_t / KEY_CAP))               (~ exp(k_t) for |k_t| << KEY_CAP)
    y_t = sum_{j<=t} w_j * v_j / sum_{j<=t} w_j            (element-wise, prefix sums: O(T))
    out_t = W_o y_t + b_o

Numerical stability: the usual trick subtracts the maximum key over the sequence before exp. That
maximum depends on later positions; it cancels in the ratio, but not in floating point: a large later
key changes the rounding of earlier outputs and, beyond a spread of ~87 (float32), underflows every
earlier weight to 0 and makes them 0/0. Instead the key is soft-capped to (-KEY_CAP, KEY_CAP): the
weights then lie in [2e-9, 5e8], so prefix sums over a million tokens stay far from the float32
limits with no shift at all, and position t is computed from positions <= t only, bit for bit.
Decoding keeps the two running sums: a fixed (B, head_size) x 2 state.
"""
from __future__ import annotations

from typing import Any

from baby import backend
from baby.nn.context import Context
from baby.nn.core import register
from baby.nn.mixers.prefix_mixer import PrefixMeanMixer

KEY_CAP = 20.0


@register("mixer", "aft")
class AttentionFree(PrefixMeanMixer):
    weight_cache: Any = None

    def key_weights(self, k: Any, ctx: Context) -> Any:
        xp = backend.xp
        # in >= fp32: the weights reach exp(20) = 5e8, and fp16 ends at 65504 (keys near 11-13)
        capped = xp.tanh(k.astype(backend.accumulator(k.dtype)) / KEY_CAP)
        w = xp.exp(KEY_CAP * capped)
        if not ctx.decoding:
            self.weight_cache = capped, w, k.dtype
        return w

    def key_weights_backward(self, dw: Any) -> Any:
        # d: w = exp(C tanh(k / C)): dw/dk = w (1 - tanh^2(k / C)), so dk = dw * w * (1 - capped^2)
        capped, w, dtype = self.weight_cache
        self.weight_cache = None
        # w = exp(CAP tanh(k / CAP)):  dk = dw * w * (1 - tanh^2), back in the keys' dtype
        return (dw * w * (1.0 - capped * capped)).astype(dtype, copy=False)
