"""mlp: expand to r_hidden x n_emb, GELU, project back (GPT-2's feed-forward)."""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby.nn.context import Context
from baby.nn.core import Module, register
from baby.nn.layers import Linear, gelu, gelu_backward


@register("network", "mlp")
class MLP(Module):
    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.up = Linear(rng, cfg.n_emb, cfg.hidden, bias=cfg.c_bias)
        self.down = Linear(rng, cfg.hidden, cfg.n_emb, bias=cfg.c_bias,
                           std=0.02 / math.sqrt(2 * max(cfg.n_layers, 1)))
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        h = self.up(x)
        a, t = gelu(h)
        self.cache = h, t
        return self.down(a)

    def backward(self, dy: Any) -> Any:
        h, t = self.cache
        self.cache = None
        return self.up.backward(gelu_backward(h, t, self.down.backward(dy)))
