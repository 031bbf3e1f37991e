"""Training health: what a learner is taught to watch, measured on the device at the log cadence.

Per parameter group (the embedding, each block's mixers and network, the head; a group is the
residual sub-block with its norm):

    gradient norm        |g|                 before clipping, the mean gradient of the step
    update-to-weight     |dtheta| / |theta|  dtheta = the AdamW step (lr x its update, decay included);
                                             ~1e-3 is the folk rule: much less learns nothing, much more
                                             rewrites the weights every step
    residual RMS         sqrt(mean(x^2))     of the residual stream after each block (mean over micro-batches)

The optimizer keeps every trainable tensor in one flat buffer (``optim.AdamW``), and a group's tensors
are a contiguous range of it, so a group's squared norm is one dot product of that range with itself.
The trainer measures only the steps it logs and fetches the figures there (one host read, with the
loss): every other step pays one device scalar operation, the clipped-steps counter.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.core import Parameter
from baby.nn.model import GPT
from baby.optim import AdamW


def parameter_groups(model: GPT) -> list[tuple[str, list[Parameter]]]:
    """(label, parameters) in model order: embedding, block<i>.<variant> per sub-block, head."""
    groups = [("embedding", [model.tok.weight] + ([model.pos.weight] if model.pos is not None else []))]
    for i, block in enumerate(model.blocks):
        for part in block.parts:
            groups.append((f"block{i}.{part.inner.registry_name}", part.parameters()))
    head = model.norm.parameters() + (model.head.parameters() if model.head is not None else [])
    groups.append(("head", head + ([model.head_bias] if model.head_bias is not None else [])))
    seen: dict[str, int] = {}
    out = []
    for label, params in groups:  # the same variant twice in a block (mha+mha): number the second
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label}#{seen[label]}", params))
    return out


class Health:
    """The figures of one step, left on the device as one vector (``read`` turns it into a dict)."""

    def __init__(self, model: GPT, opt: AdamW) -> None:
        groups = parameter_groups(model)
        self.labels = [label for label, _ in groups]
        self.n_blocks = len(model.blocks)
        group_of = {id(p): g for g, (_, params) in enumerate(groups) for p in params}
        starts, ends, owner, offset = [], [], [], 0
        for p in opt.params:  # the flat buffer's layout (frozen tensors are not in it)
            g, n = group_of[id(p)], p.data.size
            if owner and owner[-1] == g and ends[-1] == offset:
                ends[-1] = offset + n
            else:
                starts.append(offset)
                ends.append(offset + n)
                owner.append(g)
            offset += n
        xp = backend.xp
        self.ranges = list(zip(starts, ends))
        # ranges -> groups (a group split by frozen tensors has several ranges)
        member = numpy.zeros((len(groups), len(owner)))
        member[owner, numpy.arange(len(owner))] = 1.0
        self.member = xp.asarray(member)
        self.residual: list[Any] = []
        self.before: Any = None  # (3, N): gradient, update, weights of the measured step

    def squared_norms(self, rows: Any) -> Any:
        """(R, groups): per row of (R, N) flat vectors, each group's sum of squares, as one dot product
        per contiguous range (BLAS reads the range once, no temporaries; fp16 is summed in fp32)."""
        xp = backend.xp
        if rows.dtype == xp.float16:
            rows = rows.astype(xp.float32)
        sums = xp.stack([xp.stack([xp.dot(r[s:e], r[s:e]) for s, e in self.ranges]) for r in rows])
        return sums.astype(xp.float64) @ self.member.T

    def add_residual(self, rms: list[Any]) -> None:
        if rms:  # a model of no blocks (n_layers=0, a bigram model) has no residual stream to measure
            self.residual.append(backend.xp.stack(rms))

    def before_step(self, opt: AdamW) -> None:
        """Keep the gradient (clipping scales it in place; in fp16 the unscaled fp32 one) and the
        weights before the update."""
        weights = opt.master if opt.mixed else opt.flat  # fp16: the fp32 masters carry the true update
        self.before = backend.xp.empty((3, weights.size), dtype=backend.accumulator(weights.dtype))
        self.before[0] = opt.grad
        self.before[2] = weights

    def after_step(self, opt: AdamW) -> Any:
        xp = backend.xp
        xp.subtract(opt.master if opt.mixed else opt.flat, self.before[2], out=self.before[1])  # the update made
        grad_sq, step_sq, weight_sq = self.squared_norms(self.before)
        residual = xp.stack(self.residual).mean(axis=0) if self.residual else xp.zeros(self.n_blocks)
        out = xp.concatenate([xp.sqrt(grad_sq), xp.sqrt(step_sq / xp.maximum(weight_sq, 1e-30)), residual])
        self.residual, self.before = [], None
        return out

    def read(self, vector: Any) -> dict[str, Any]:
        """The host dict of one step's vector: grad_norm and update_ratio per group, residual_rms per block."""
        values = [float(v) for v in backend.to_host(vector)]
        n = len(self.labels)
        return {"grad_norm": dict(zip(self.labels, values[:n])),
                "update_ratio": dict(zip(self.labels, values[n:2 * n])),
                "residual_rms": values[2 * n:]}
