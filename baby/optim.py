"""AdamW with decoupled weight decay, warmup + cosine schedule, gradient-norm clipping.

The optimizer packs every trainable parameter (and its gradient) into one flat buffer and rebinds the
parameters to views of it, so zeroing, clipping and the Adam update are a handful of large vectorised
operations instead of a Python loop over tensors. Modules must therefore update ``p.data`` and
``p.grad`` in place (``+=``, ``[...] =``), never rebind them.

Mixed precision (fp16 parameters): the optimizer keeps fp32 master weights and fp32 moments, reads
the fp16 gradients through ``unscale`` (divided by the loss scale, in fp32), updates the masters and
refreshes the fp16 compute copies after each step. A weight of 0.5 moves by steps as small as
lr * decay = 3e-5 (fp16 alone rounds anything below its spacing, 2^-11 at 0.5, away). A step whose
gradients hold inf/NaN is skipped on the device: masters, moments and the step count stay as they
were, and ``LossScale`` halves the scale.
"""
from __future__ import annotations

import math
from typing import Any

from baby import backend, ops
from baby.nn.core import Parameter


def lr_at(step: int, peak: float, floor: float, warmup: int, total: int, decay: float = 0.0) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then down to ``floor`` at ``total``: a cosine
    over the whole rest (``decay`` 0), or warmup-stable-decay with ``decay`` > 0: ``peak`` held until
    the last ``decay`` share of the steps, then a linear decay to ``floor`` over that share."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    if decay > 0:
        start = total - max(1, round(decay * (total - warmup)))
        return peak if step < start else peak - (peak - floor) * min(1.0, (step - start + 1) / (total - start))
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
        self.mixed = dtype == xp.float16
        acc = backend.accumulator(dtype)
        self.m = xp.zeros(total, dtype=acc)
        self.v = xp.zeros_like(self.m)
        self.t = 0
        if self.mixed:
            self.master = self.flat.astype(acc)
            self.grad32 = xp.zeros(total, dtype=acc)
            self.decay_mask = self.decay_mask.astype(acc)
            self.applied = xp.zeros((), dtype=acc)  # steps not skipped (bias correction counts these)

    @property
    def grad(self) -> Any:
        """The gradient that clipping and the update read: fp32 (unscaled) in mixed precision."""
        return self.grad32 if self.mixed else self.flat_grad

    def zero_grad(self) -> None:
        self.flat_grad.fill(0)

    def clip(self, max_norm: float) -> Any:
        """Scale gradients so their global L2 norm is at most max_norm (0: off); returns the norm
        before, as a device scalar (no host sync: the trainer reads it at the log cadence)."""
        norm = ops.grad_norm(self.grad)
        if max_norm > 0:  # factor 1 below the threshold, so the gradients stay bit for bit
            ops.clip_(self.grad, norm, max_norm)
        return norm

    def unscale(self, scale: Any) -> Any:
        """Mixed precision: the fp32 gradient = fp16 gradient / loss scale; returns whether it is
        finite everywhere (a device bool; an overflowed step is then skipped by ``step``)."""
        xp = backend.xp
        self.grad32[...] = self.flat_grad
        self.grad32 *= (1.0 / scale)
        finite = xp.isfinite(self.grad32).all()
        self.grad32[...] = xp.where(finite, self.grad32, 0.0)  # a skipped step must not spread NaN
        return finite

    def step(self, lr: float | None = None, finite: Any = None) -> None:
        """One AdamW update. In mixed precision it acts on the fp32 masters and only where
        ``finite`` (no host sync): a skipped step keeps m and v (decay factors 1) and moves no
        weight (lr 0); the fp16 compute copies are refreshed after it."""
        xp = backend.xp
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        if self.mixed:
            finite = True if finite is None else finite
            b1, b2, lr = xp.where(finite, b1, 1.0), xp.where(finite, b2, 1.0), xp.where(finite, lr, 0.0)
            self.applied += finite
            t, weights, g = xp.maximum(self.applied, 1.0), self.master, self.grad32
        else:
            t, weights, g = self.t, self.flat, self.flat_grad
        c1, c2 = 1 - self.betas[0] ** t, 1 - self.betas[1] ** t  # bias corrections of moments that start at 0
        ops.adamw(g, self.decay_mask, weights, self.m, self.v, lr, b1, b2, self.eps, self.weight_decay, c1, c2)
        if self.mixed:
            self.flat[...] = self.master  # the fp16 compute copies, refreshed

    def state_dict(self) -> dict[str, Any]:
        state = {"t": self.t, "m": self.m, "v": self.v}
        if self.mixed:
            state.update(master=self.master, applied=self.applied)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("m", "v", "master"):
            if state.get(key) is not None and tuple(state[key].shape) != self.m.shape:
                raise ValueError(f"optimizer state {key} holds {state[key].shape} values, the model has {self.m.shape[0]}")
        self.t = int(state["t"])
        self.m[...] = backend.asarray(state["m"])
        self.v[...] = backend.asarray(state["v"])
        if self.mixed and state.get("master") is not None:
            self.master[...] = backend.asarray(state["master"])
            self.applied[...] = float(state.get("applied", self.t))
            self.flat[...] = self.master


class LossScale:
    """Dynamic loss scaling for fp16: the loss (hence every gradient) is multiplied by ``scale`` so
    that small gradients survive fp16; after ``interval`` clean steps the scale doubles, and a step
    with inf/NaN gradients is skipped and halves it. All on the device; read at the log cadence."""

    def __init__(self, scale: float = 2.0 ** 16, interval: int = 1000, factor: float = 2.0) -> None:
        xp = backend.xp
        self.interval, self.factor = interval, factor
        self.scale = xp.asarray(scale, dtype=xp.float32)
        self.clean = xp.zeros((), dtype=xp.int64)
        self.skipped = xp.zeros((), dtype=xp.int64)

    def update(self, finite: Any) -> None:
        xp = backend.xp
        grow = finite & (self.clean + 1 >= self.interval)
        shrunk = xp.maximum(self.scale / self.factor, 1.0)
        self.scale = xp.where(finite, xp.where(grow, self.scale * self.factor, self.scale), shrunk).astype(xp.float32)
        self.clean = xp.where(finite & ~grow, self.clean + 1, 0)
        self.skipped = self.skipped + (~finite)

    def state_dict(self) -> dict[str, Any]:
        return {"scale": float(backend.to_host(self.scale)), "clean": int(backend.to_host(self.clean)),
                "skipped": int(backend.to_host(self.skipped))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        xp = backend.xp
        self.scale = xp.asarray(state["scale"], dtype=xp.float32)
        self.clean = xp.asarray(state["clean"], dtype=xp.int64)
        self.skipped = xp.asarray(state["skipped"], dtype=xp.int64)
