"""conv: dynamic causal convolution - each position computes its own small kernel from its input.

For each dilation di in turn (default 1, 2, 4: reach 1 + 2 + 4 + 8 = 15 tokens with 3 taps):

    w[t]   = softmax over taps of (cur[t] @ W_k + b_k)       shape (G, k): one kernel per channel group
    out[t] = sum_j w[t, g, j] * cur[t - off_j]               off_j = (k-1-j)*di: 2di, di, 0 for k = 3
    cur    = cur + sigmoid(out @ W_gate) * out                (gated update, one W_gate per dilation)

and the result is W_o cur. Positions before the start read zeros (causal left padding). Each of the G
groups of C/G channels shares one kernel. Padding tokens (ctx.valid False) are zeroed on the way in,
so a left-padded sequence gives the same outputs as the unpadded one.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Mixer, register
from baby.nn.layers import Linear, residual_std, sigmoid, softmax, softmax_backward
from baby.nn.mixers.kit import recent_window
from baby.nn.settings import ConfigError, Setting, require, split_list


def parse_dilations(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; every entry a positive integer."""
    parts = split_list("s_conv_dilations", text, ",", "1,2,4")
    try:
        dilations = [int(part) for part in parts]
    except ValueError:
        dilations = []
    if not dilations or min(dilations) < 1:
        raise ConfigError(f"s_conv_dilations={text!r}: expected positive integers joined by ',' (e.g. '1,2,4')")
    return dilations


def conv_groups(cfg: Any) -> int:
    """n_conv_groups, capped at n_emb (a group has at least one channel); it must divide n_emb."""
    groups = min(cfg.n_conv_groups, cfg.n_emb)
    if cfg.n_emb % groups:
        raise ConfigError(f"n_conv_groups={cfg.n_conv_groups} must divide n_emb={cfg.n_emb}")
    return groups


@register("mixer", "conv", settings=(
    Setting("n_conv_groups", int, 16, "conv: channel groups sharing one kernel (capped at n_emb; must divide it)",
            1, 1 << 16),
    Setting("n_conv_taps", int, 3, "conv: taps per kernel (k)", 1, 64),
    Setting("s_conv_dilations", str, "1,2,4", "conv: dilations applied in turn, positive integers joined by ','"),
    Setting("c_conv_static", bool, False, "conv: static kernels, learned per group and tap but not predicted "
            "from the token (an ablation of the dynamic conv)"),
))
class DynamicConv(Mixer):
    inside_view = "conv"

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        conv_groups(cfg)
        parse_dilations(cfg.s_conv_dilations)
        require(cfg.n_conv_taps >= 2, f"n_conv_taps={cfg.n_conv_taps}: conv needs at least 2 taps (with one, "
                "the softmax over taps is the constant 1 and its kernels get no gradient)")

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        width = cfg.n_emb
        self.groups, self.taps = conv_groups(cfg), cfg.n_conv_taps
        self.dilations = parse_dilations(cfg.s_conv_dilations)
        # kernel logits keep their bias whatever c_bias says (the original's "Linear with bias");
        # static kernels are that bias alone: one learned kernel per group and tap, at every position
        self.static = cfg.c_conv_static
        self.kernels = [Linear(rng, width, self.groups * self.taps, bias=True) for _ in self.dilations]
        if self.static:
            self.kernels = [linear.bias for linear in self.kernels]
        self.gates = [Linear(rng, width, width, bias=cfg.c_bias) for _ in self.dilations]
        self.proj = Linear(rng, width, width, bias=cfg.c_bias, std=residual_std(cfg))
        self.cache: Any = None

    def offsets(self, dilation: int) -> list[int]:
        """How far back each tap reads, oldest first: (k-1)*di, ..., di, 0."""
        return [(self.taps - 1 - j) * dilation for j in range(self.taps)]

    def forward(self, x: Any, ctx: Context) -> Any:
        keep = None
        if ctx.valid is not None:
            keep = ctx.valid[..., None].astype(x.dtype)
            x = x * keep
        state = self.decoding_state(ctx)
        cur, levels = x, []
        for i, dilation in enumerate(self.dilations):
            # zeros before the first position; when decoding, this level's last `reach` inputs so far
            padded = recent_window(state, i, cur, (self.taps - 1) * dilation)
            cur, level = self.level_forward(i, cur, padded, dilation)
            levels.append(level)
        if state is None:
            self.cache = keep, levels
        if ctx.capture is not None:  # per dilation: kernels (B, T, G, k), the padded input and the taps' sum
            ctx.note(self, kernels=[lv[1] for lv in levels], padded=[lv[0] for lv in levels],
                     outputs=[lv[2] for lv in levels], dilations=self.dilations,
                     offsets=[self.offsets(di) for di in self.dilations])
        return self.proj(cur)

    def level_forward(self, i: int, cur: Any, padded: Any, dilation: int) -> tuple[Any, tuple]:
        b, t, c = cur.shape
        g, k = self.groups, self.taps
        logits = self.kernels[i].data if self.static else self.kernels[i](cur)
        w = softmax(backend.xp.broadcast_to(logits, (b, t, g * k)).reshape(b, t, g, k), axis=-1)
        reach = padded.shape[1] - t
        out = backend.xp.zeros((b, t, g, c // g), dtype=cur.dtype)
        for j, off in enumerate(self.offsets(dilation)):  # k taps: a small fixed loop
            out += w[..., j, None] * padded[:, reach - off:reach - off + t].reshape(b, t, g, c // g)
        out = out.reshape(b, t, c)
        gate = sigmoid(self.gates[i](out))
        return cur + gate * out, (padded, w, out, gate, dilation)

    def backward(self, dy: Any) -> Any:
        # d: out = W_o cur_L, cur_{l+1} = level_l(cur_l), cur_0 = x * keep: the levels' backwards in reverse,
        #    then the padding mask again (padding positions get no gradient)
        keep, levels = self.cache
        self.cache = None
        dcur = self.proj.backward(dy)
        for i in reversed(range(len(levels))):
            dcur = self.level_backward(i, dcur, *levels[i])
        return dcur if keep is None else dcur * keep

    def level_backward(self, i: int, dnext: Any, padded: Any, w: Any, out: Any, gate: Any, dilation: int) -> Any:
        # d: next = cur + gate * out, gate = sigmoid(out W_g), out_t = sum_j w_tj cur_{t-off_j}, w = softmax(cur W_k + b_k):
        #    dout = dnext * gate + W_g-backward(dnext * out * gate (1 - gate)); dw_tj = <dout_t, cur_{t-off_j}> per group,
        #    dcur_{t-off_j} += w_tj dout_t, dlogits = w * (dw - rowsum(w * dw)); cur also feeds the identity path and W_k
        xp = backend.xp
        b, t, c = dnext.shape
        g, k = self.groups, self.taps
        reach = padded.shape[1] - t
        # cur_next = cur + gate * out,  gate = sigmoid(out @ W_gate)
        dout = dnext * gate + self.gates[i].backward(dnext * out * gate * (1.0 - gate))
        dout = dout.reshape(b, t, g, c // g)
        dpadded = xp.zeros_like(padded)
        dw = xp.empty_like(w)
        for j, off in enumerate(self.offsets(dilation)):
            window = slice(reach - off, reach - off + t)
            dw[..., j] = (dout * padded[:, window].reshape(b, t, g, c // g)).sum(axis=-1)
            dpadded[:, window] += (w[..., j, None] * dout).reshape(b, t, c)
        dlogits = softmax_backward(w, dw, axis=-1).reshape(b, t, g * k)
        if self.static:  # one logit vector shared by every position: its gradient is their sum
            self.kernels[i].grad += dlogits.sum(axis=(0, 1))
            return dnext + dpadded[:, reach:]
        # cur feeds the identity path, the taps (through padded) and the kernel logits
        return dnext + dpadded[:, reach:] + self.kernels[i].backward(dlogits)

    def mixing_flops(self, n_ctx: int) -> float:
        # per dilation: k multiply-adds per channel for the taps (the gate's matmul is a weight matmul)
        return 2.0 * self.taps * len(self.dilations) * self.proj.weight.shape[0]
