"""moh: mixture of heads. Every head is computed; a softmax gate over heads, read from the block
input, weighs their outputs before the output projection:

    g_t = softmax((x_t W_g + b_g) / r_temp)         (one weight per head, summing to 1)
    out_t = W_o concat_h(H * g_{t,h} * y_{t,h})

The factor H makes a uniform gate (g = 1/H, where training starts) exactly mha, so the gate only has
to learn deviations from it. O(T^2) like mha, plus an n_emb x n_heads gate.
"""
from __future__ import annotations

from typing import Any

from baby.nn.context import Context
from baby.nn.core import register
from baby.nn.mixers.head_attention import GatedHeadAttention
from baby.nn.mixers.kit import heads_first, heads_last


@register("mixer", "moh")
class MixtureOfHeads(GatedHeadAttention):
    def mix_heads(self, x: Any, y: Any, ctx: Context) -> Any:
        g = self.gate.scores(x)[1]
        ctx.note(self, gate=g)
        if not ctx.decoding:
            self.gate_cache = y, g
        return y * (self.n_heads * heads_first(g))

    def mix_heads_backward(self, dy: Any) -> tuple[Any, Any]:
        # d: m_h = H g_h y_h (g_h broadcast over the head width D): dy_h = H g_h dm_h,
        #    dg_h = H <dm_h, y_h> (summed over D), then through the gate's softmax (scores_backward)
        y, g = self.gate_cache
        self.gate_cache = None
        dg = self.n_heads * heads_last((dy * y).sum(axis=-1, keepdims=True))
        dx = self.gate.scores_backward(g, dg)
        return dy * (self.n_heads * heads_first(g)), dx
