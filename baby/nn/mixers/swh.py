"""swh: switch-head. Every head is computed; per token a gate picks exactly one head (hard top-1) and
only that head's output reaches the output projection:

    z_t = (x_t W_g + b_g) / r_temp,   g_t = softmax(z_t),   c_t = argmax_h z_{t,h}
    m_{t,h} = 1 if h == c_t else 0    (one-hot)
    out_t = W_o concat_h(m_{t,h} * y_{t,h})  =  W_o[rows of head c_t] y_{t,c_t} + b_o

The argmax has no derivative, so the gate is trained with a straight-through estimator:

    forward uses m (hard); backward uses dL/dg_{t,h} := dL/dm_{t,h} = <dL/d(mixed)_{t,h}, y_{t,h}>

that is, the gate's parameters (and, through the gate, the block input) receive exactly the gradient
they would receive if the forward had mixed the heads softly, out_t = W_o concat_h(g_{t,h} y_{t,h}),
evaluated at the hard forward's upstream gradient. Every other gradient (Q/K/V of the heads, the
output projection, the input through the heads) is the exact derivative of the hard forward: a head
that was not chosen at position t gets no gradient from t's output.

Setting ``straight_through = False`` on an instance makes backward return the exact derivative of the
hard forward, in which the gate gets no gradient at all (for finite-difference checks: the
straight-through gradient is a surrogate, not a derivative, so differences cannot verify it).
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import register
from baby.nn.mixers.head_attention import GatedHeadAttention
from baby.nn.mixers.kit import heads_first, heads_last


@register("mixer", "swh")
class SwitchHead(GatedHeadAttention):
    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        super().__init__(cfg, rng)
        self.straight_through = True

    def choose(self, x: Any) -> tuple[Any, Any]:
        """(soft gate g, one-hot choice m), both (B, T, H)."""
        z, g = self.gate.scores(x)
        return g, (backend.xp.arange(self.n_heads) == z.argmax(axis=-1)[..., None]).astype(z.dtype)

    def mix_heads(self, x: Any, y: Any, ctx: Context) -> Any:
        g, m = self.choose(x)
        ctx.note(self, gate=g, chosen=m.argmax(axis=-1))
        if not ctx.decoding:
            self.gate_cache = y, g, m
        return y * heads_first(m)

    def mix_heads_backward(self, dy: Any) -> tuple[Any, Any]:
        # d: APPROXIMATE ON PURPOSE (straight-through, see the module docstring): m_h = onehot(argmax z)_h y_h has
        #    no derivative w.r.t. the gate, which would then never learn; the gate gets dL/dg_h := <dm_h, y_h>,
        #    the gradient of the soft mixture g_h y_h at this upstream gradient. Exact for the heads: dy_h = onehot_h dm_h
        y, g, m = self.gate_cache
        self.gate_cache = None
        dheads = dy * heads_first(m)
        if not self.straight_through:
            return dheads, None
        dg = heads_last((dy * y).sum(axis=-1, keepdims=True))  # straight through: dL/dg := dL/dm
        return dheads, self.gate.scores_backward(g, dg)
