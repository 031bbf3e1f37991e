"""What every plan runs inside, so that nothing raw reaches the person running it.

- NumPy's floating-point warnings (``overflow encountered in matmul``, with source paths) are gathered
  instead of printed: a run that diverges says them as part of its one divergence line; a plan that
  ends well says them once (rank 0 of an MPI job), as a notice, with how often each came.
- Running out of memory anywhere in a plan becomes one line that names the settings sizes come from.
"""
from __future__ import annotations

import functools
import warnings
from collections import Counter
from typing import Any, Callable

from baby import distributed
from baby.config import ConfigError
from baby.progress import say
from baby.train import TrainingHalted

MEMORY_HINT = ("the sizes come from batch_size x n_ctx (activations, and n_accumulate keeps the tokens per step "
               "when batch_size is lowered) and n_emb, n_layers, n_vocab (parameters)")


class OutOfMemory(ConfigError):
    """An allocation failed: one line with the settings that drive the sizes."""


def numpy_said(caught: list[warnings.WarningMessage]) -> str:
    """"overflow encountered in matmul (3x), invalid value encountered in subtract" from the warnings."""
    counts = Counter(str(w.message) for w in caught)
    return ", ".join(f"{text} ({n}x)" if n > 1 else text for text, n in counts.items())


def guarded(plan: Callable[..., Any]) -> Callable[..., Any]:
    """``plan`` with NumPy's floating-point warnings gathered and MemoryError said in one line."""

    @functools.wraps(plan)
    def run(*args: Any, **kwargs: Any) -> Any:
        log = kwargs.get("log") or say
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)  # every one counted, none printed
            try:
                result = plan(*args, **kwargs)
            except TrainingHalted as err:
                floating = [w for w in caught if issubclass(w.category, RuntimeWarning)]
                if floating:
                    err.args = (f"{err} (NumPy reported: {numpy_said(floating)})",)
                raise
            except MemoryError as err:
                detail = " ".join(str(err).split()) or "an allocation failed"
                raise OutOfMemory(f"out of memory ({detail}): {MEMORY_HINT}") from None
        others = [w for w in caught if not issubclass(w.category, RuntimeWarning)]
        for w in others:  # not ours to judge: shown as Python would have shown them
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        floating = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        if floating and distributed.launched_rank() == 0:  # every rank computed the same: one speaks
            log(f"notice: NumPy reported {numpy_said(floating)} (every value saved is finite)")
        return result

    return run
