"""swi: SwiGLU (LLaMA). One fused projection gives up and gate (n_emb -> 2 x hidden);
h = swish(gate) * up; a down projection brings h back to n_emb. Biases follow c_bias (LLaMA has none).

The hidden width is ``r_hidden * n_emb`` like mlp's; LLaMA's parameter-matched choice is
r_hidden = 8/3 (three matrices instead of two)."""
from __future__ import annotations

from typing import Any

import numpy

from baby.nn.context import Context
from baby.nn.core import Network, register
from baby.nn.layers import Linear, residual_std
from baby.nn.network.common import glu, glu_backward


@register("network", "swi")
class SwiGLU(Network):
    hf_families = ("llama",)

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.up_gate = Linear(rng, cfg.n_emb, 2 * cfg.hidden, bias=cfg.c_bias)  # [up | gate]
        self.down = Linear(rng, cfg.hidden, cfg.n_emb, bias=cfg.c_bias, std=residual_std(cfg))
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        h, cache = glu(self.up_gate(x), "swish")
        if not ctx.decoding:
            self.cache = cache
        return self.down(h)

    def backward(self, dy: Any) -> Any:
        # d: out = down(swish(gate) * up), [up | gate] = x W: down's backward, glu_backward, the fused projection's
        cache, self.cache = self.cache, None
        return self.up_gate.backward(glu_backward(cache, self.down.backward(dy)))
