"""nft: network-free. The feed-forward slot holds an AFT-style causal mixer (Zhai et al. 2021,
"AFT-simple" made causal) instead of a per-token network; O(T * C) per sequence:

    q, k, v = split(x W_qkv + b)               (n_emb each)
    w_s     = sigmoid(k_s)                      (per channel; = exp(log sigmoid(k_s)))
    y_t     = sigmoid(q_t) * (sum_{s<=t} w_s v_s) / (sum_{s<=t} w_s)
    out     = y W_o + b_o

Both sums are prefix sums (cumsum over time). AFT weights tokens by exp(k); we use exp(log sigmoid(k)),
i.e. AFT with the key bounded above by 0: the weights lie in (0, 1), so the prefix sums cannot
overflow (exp(k) overflows fp32 at k = 88 and fp16 at k = 11) and no max-shift is needed (a shift by
the maximum over time would look into the future). Relative weights still span (0, inf).

Decoding keeps the two running sums, (B, n_emb) each, whatever the length: O(1) memory per token.
Padding positions (ctx.valid False) get weight 0."""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Module, register
from baby.nn.layers import Linear, sigmoid
from baby.nn.network.common import residual_std


def reverse_cumsum(a: Any, axis: int) -> Any:
    """out[t] = sum over s >= t of a[s]: the backward of a cumsum."""
    xp = backend.xp
    return xp.flip(xp.cumsum(xp.flip(a, axis), axis=axis), axis)


@register("network", "nft")
class NetworkFree(Module):
    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.width = cfg.n_emb
        self.qkv = Linear(rng, cfg.n_emb, 3 * cfg.n_emb, bias=cfg.c_bias)
        self.proj = Linear(rng, cfg.n_emb, cfg.n_emb, bias=cfg.c_bias, std=residual_std(cfg))
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        xp = backend.xp
        c = self.width
        qkv = self.qkv(x)
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        sig_k = sigmoid(k)
        valid = ctx.valid if ctx.valid is not None and ctx.valid.shape == x.shape[:2] else None
        w = sig_k if valid is None else sig_k * valid[..., None]
        num = xp.cumsum(w * v, axis=1)
        den = xp.cumsum(w, axis=1)
        if ctx.decoding:  # continue the running sums of the earlier positions
            state = ctx.module_state(self)
            if "num" in state:
                num += state["num"][:, None]
                den += state["den"][:, None]
            state["num"], state["den"] = num[:, -1].copy(), den[:, -1].copy()
        # a sequence that starts with padding has den = 0 (and num = 0) there: divide by 1 (avg = 0);
        # den + tiny made backward's davg / den overflow to inf and then NaN
        den = xp.where(den > 0, den, 1.0)
        avg = num / den
        gate = sigmoid(q)
        if not ctx.decoding:
            self.cache = v, w, sig_k, den, avg, gate, valid
        return self.proj(gate * avg)

    def backward(self, dout: Any) -> Any:
        xp = backend.xp
        v, w, sig_k, den, avg, gate, valid = self.cache
        self.cache = None
        dz = self.proj.backward(dout)
        dq = dz * avg * gate * (1.0 - gate)
        davg = dz * gate
        dnum = davg / den  # avg = num / den
        dden = -dnum * avg
        dwv = reverse_cumsum(dnum, axis=1)  # num_t = sum_{s<=t} w_s v_s
        dv = dwv * w
        dw = dwv * v + reverse_cumsum(dden, axis=1)
        if valid is not None:
            dw *= valid[..., None]
        dk = dw * sig_k * (1.0 - sig_k)
        return self.qkv.backward(xp.concatenate([dq, dk, dv], axis=-1))
