"""mlp: expand to r_hidden x n_emb, GELU, project back (GPT-2's feed-forward)."""
from __future__ import annotations

from typing import Any

import numpy

from baby.nn.context import Context
from baby.nn.core import Module, Network, register
from baby.nn.layers import Linear, gelu, gelu_backward, residual_std


@register("network", "mlp")
class MLP(Network):
    hf_families = ("gpt2",)

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.up = self.projection(cfg, rng, cfg.n_emb, cfg.hidden, 0.02)
        self.down = self.projection(cfg, rng, cfg.hidden, cfg.n_emb, residual_std(cfg))
        self.cache: Any = None

    def projection(self, cfg: Any, rng: numpy.random.Generator, n_in: int, n_out: int, std: float) -> Module:
        """The two projections; ``lor`` overrides this to add a low-rank update to each."""
        return Linear(rng, n_in, n_out, bias=cfg.c_bias, std=std)

    def forward(self, x: Any, ctx: Context) -> Any:
        h = self.up(x)
        a, t = gelu(h)
        if not ctx.decoding:
            self.cache = h, t
        return self.down(a)

    def backward(self, dy: Any) -> Any:
        # d: out = down(gelu(h)), h = up(x): dx = up'(gelu'(h) * down'(dy))
        h, t = self.cache
        self.cache = None
        return self.up.backward(gelu_backward(h, t, self.down.backward(dy)))
