"""The GPT stack: token (+ learned position) embeddings, blocks of residual sub-blocks (the mixers of
``c_attention`` in order, then the ``c_network``; pre-norm, or post-norm with ``c_sequence: "post"``),
a final norm and the output head (tied to the token embedding or its own matrix, with an optional
bias on the logits, ``c_head_bias``, as the original Little Baby's head has).
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn import core, variants
from baby.nn.context import Context
from baby.nn.core import Module
from baby.nn.layers import Dropout, Embedding, Linear, matmul2d, normal, param


class Residual(Module):
    """x + dropout(inner(norm(x))): one pre-norm residual sub-block."""

    def __init__(self, norm: Module, inner: Module, dropout: float) -> None:
        self.norm = norm
        self.inner = inner
        self.drop = Dropout(dropout)

    def forward(self, x: Any, ctx: Context) -> Any:
        return x + self.drop(self.inner(self.norm(x), ctx), ctx.rng)

    def backward(self, dy: Any) -> Any:
        # d: y = x + drop(inner(norm(x))): dx = dy + norm'(inner'(drop'(dy))); the identity path passes dy unchanged
        return dy + self.norm.backward(self.inner.backward(self.drop.backward(dy)))


class PostNormResidual(Module):
    """norm(x + dropout(inner(x))): one post-norm residual sub-block (the original GPT's and the
    original Little Baby's ``c_sequence: "post"``): the norm sits on the residual stream itself."""

    def __init__(self, norm: Module, inner: Module, dropout: float) -> None:
        self.norm = norm
        self.inner = inner
        self.drop = Dropout(dropout)

    def forward(self, x: Any, ctx: Context) -> Any:
        return self.norm(x + self.drop(self.inner(x, ctx), ctx.rng))

    def backward(self, dy: Any) -> Any:
        # d: y = norm(s), s = x + drop(inner(x)): ds = norm'(dy), dx = ds + inner'(drop'(ds))
        ds = self.norm.backward(dy)
        return ds + self.inner.backward(self.drop.backward(ds))


class Block(Module):
    """One layer: its residual sub-blocks in order."""

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        names = [("mixer", m) for m in cfg.mixers]
        if cfg.c_network:
            names.append(("network", cfg.c_network))
        sub_block = PostNormResidual if cfg.c_sequence == "post" else Residual
        self.parts = [sub_block(build_norm(cfg), variants.lookup(kind, name).cls(cfg, rng), cfg.r_dropout)
                      for kind, name in names]

    def forward(self, x: Any, ctx: Context) -> Any:
        for part in self.parts:
            x = part(x, ctx)
        return x

    def backward(self, dy: Any) -> Any:
        # d: x -> part_1 -> ... -> part_n: the chain rule runs the parts' backwards in reverse order
        for part in reversed(self.parts):
            dy = part.backward(dy)
        return dy


def build_norm(cfg: Any, kind: str = "") -> Module:
    return variants.lookup("norm", kind or cfg.c_norm).cls(cfg.n_emb)


class GPT(Module):
    def __init__(self, cfg: Any, n_vocab: int, seed: int | None = None) -> None:
        rng = numpy.random.default_rng(cfg.seed if seed is None else seed)
        self.cfg = cfg
        self.n_vocab = n_vocab
        self.tok = Embedding(rng, n_vocab, cfg.n_emb)
        self.pos = Embedding(rng, cfg.n_ctx, cfg.n_emb) if cfg.c_position == "learned" else None
        self.drop = Dropout(cfg.r_dropout)
        self.blocks = [Block(cfg, rng) for _ in range(cfg.n_layers)]
        self.norm = build_norm(cfg, cfg.c_norm_final)
        self.head = None if cfg.c_tie else Linear(rng, cfg.n_emb, n_vocab, bias=False)
        # one number per vocabulary id added to the logits (zeros at init, no weight decay)
        self.head_bias = param(numpy.zeros(n_vocab)) if cfg.c_head_bias else None
        self.h: Any = None
        chosen = {variants.lookup("mixer", m).cls for m in cfg.mixers}
        chosen |= {variants.lookup("network", cfg.c_network).cls} if cfg.c_network else set()
        for cls in chosen:
            cls.prepare_model(self, cfg)

    # ---- forward / backward ----------------------------------------------------------------------

    def context(self, ids: Any, start: int = 0, valid: Any = None, rng: Any = None,
                state: dict | None = None, grad_scale: Any = 1.0) -> Context:
        xp = backend.xp
        b, t = ids.shape
        if valid is not None:  # left padding: positions count real tokens only
            positions = xp.maximum(xp.cumsum(valid, axis=1) - 1, 0)
        else:
            positions = xp.broadcast_to(xp.arange(start, start + t)[None, :], (b, t))
        return Context(ids=ids, positions=positions, valid=valid, rng=rng, state=state, grad_scale=grad_scale)

    def forward(self, ids: Any, ctx: Context | None = None) -> Any:
        """Logits (B, T, V) for token ids (B, T)."""
        ctx = ctx or self.context(ids)
        if ids.shape[1] > self.cfg.n_ctx and not ctx.decoding:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds n_ctx={self.cfg.n_ctx}")
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(ctx.positions)
        x = self.drop(x, ctx.rng)
        for block in self.blocks:
            x = block(x, ctx)
            if ctx.residual is not None:  # training health, on the steps it is measured (a device scalar)
                ctx.residual.append(backend.xp.sqrt(backend.xp.mean(x * x, dtype=backend.xp.float64)))
        h = self.norm(x)
        self.h = h
        logits = self.head(h) if self.head is not None else matmul2d(h, self.tok.weight.data.T)
        if self.head_bias is not None:
            logits += self.head_bias.data
        return logits

    def backward(self, dlogits: Any) -> None:
        """Accumulate every parameter's gradient from dLoss/dlogits."""
        # d: logits = h @ W_head (+ b_head) (tied: h @ tok^T): dh = dlogits @ W_head^T, dW_head = h^T @ dlogits
        #    (tied: dtok += dlogits^T @ h), db_head = dlogits summed over every position (b is added to each);
        #    then the final norm, the blocks in reverse, dropout, the embeddings
        h, self.h = self.h, None
        if self.head_bias is not None:
            self.head_bias.grad += dlogits.reshape(-1, dlogits.shape[-1]).sum(axis=0)
        if self.head is not None:
            dh = self.head.backward(dlogits)
        else:
            w = self.tok.weight
            w.grad += backend.matmul(dlogits.reshape(-1, dlogits.shape[-1]).T, h.reshape(-1, h.shape[-1]))
            dh = matmul2d(dlogits, w.data)
        dx = self.norm.backward(dh)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        dx = self.drop.backward(dx)
        if self.pos is not None:
            self.pos.backward(dx)
        self.tok.backward(dx)

    def extra_loss(self) -> float:
        """Auxiliary losses of the last forward (MoE load balancing), already part of the gradient."""
        return sum(m.extra_loss() for m in self.modules() if m is not self)  # on the device: no sync

    # ---- sizes -------------------------------------------------------------------------------------

    def n_params(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    def n_bytes(self) -> int:
        return int(sum(p.data.nbytes for p in self.parameters()))

    def flops_per_token(self, n_ctx: int | None = None) -> dict[str, float]:
        """Forward FLOPs per token: 2 per multiply-add of every weight matrix used as a matmul (the
        token table only as the tied head) plus what mixers add for mixing over ``n_ctx`` positions
        (nanoGPT's convention: full T, no causal halving). Training is 3x forward."""
        t = n_ctx or self.cfg.n_ctx
        lookup_tables = {id(self.tok.weight)} | ({id(self.pos.weight)} if self.pos is not None else set())
        matmul = sum(p.data.size for p in self.parameters() if p.data.ndim == 2 and id(p) not in lookup_tables)
        if self.head is None:
            matmul += self.tok.weight.data.size
        mixing = sum(m.mixing_flops(t) for m in self.modules() if isinstance(m, core.Variant))
        forward = 2.0 * matmul + mixing
        return {"forward": forward, "training": 3.0 * forward}

    # ---- vocabulary growth (finetune) --------------------------------------------------------------

    def grow_vocab(self, n_vocab: int, seed: int) -> None:
        """Add rows for new tokens to the embedding (and the untied head, and zeros to the head bias);
        old rows stay as they are."""
        extra = n_vocab - self.n_vocab
        if extra <= 0:
            return
        rng = numpy.random.default_rng(seed)
        xp = backend.xp
        new = normal(rng, (extra, self.cfg.n_emb)).data
        self.tok.weight.data = xp.concatenate([self.tok.weight.data, new])
        self.tok.weight.grad = xp.zeros_like(self.tok.weight.data)
        if self.head is not None:
            cols = normal(rng, (self.cfg.n_emb, extra)).data
            self.head.weight.data = xp.concatenate([self.head.weight.data, cols], axis=1)
            self.head.weight.grad = xp.zeros_like(self.head.weight.data)
        if self.head_bias is not None:
            self.head_bias.data = xp.concatenate([self.head_bias.data, xp.zeros(extra, self.head_bias.data.dtype)])
            self.head_bias.grad = xp.zeros_like(self.head_bias.data)
        self.n_vocab = n_vocab
