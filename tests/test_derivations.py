"""Every hand-written backward carries the math it implements (a ``# d:`` comment), so a learner
reads the derivation beside the code."""
from __future__ import annotations

import inspect

import pytest

from baby.nn import layers, model, variants
from baby.nn.mixers import kit
from baby.nn.network import common


def backward_methods(cls: type) -> list[tuple[str, object]]:
    found = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("baby."):
            continue
        for name, fn in vars(klass).items():
            if callable(fn) and name.endswith("backward") and "NotImplementedError" not in inspect.getsource(fn):
                found.append((f"{klass.__name__}.{name}", fn))  # abstract hooks have nothing to derive
    return found


CLASSES = sorted({e.cls for kind in ("mixer", "network", "norm") for e in variants.entries(kind)}
                 | {layers.Linear, layers.Embedding, layers.Dropout, model.Residual, model.Block, model.GPT},
                 key=lambda c: c.__name__)
FUNCTIONS = [layers.gelu_backward, layers.silu_backward, layers.softmax_backward_, layers.cross_entropy,
             kit.attend_backward, kit.prefix_mean_backward, common.glu_backward]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_backward_of_a_module_carries_its_derivation(cls: type) -> None:
    methods = backward_methods(cls)
    assert methods
    for name, fn in methods:
        source = inspect.getsource(fn)
        assert "# d:" in source, f"{name}: no derivation comment"


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_every_backward_function_carries_its_derivation(fn: object) -> None:
    source = inspect.getsource(fn)
    assert "# d:" in source or "dnum_t" in source or "t = tanh" in source, fn  # the last two: in the docstring
