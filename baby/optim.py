"""AdamW with decoupled weight decay, warmup + cosine schedule, gradient-norm clipping.

The optimizer packs every trainable parameter (and its gradient) into one flat buffer and rebinds the
parameters to views of it, so zeroing, clipping and the Adam update are a handful of large vectorised
operations instead of a Python loop over tensors. Modules must therefore update ``p.data`` and
``p.grad`` in place (``+=``, ``[...] =``), never rebind them.
"""
from __future__ import annotations

import math
from typing import Any

from baby import backend
from baby.nn.core import Parameter


def lr_at(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to ``floor`` at ``total``."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


class AdamW:
    def __init__(self, params: list[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.1) -> None:
        xp = backend.xp
        self.params = [p for p in params if not p.frozen]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        sizes = [p.data.size for p in self.params]
        total = sum(sizes)
        dtype = self.params[0].data.dtype if self.params else backend.dtype
        self.flat = xp.empty(total, dtype=dtype)
        self.flat_grad = xp.zeros(total, dtype=dtype)
        self.decay_mask = xp.zeros(total, dtype=dtype)
        offset = 0
        for p, n in zip(self.params, sizes):
            view = self.flat[offset:offset + n].reshape(p.data.shape)
            view[...] = p.data
            p.data = view
            p.grad = self.flat_grad[offset:offset + n].reshape(p.data.shape)
            if p.decay:
                self.decay_mask[offset:offset + n] = 1.0
            offset += n
        self.m = xp.zeros(total, dtype=xp.float32 if dtype == xp.float16 else dtype)
        self.v = xp.zeros_like(self.m)
        self.t = 0

    def zero_grad(self) -> None:
        self.flat_grad.fill(0)

    def clip(self, max_norm: float) -> Any:
        """Scale gradients so their global L2 norm is at most max_norm (0: off); returns the norm
        before, as a device scalar (no host sync: the trainer reads it at the log cadence)."""
        xp = backend.xp
        g = self.flat_grad.astype(xp.float64) if self.flat_grad.dtype != xp.float64 else self.flat_grad
        norm = xp.sqrt((g * g).sum())
        if max_norm > 0:  # factor 1 below the threshold, so the gradients stay bit for bit
            factor = xp.minimum(1.0, max_norm / (norm + 1e-6))
            self.flat_grad *= xp.where(norm > max_norm, factor, 1.0).astype(self.flat_grad.dtype)
        return norm

    def step(self, lr: float | None = None) -> None:
        xp = backend.xp
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        g = self.flat_grad
        self.m *= b1
        self.m += (1 - b1) * g
        self.v *= b2
        self.v += (1 - b2) * (g * g)
        # decoupled decay: shrink the weights directly, never through the gradient
        if self.weight_decay:
            self.flat -= (lr * self.weight_decay) * self.decay_mask * self.flat
        m_hat_scale = lr / (1 - b1 ** self.t)
        denom = xp.sqrt(self.v / (1 - b2 ** self.t))
        denom += self.eps
        self.flat -= (m_hat_scale * self.m / denom).astype(self.flat.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["m"].shape != self.m.shape:
            raise ValueError(f"optimizer state holds {state['m'].shape[0]} values, model has {self.m.shape[0]}")
        self.t = int(state["t"])
        self.m[...] = backend.asarray(state["m"])
        self.v[...] = backend.asarray(state["v"])
