"""Which body of an op runs: the one place that decides.

An op is its reference body (the textbook formula in plain ``xp`` expressions) wrapped by ``op``.
Fast bodies are registered beside it per array library ("numpy" for the CPU, "cupy" for CUDA) by
``fast``; a call runs the fast body of the library in use, or the reference where there is none.
``use("reference")`` (the config's c_ops) or the environment variable BABY_OPS=reference runs every op
on its reference body: for learning, debugging, and the tests that hold the two equal.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

from baby import backend

MODES = ("fast", "reference")
ENV = "BABY_OPS"  # BABY_OPS=reference: every op on its reference body, whatever the config says

_mode = "fast"
OPS: dict[str, Any] = {}  # name -> the op (its ``reference`` and ``fast`` bodies are attributes)


def _env_mode() -> str:
    value = os.environ.get(ENV, "").strip().lower()
    if value and value not in MODES:
        raise ValueError(f"{ENV}={value!r}: allowed {MODES}")
    return value


def use(mode: str) -> None:
    """Run the ops on their fast bodies (``"fast"``, the default) or on their references."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"c_ops={mode!r}: allowed {MODES}")
    _mode = mode


def mode() -> str:
    """The bodies in use now: ``"reference"`` when c_ops or BABY_OPS asks for it, else ``"fast"``."""
    return "reference" if _mode == "reference" or _REFERENCE_ENV else "fast"


@contextlib.contextmanager
def using(mode_: str) -> Iterator[None]:
    """Run the block with the ops on ``mode_`` bodies, then restore the mode before it."""
    before = _mode
    use(mode_)
    try:
        yield
    finally:
        use(before)


def op(reference: Callable[..., Any]) -> Any:
    """Make ``reference`` an op. The returned function has the reference's name, signature and source
    (``inspect.getsource`` reads the math), and dispatches on every call."""
    bodies: dict[str, Callable[..., Any]] = {}

    @functools.wraps(reference)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _mode == "fast" and not _REFERENCE_ENV:
            body = bodies.get(backend.xp.__name__)
            if body is not None:
                return body(*args, **kwargs)
        return reference(*args, **kwargs)

    call.reference = reference  # type: ignore[attr-defined]
    call.fast = bodies  # type: ignore[attr-defined]
    OPS[reference.__name__] = call
    return call


def fast(op_: Any, library: str = "numpy") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as ``op_``'s fast body for ``library`` ("numpy" or "cupy")."""
    def register(body: Callable[..., Any]) -> Callable[..., Any]:
        op_.fast[library] = body
        return body
    return register


_REFERENCE_ENV = _env_mode() == "reference"  # read once: the environment is fixed for a process


def wide(a: Any) -> Any:
    """``a`` in at least float32, the dtype references compute fp16 inputs in (x^3 and x^2 overflow fp16
    beyond |x| ~ 40 and 256; long sums drop small terms)."""
    return a.astype(backend.accumulator(a.dtype), copy=False)


def refresh_environment() -> None:
    """Read BABY_OPS again (tests set it after import)."""
    global _REFERENCE_ENV
    _REFERENCE_ENV = _env_mode() == "reference"


__all__ = ["MODES", "ENV", "OPS", "use", "mode", "using", "op", "fast", "wide", "refresh_environment"]
