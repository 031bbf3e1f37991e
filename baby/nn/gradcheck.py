"""Finite-difference checks of hand-written backward passes (Chainer's ``check_backward`` idea).

For a scalar loss L = <f(x), w> (+ the module's auxiliary loss) with a fixed random w, the analytic
gradient of every tensor (input and each parameter) is compared against central differences along a
random direction d:  <grad, d>  vs  (L(t + eps d) - L(t - eps d)) / (2 eps). Run in float64.
Every comparison is written ``not (err <= tol)`` so that NaN and inf fail it, and the analytic gradient
must be finite everywhere (a NaN at one entry can hide from a random direction only by luck).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import numpy

from baby import backend
from baby.nn import variants
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


# ---- the live check of the notebook and of ``python -m baby gradcheck`` --------------------------

LEARNER_CONFIG = {"n_ctx": 12, "n_emb": 16, "n_heads": 4, "n_layers": 2, "c_position": "rope", "s_window": 3,
                  "c_bias": True, "r_temp": 1.0, "r_hidden": 4.0, "c_network": "", "seed": 3}
LEARNER_TOLERANCE = 1e-4  # worst relative error accepted: float64 central differences reach ~1e-8


def relative_errors(module: Module, x: Any, run: Callable[[Any], Any], seed: int = 0,
                    directions: int = 3, eps: float = 1e-6) -> dict[str, float]:
    """Per tensor (input, then each trainable parameter), the worst relative error
    |analytic - numeric| / max(|analytic|, |numeric|) of the directional derivative over random
    directions, numeric by central differences of L = <f(x), w> (+ the auxiliary loss). Never raises:
    a learner sees every number, NaN included."""
    xp = backend.xp
    rng = numpy.random.default_rng(seed)
    w = xp.asarray(rng.standard_normal(run(x).shape))

    def loss_at() -> float:
        return float((run(x) * w).sum()) + float(module.extra_loss())

    tensors = [("input", x)] + [(n, p.data) for n, p in module.named_parameters() if not p.frozen]
    for p in module.parameters():
        p.grad[...] = 0
    run(x)
    grads = {"input": module.backward(w)}
    grads.update((n, p.grad.copy()) for n, p in module.named_parameters() if not p.frozen)
    errors: dict[str, float] = {}
    for name, value in tensors:
        worst = 0.0
        for _ in range(directions):
            d = xp.asarray(rng.standard_normal(value.shape))
            numeric, analytic = central_difference(value, d, eps, loss_at), float((grads[name] * d).sum())
            scale = max(abs(analytic), abs(numeric), 1e-12)
            err = abs(analytic - numeric) / scale
            worst = err if not (err <= worst) else worst  # NaN wins: it must be seen
        errors[name] = worst
    return errors


def central_difference(value: Any, d: Any, eps: float, loss_at: Callable[[], float]) -> float:
    """(L(t + eps d) - L(t - eps d)) / (2 eps), perturbing ``value`` in place and restoring it."""
    saved = value.copy()
    losses = []
    for sign in (1.0, -1.0):
        value[...] = saved + sign * eps * d
        losses.append(loss_at())
    value[...] = saved
    return (losses[0] - losses[1]) / (2 * eps)


def resolve(name_or_class: str | type, kind: str | None = None) -> tuple[str, type]:
    """(kind, class) of a registered module name (a mixer, a network or a norm), or of a class."""
    from baby.nn.core import BASES  # noqa: PLC0415
    from baby.nn.settings import ConfigError  # noqa: PLC0415

    if isinstance(name_or_class, type):
        found = kind or next((k for k, base in BASES.items() if issubclass(name_or_class, base)), "norm")
        return found, name_or_class
    kinds = [kind] if kind else ["mixer", "network", "norm"]
    for k in kinds:
        if name_or_class in variants.names(k):
            return k, variants.lookup(k, name_or_class).cls
    allowed = sorted({n for k in ("mixer", "network", "norm") for n in variants.names(k)})
    raise ConfigError(f"gradcheck: unknown module {name_or_class!r}: allowed {', '.join(allowed)}")


def learner_config(**overrides: Any) -> SimpleNamespace:
    """The tiny config of the learner's check, made here because ``baby.config`` sits above ``baby.nn``:
    every registered variant's setting defaults, LEARNER_CONFIG, the overrides, and the two derived
    widths the modules read (head_width and hidden, as ``Config`` derives them)."""

    values = {s.key: s.default for kind in ("mixer", "network") for e in variants.entries(kind) for s in e.settings}
    values.update(LEARNER_CONFIG, **overrides)
    values.setdefault("head_width", values.pop("head_size", 0) or values["n_emb"])
    values.setdefault("hidden", max(1, int(round(values["r_hidden"] * values["n_emb"]))))
    return SimpleNamespace(**values)


def check_by_name(name_or_class: str | type, kind: str | None = None, seed: int = 0,
                  log: Callable[[str], None] | None = print, cfg: Any = None, **settings: Any) -> dict[str, float]:
    """Gradient-check one registered module (``"mha"``, ``"conv"``, ``"mlp"``, ``"rms"``) or a module
    class (e.g. a subclass with a broken backward) in float64 on a tiny input with repeated tokens;
    print and return the worst relative error per input and parameter. ``settings`` override the
    tiny config (e.g. ``c_bias=False``); ``cfg`` replaces it (e.g. a ``baby.config.Config``)."""
    from baby.nn.context import Context  # noqa: PLC0415

    kind, cls = resolve(name_or_class, kind)
    saved = backend.xp, backend.dtype, backend.device_name
    backend.use("gpu" if backend.device_name.startswith("gpu") else "cpu", d_type="fp64")
    try:
        xp, rng = backend.xp, numpy.random.default_rng(seed)
        notes = []
        if kind == "norm":
            module = cls(8)
            for p in module.parameters():  # off the ones/zeros init, so every term matters
                p.data[...] = xp.asarray(rng.standard_normal(p.shape))
            x = xp.asarray(rng.standard_normal((3, 4, 8)))
            errors = relative_errors(module, x, module.forward, seed)
        else:
            cfg = cfg if cfg is not None else learner_config(**settings)
            module = cls(cfg, rng)
            if getattr(module, "straight_through", False):
                module.straight_through = False  # swh: the gate's gradient is a surrogate, see swh.py
                notes.append("the gate's straight-through gradient is a surrogate, not a derivative: "
                             "checked here is the exact gradient of the hard choice (0 for the gate)")
            b, t = 2, 9
            x = xp.asarray(rng.standard_normal((b, t, cfg.n_emb)))
            ids = xp.asarray(rng.integers(0, 5, (b, t)))  # few ids: repeats for induction
            ctx = Context(ids=ids, positions=xp.broadcast_to(xp.arange(t)[None], (b, t)))
            errors = relative_errors(module, x, lambda v: module.forward(v, ctx), seed)
    finally:
        backend.xp, backend.dtype, backend.device_name = saved
    if log is not None:
        label = name_or_class if isinstance(name_or_class, str) else cls.__name__
        log(f"{label} ({kind}): worst relative error vs float64 central differences")
        for tensor, err in errors.items():
            log(f"  {tensor:<24} {err:9.2e}  {'ok' if err <= LEARNER_TOLERANCE else 'WRONG'}")
        for note in notes:
            log(f"  note: {note}")
    return errors


def check_names(names: list[str] | None = None, log: Callable[[str], None] = print) -> bool:
    """Check each named module (default: every registered mixer, network and norm); True if all pass."""

    if not names:
        names = [e.name for kind in ("mixer", "network", "norm") for e in variants.entries(kind)]
    for name in names:
        resolve(name)  # an unknown name is refused before anything runs
    ok = True
    for name in names:
        errors = check_by_name(name, log=log)
        ok = ok and all(err <= LEARNER_TOLERANCE for err in errors.values())
    return ok
