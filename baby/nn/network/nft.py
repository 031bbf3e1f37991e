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
from baby.nn.core import Network, register
from baby.nn.layers import Linear, residual_std, sigmoid
from baby.nn.mixers.kit import prefix_mean, prefix_mean_backward


@register("network", "nft")
class NetworkFree(Network):
    inside_view = "prefix mean"  # a prefix mean over positions, gated per token

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.width = cfg.n_emb
        self.qkv = Linear(rng, cfg.n_emb, 3 * cfg.n_emb, bias=cfg.c_bias)
        self.proj = Linear(rng, cfg.n_emb, cfg.n_emb, bias=cfg.c_bias, std=residual_std(cfg))
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        c = self.width
        qkv = self.qkv(x)
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        sig_k = sigmoid(k)
        valid = ctx.valid if ctx.valid is not None and ctx.valid.shape == x.shape[:2] else None
        w = sig_k if valid is None else sig_k * valid[..., None]
        # where nothing has weight yet (a sequence that starts with padding) the mean is 0
        avg, den = prefix_mean(w, v, 0.0, self.decoding_state(ctx))
        gate = sigmoid(q)
        if not ctx.decoding:
            self.cache = v, w, sig_k, den, avg, gate, valid
        ctx.note(self, weights=w, values=v, denominators=den, means=avg, gate=gate)
        return self.proj(gate * avg)

    def backward(self, dout: Any) -> Any:
        # d: out = W_o (gate * avg), gate = sigmoid(q), avg = prefix_mean(w, v), w = sigmoid(k):
        #    dq = dz * avg * gate (1 - gate), davg = dz * gate, (dw, dv) by prefix_mean_backward, dk = dw * w (1 - w)
        xp = backend.xp
        v, w, sig_k, den, avg, gate, valid = self.cache
        self.cache = None
        dz = self.proj.backward(dout)
        dq = dz * avg * gate * (1.0 - gate)
        davg = dz * gate
        dw, dv = prefix_mean_backward(davg, w, v, avg, den)
        if valid is not None:
            dw *= valid[..., None]
        dk = dw * sig_k * (1.0 - sig_k)
        return self.qkv.backward(xp.concatenate([dq, dk, dv], axis=-1))
