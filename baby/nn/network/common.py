"""The pieces several feed-forward variants share: the gated-linear-unit products (value *
sigmoid(gate) for gln/ggl, value * swish(gate) for swi) with their backward. The init scale of
residual projections is ``layers.residual_std`` (the mixers use it too)."""
from __future__ import annotations

# The gated linear units are ops (baby/ops/activations.py): ``fused`` holds [value | gate] along the
# last axis (one matmul produced both halves); glu returns (y, cache) and glu_backward(cache, dy) the
# gradient w.r.t. the fused input.
from baby.ops import GATES, glu, glu_backward

__all__ = ["GATES", "glu", "glu_backward"]
