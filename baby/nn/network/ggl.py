"""ggl: grouped gated linear. The n_emb channels are cut into G = n_groups groups of d = n_emb / G;
group g has its own value and gate projections (d -> d each), y_g = (x_g W_g + b_g) * sigmoid(x_g V_g + c_g),
then a channel shuffle (ShuffleNet) interleaves the groups so that the next layer's groups see
channels from every group (without it the G groups would be G separate narrow models).

Costs G times fewer weights and FLOPs than gln. The weights are stored as one (n_emb, 2d) matrix,
row block g being group g's [W_g | V_g], so the model's FLOPs count of 2-D matrices stays exact."""
from __future__ import annotations

from typing import Any

import numpy

from baby.nn.context import Context
from baby.nn.core import Network, register
from baby.nn.layers import normal, param
from baby.nn.network.common import glu, glu_backward
from baby.nn.settings import Setting, require


def channel_shuffle(x: Any, groups: int) -> Any:
    """(..., G*d) with channel g*d + j (group g, channel j) -> channel j*G + g: one channel of each
    group in turn. A permutation; channel_unshuffle is its inverse (and, as for any permutation,
    its transpose, hence its backward)."""
    lead, c = x.shape[:-1], x.shape[-1]
    return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def channel_unshuffle(x: Any, groups: int) -> Any:
    lead, c = x.shape[:-1], x.shape[-1]
    return x.reshape(*lead, c // groups, groups).swapaxes(-1, -2).reshape(*lead, c)


@register("network", "ggl", settings=(
    Setting("n_groups", int, 4, "ggl: channel groups, each with its own gated linear (must divide n_emb)",
            1, 1 << 16),
))
class GroupedGatedLinear(Network):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        require(cfg.n_emb % cfg.n_groups == 0,
                f"n_groups={cfg.n_groups} must divide n_emb={cfg.n_emb} (ggl splits the channels into equal groups)")

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.check_config(cfg)
        self.groups = cfg.n_groups
        self.width = cfg.n_emb // cfg.n_groups
        self.weight = normal(rng, (cfg.n_emb, 2 * self.width))  # row block g: [W_g | V_g]
        self.bias = param(numpy.zeros(2 * cfg.n_emb)) if cfg.c_bias else None
        self.cache: Any = None

    def forward(self, x: Any, ctx: Context) -> Any:
        b, t, c = x.shape
        g, d = self.groups, self.width
        xg = x.reshape(b * t, g, d).transpose(1, 0, 2)  # (G, N, d)
        fused = xg @ self.weight.data.reshape(g, d, 2 * d)  # one batched matmul for all groups
        if self.bias is not None:
            fused += self.bias.data.reshape(g, 1, 2 * d)
        y, cache = glu(fused, "sigmoid")  # (G, N, d)
        if not ctx.decoding:
            self.cache = xg, cache
        return channel_shuffle(y.transpose(1, 0, 2).reshape(b, t, c), g)

    def backward(self, dy: Any) -> Any:
        # d: y = shuffle(glu(x_g [W_g | V_g] + b_g)): unshuffle dy (a permutation's inverse is its transpose),
        #    glu_backward per group, dW_g = x_g^T dfused_g, db_g = sum(dfused_g), dx_g = dfused_g [W_g | V_g]^T
        xg, cache = self.cache
        self.cache = None
        b, t, c = dy.shape
        g, d = self.groups, self.width
        dyg = channel_unshuffle(dy, g).reshape(b * t, g, d).transpose(1, 0, 2)
        dfused = glu_backward(cache, dyg)  # (G, N, 2d)
        self.weight.grad += (xg.transpose(0, 2, 1) @ dfused).reshape(c, 2 * d)
        if self.bias is not None:
            self.bias.grad += dfused.sum(axis=1).reshape(-1)
        dxg = dfused @ self.weight.data.reshape(g, d, 2 * d).transpose(0, 2, 1)
        return dxg.transpose(1, 0, 2).reshape(b, t, c)
