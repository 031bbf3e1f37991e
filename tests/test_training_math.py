"""The training arithmetic around the model: gradient accumulation equals one large batch, AdamW over
several steps equals independent references (the paper's formulas, and torch.optim.AdamW when torch
is installed), inverted dropout keeps the expected value and its backward uses the forward's mask."""
from __future__ import annotations

import math

import numpy
import pytest

from baby import backend
from baby.config import Config
from baby.nn.core import Parameter
from baby.nn.layers import Dropout
from baby.nn.model import GPT
from baby.optim import AdamW
from baby.train import Trainer
from tests.conftest import TINY


def params_of(model: GPT) -> dict[str, numpy.ndarray]:
    return {n: backend.to_host(p.data).copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("n_accumulate", [2, 3])
def test_accumulated_micro_batches_equal_one_large_batch(device64: str, n_accumulate: int) -> None:
    """n_accumulate micro-batches of B windows give the same gradient, loss and update as one batch of
    n_accumulate * B windows: both read the same windows (one epoch order, consecutive slices). Two
    steps, so that the second step's micro-batches must follow the first step's."""
    rng = numpy.random.default_rng(0)
    tokens = rng.integers(0, 11, 2000)
    b = 2
    settings = {**TINY, "r_dropout": 0.0, "n_steps": 2, "s_warmup": 0, "r_clip": 0.5, "r_learn": 3e-3}
    results = []
    for n_acc, batch in ((n_accumulate, b), (1, n_accumulate * b)):
        cfg = Config({**settings, "n_accumulate": n_acc, "batch_size": batch})
        model = GPT(cfg, n_vocab=11)
        trainer = Trainer(cfg, model, tokens, tokens[:200], log=lambda _line: None)
        losses = [float(trainer.train_step().loss) for _ in range(2)]
        results.append((losses, backend.to_host(trainer.opt.flat_grad).copy(), params_of(model)))
    (loss_a, grad_a, after_a), (loss_b, grad_b, after_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    assert loss_a[0] != loss_a[1]
    numpy.testing.assert_allclose(grad_a, grad_b, rtol=1e-10, atol=1e-14)  # clipped, averaged gradient
    for name in after_a:
        numpy.testing.assert_allclose(after_a[name], after_b[name], rtol=1e-10, atol=1e-14, err_msg=name)


# ---- AdamW -------------------------------------------------------------------------------------------

BETAS, EPS, DECAY = (0.9, 0.99), 1e-8, 0.1
LRS = [1e-2, 3e-2, 2e-2, 5e-3, 1e-2, 4e-2, 1e-3]  # a varying learning rate, one per step


def adam_case() -> tuple[list[Parameter], list[list[numpy.ndarray]]]:
    """A matrix (decayed) and a bias (not), and a different gradient for every step."""
    rng = numpy.random.default_rng(1)
    params = [Parameter(backend.asarray(rng.standard_normal((3, 4))), decay=True),
              Parameter(backend.asarray(rng.standard_normal(4)), decay=False)]
    grads = [[rng.standard_normal(p.shape) * (0.1 + s) for p in params] for s in range(len(LRS))]
    return params, grads


def run_baby(params: list[Parameter], grads: list[list[numpy.ndarray]]) -> list[numpy.ndarray]:
    opt = AdamW(params, lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=DECAY)
    for lr, step_grads in zip(LRS, grads):
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad += backend.asarray(g)
        opt.step(lr)
    return [backend.to_host(p.data) for p in params]


def test_adamw_steps_match_the_papers_formulas(device64: str) -> None:
    """Loshchilov & Hutter's AdamW, bias-corrected moments, decay only where Parameter.decay is set."""
    params, grads = adam_case()
    theta = [backend.to_host(p.data).copy() for p in params]
    decays = [p.decay for p in params]
    m = [numpy.zeros_like(t) for t in theta]
    v = [numpy.zeros_like(t) for t in theta]
    b1, b2 = BETAS
    for t, (lr, step_grads) in enumerate(zip(LRS, grads), start=1):
        for i, g in enumerate(step_grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            theta[i] = theta[i] - lr * (m_hat / (numpy.sqrt(v_hat) + EPS) + (DECAY * theta[i] if decays[i] else 0))
    for got, want in zip(run_baby(params, grads), theta):
        numpy.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_adamw_steps_match_torch(device64: str) -> None:
    torch = pytest.importorskip("torch")
    params, grads = adam_case()
    tensors = [torch.tensor(backend.to_host(p.data), dtype=torch.float64, requires_grad=True) for p in params]
    groups = [{"params": [t], "weight_decay": DECAY if p.decay else 0.0} for t, p in zip(tensors, params)]
    opt = torch.optim.AdamW(groups, lr=LRS[0], betas=BETAS, eps=EPS)
    for lr, step_grads in zip(LRS, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    for got, want in zip(run_baby(params, grads), tensors):
        numpy.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-14)


# ---- dropout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_keeps_the_expected_value_and_backward_uses_the_same_mask(device64: str, rate: float) -> None:
    n = 200_000
    x = backend.xp.asarray(numpy.random.default_rng(0).uniform(0.5, 2.0, n))
    drop = Dropout(rate)
    y = drop(x, backend.rng(7))
    ratio = backend.to_host(y / x)
    kept = ratio != 0
    # inverted dropout: kept values are scaled by 1 / (1 - rate), so E[y] = x
    numpy.testing.assert_allclose(ratio[kept], 1.0 / (1.0 - rate), rtol=1e-12)
    standard_error = math.sqrt(rate / (1.0 - rate) / n)
    assert abs(ratio.mean() - 1.0) < 5 * standard_error
    assert abs((~kept).mean() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    dy = backend.xp.asarray(numpy.random.default_rng(1).standard_normal(n))
    numpy.testing.assert_allclose(backend.to_host(drop.backward(dy)), backend.to_host(dy) * ratio, rtol=1e-12)
    # a fresh draw is a different mask; evaluation is the identity
    assert (backend.to_host(drop(x, backend.rng(8)) / x) != ratio).any()
    drop.eval()
    assert drop(x, backend.rng(7)) is x and drop.backward(dy) is dy
