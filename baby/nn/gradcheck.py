"""Finite-difference checks of hand-written backward passes (Chainer's ``check_backward`` idea).

For a scalar loss L = <f(x), w> (+ the module's auxiliary loss) with a fixed random w, the analytic
gradient of every tensor (input and each parameter) is compared against central differences along a
random direction d:  <grad, d>  vs  (L(t + eps d) - L(t - eps d)) / (2 eps). Run in float64.
Every comparison is written ``not (err <= tol)`` so that NaN and inf fail it, and the analytic gradient
must be finite everywhere (a NaN at one entry can hide from a random direction only by luck).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy

from baby import backend
from baby.nn.core import Module


class GradientMismatch(AssertionError):
    pass


def directional_check(name: str, value: Any, grad: Any, loss_at: Callable[[], float],
                      rng: numpy.random.Generator, eps: float = 1e-6, rtol: float = 1e-4,
                      atol: float = 1e-8, directions: int = 2) -> None:
    """Perturb ``value`` in place along random directions; restore it afterwards."""
    xp = backend.xp
    if not bool(xp.isfinite(grad).all()):
        bad = int((~xp.isfinite(grad)).sum())
        raise GradientMismatch(f"{name}: {bad} of {grad.size} analytic gradient entries are not finite")
    for _ in range(directions):
        d = xp.asarray(rng.standard_normal(value.shape))
        analytic = float((grad * d).sum())
        original = value.copy()
        value += eps * d
        plus = loss_at()
        value[...] = original - eps * d
        minus = loss_at()
        value[...] = original
        numeric = (plus - minus) / (2 * eps)
        if not abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric)):  # NaN fails
            raise GradientMismatch(f"{name}: analytic {analytic:.10g} vs numeric {numeric:.10g}")


def check_module(module: Module, x: Any, forward: Callable[[Any], Any] | None = None,
                 seed: int = 0, allow_unused: tuple[str, ...] = (), **tolerances: Any) -> list[str]:
    """Check d/dx and d/dparam of a module whose forward maps x to one array. Returns checked names.
    ``forward(x)`` defaults to ``module.forward(x)``; pass a closure to supply a context. A trainable
    parameter whose gradient is exactly zero is reported as unused (unless named in allow_unused)."""
    rng = numpy.random.default_rng(seed)
    run = forward or module.forward
    y = run(x)
    w = backend.xp.asarray(rng.standard_normal(y.shape))

    def loss_at() -> float:
        return float((run(x) * w).sum()) + float(module.extra_loss())

    for p in module.parameters():
        p.grad[...] = 0
    run(x)
    dx = module.backward(w)
    checked = []
    if dx is not None and backend.xp.issubdtype(x.dtype, backend.xp.floating):
        directional_check("input", x, dx, loss_at, rng, **tolerances)
        checked.append("input")
    for name, p in module.named_parameters():
        if p.frozen:
            continue
        if not bool((p.grad != 0).any()) and name not in allow_unused:
            raise GradientMismatch(f"{name}: gradient is exactly zero (an unused parameter?)")
        directional_check(name, p.data, p.grad.copy(), loss_at, rng, **tolerances)
        checked.append(name)
    return checked
