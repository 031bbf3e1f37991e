"""gln (alias lin): gated linear unit without expansion: y = (x W + b) * sigmoid(x V + c), n_emb -> n_emb.
W and V are one fused (n_emb, 2 n_emb) projection."""
from __future__ import annotations

from typing import Any

import numpy

from baby.nn.context import Context
from baby.nn.core import Network, register
from baby.nn.layers import Linear
from baby.nn.network.common import glu, glu_backward


@register("network", "gln", aliases=("lin",))
class GatedLinear(Network):
    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.value_gate = Linear(rng, cfg.n_emb, 2 * cfg.n_emb, bias=cfg.c_bias)  # [value | gate]
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        y, cache = glu(self.value_gate(x), "sigmoid")
        if not ctx.decoding:
            self.cache = cache
        return y

    def backward(self, dy: Any) -> Any:
        # d: y = value * sigmoid(gate), [value | gate] = x W + b: glu_backward, then the projection's backward
        cache, self.cache = self.cache, None
        return self.value_gate.backward(glu_backward(cache, dy))
