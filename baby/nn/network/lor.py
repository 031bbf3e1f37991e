"""lor: low-rank adapted feed-forward. mlp's two projections each become a base projection plus a
scaled rank-r update (LoRA):  y = x W + b + (alpha / r) * (x A) B,  A: (in, r), B: (r, out).

``c_freeze_base`` has one meaning, owned here by ``freeze_base(model)``: only the A and B matrices of
every lor projection train (r * (in + out) numbers per projection instead of in * out); everything
else, bases, embeddings, norms and mixers, is frozen. The model applies it when it is built and
finetune calls it again after growing the vocabulary.

Initialisation: LoRA sets B = 0 so that a fresh adapter leaves a *pretrained* base unchanged. Here
base and adapter are created together (training starts from scratch, and a finetune loads adapters
that were trained with the base), so that property buys nothing, while B = 0 would make A's gradient
exactly zero on the first step. A and B are drawn like every other matrix, N(0, 0.02), which keeps
the update small ((alpha/r) * 0.02 * sqrt(r) ~ 0.1 of the base at the defaults) and both trainable."""
from __future__ import annotations

from typing import Any

import numpy

from baby.nn.core import Module, register
from baby.nn.layers import matmul2d, normal, param
from baby.nn.network.mlp import MLP
from baby.nn.settings import Setting, require


class LowRankLinear(Module):
    """y = x W (+ b) + scale * (x A) B over the last axis."""

    def __init__(self, rng: numpy.random.Generator, n_in: int, n_out: int, rank: int, scale: float,
                 bias: bool, std: float) -> None:
        self.weight = normal(rng, (n_in, n_out), std)
        self.bias = param(numpy.zeros(n_out)) if bias else None
        self.lora_a = normal(rng, (n_in, rank), 0.02)
        self.lora_b = normal(rng, (rank, n_out), 0.02)
        self.scale = scale
        self.cache: Any = None

    def base(self) -> list[Any]:
        return [p for p in (self.weight, self.bias) if p is not None]

    def forward(self, x: Any) -> Any:
        xa = matmul2d(x, self.lora_a.data)  # (.., r): the narrow path costs r * (in + out) per token
        y = matmul2d(x, self.weight.data)
        if self.bias is not None:
            y += self.bias.data
        y += self.scale * matmul2d(xa, self.lora_b.data)
        self.cache = x, xa
        return y

    def backward(self, dy: Any) -> Any:
        # d: y = x W + b + s (x A) B: dW = x^T dy, db = sum(dy), dB = s (x A)^T dy, dA = x^T (s dy B^T),
        #    dx = dy W^T + s dy B^T A^T  (a frozen base skips dW, db)
        x, xa = self.cache
        self.cache = None
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        if not self.weight.frozen:  # a frozen base gets no gradient: skip the (in x out) matmul
            self.weight.grad += x2.T @ dy2
        if self.bias is not None and not self.bias.frozen:
            self.bias.grad += dy2.sum(axis=0)
        dxa = self.scale * matmul2d(dy, self.lora_b.data.T)
        self.lora_b.grad += self.scale * (xa.reshape(-1, xa.shape[-1]).T @ dy2)
        self.lora_a.grad += x2.T @ dxa.reshape(-1, dxa.shape[-1])
        return matmul2d(dy, self.weight.data.T) + matmul2d(dxa, self.lora_a.data.T)


@register("network", "lor", settings=(
    Setting("n_rank", int, 8, "lor: rank r of the low-rank update of each projection (at most n_emb)", 1, 1 << 16),
    Setting("r_lora_alpha", float, 16.0, "lor: the update is scaled by r_lora_alpha / n_rank (LoRA's alpha)",
            1e-3, 1e4),
    Setting("c_freeze_base", bool, False, "lor: only the low-rank A/B matrices train; every other "
            "parameter (bases, embeddings, norms, mixers) is frozen (for finetuning)", role="optimisation"),
))
class LowRankMLP(MLP):
    """mlp (expand, GELU, project back) with both projections low-rank adapted."""

    hf_families = ()  # GPT-2's mlp has no low-rank update (exports as remote code)

    @classmethod
    def check_config_unchosen(cls, cfg: Any) -> None:
        require(not cfg.c_freeze_base, f"c_freeze_base applies only to c_network=lor (c_network={cfg.c_network!r} "
                "has no low-rank matrices to train)")

    @classmethod
    def prepare_model(cls, model: Module, cfg: Any) -> None:
        if cfg.c_freeze_base:
            freeze_base(model)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        require(cfg.n_rank <= min(cfg.n_emb, cfg.hidden),
                f"n_rank={cfg.n_rank} must not exceed n_emb={cfg.n_emb} (or the hidden width {cfg.hidden}): "
                "a rank-r update is only low-rank when r is below both sides of the projection")

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.check_config(cfg)
        super().__init__(cfg, rng)

    def projection(self, cfg: Any, rng: numpy.random.Generator, n_in: int, n_out: int, std: float) -> Module:
        return LowRankLinear(rng, n_in, n_out, cfg.n_rank, cfg.r_lora_alpha / cfg.n_rank, cfg.c_bias, std)

    def freeze_base(self, frozen: bool = True) -> None:
        """Mark this module's base weights and biases frozen (the optimizer and gradient check skip
        them); ``freeze_base(model)`` below does it for a whole model."""
        for p in self.up.base() + self.down.base():
            p.frozen = frozen


def freeze_base(model: Module) -> int:
    """c_freeze_base: freeze every parameter of ``model`` except the LoRA A/B matrices. Returns how
    many numbers still train (0: the model has no lor network). Call before the optimizer is built:
    it packs only the parameters trainable at that moment."""
    low_rank = {id(p) for m in model.modules() if isinstance(m, LowRankLinear) for p in (m.lora_a, m.lora_b)}
    for p in model.parameters():
        p.frozen = id(p) not in low_rank
    return int(sum(p.data.size for p in model.parameters() if not p.frozen))
