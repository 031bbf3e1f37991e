"""AdamW: decoupled decay only on matrices, schedule shape, clipping, frozen parameters."""
from __future__ import annotations

import numpy
import pytest

from baby import backend
from baby.nn.core import Parameter
from baby.optim import AdamW, lr_at


def params() -> tuple[Parameter, Parameter]:
    w = Parameter(backend.xp.ones((3, 3), dtype=backend.dtype), decay=True)
    b = Parameter(backend.xp.ones(3, dtype=backend.dtype), decay=False)
    return w, b


def test_decay_is_decoupled_and_skips_non_matrices(device: str) -> None:
    w, b = params()
    opt = AdamW([w, b], lr=0.1, weight_decay=0.5)
    opt.zero_grad()  # zero gradient: Adam's update is 0, only decay acts
    opt.step()
    assert numpy.allclose(backend.to_host(w.data), 1 - 0.1 * 0.5)
    assert numpy.allclose(backend.to_host(b.data), 1.0)


def test_first_step_moves_each_weight_by_lr_against_the_gradient_sign(device: str) -> None:
    w, b = params()
    opt = AdamW([w, b], lr=0.01, weight_decay=0.0)
    w.grad[...] = 3.0
    b.grad[...] = -0.2
    opt.step()
    assert numpy.allclose(backend.to_host(w.data), 0.99, atol=1e-6)
    assert numpy.allclose(backend.to_host(b.data), 1.01, atol=1e-6)


def test_parameters_become_views_of_one_buffer(device: str) -> None:
    w, b = params()
    opt = AdamW([w, b])
    w.grad += 1.0
    assert float(opt.flat_grad.sum()) == 9.0
    opt.zero_grad()
    assert float(abs(w.grad).sum()) == 0.0


def test_clip_scales_to_the_max_norm(device: str) -> None:
    w, b = params()
    opt = AdamW([w, b])
    w.grad[...] = 4.0
    norm = opt.clip(1.0)
    assert norm == pytest.approx(12.0)
    assert float(backend.xp.sqrt((opt.flat_grad ** 2).sum())) == pytest.approx(1.0, rel=1e-4)


def test_frozen_parameters_are_left_out(device: str) -> None:
    w, b = params()
    b.frozen = True
    opt = AdamW([w, b], lr=0.1)
    assert opt.params == [w]
    b.grad[...] = 5.0
    opt.step()
    assert numpy.allclose(backend.to_host(b.data), 1.0)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(1e-4)


def test_warmup_stable_decay_holds_the_peak_then_decays_linearly_to_the_floor() -> None:
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 110, decay=0.2) for s in range(110)]
    assert lrs[9] == 1e-3 and all(lr == 1e-3 for lr in lrs[10:90])  # warmup, then stable until the last 20 steps
    tail = lrs[90:]
    assert all(a > b for a, b in zip(tail, tail[1:])) and abs(tail[-1] - 1e-4) < 1e-15
    assert abs((tail[0] - tail[1]) - (tail[1] - tail[2])) < 1e-15  # linear
    assert lr_at(50, 1e-3, 1e-4, 10, 110) < 1e-3  # decay 0: the cosine, already below the peak half way
