"""fp16 done right on the CPU path: fp32 master weights and moments, dynamic loss scaling, fp32
statistics, no overflow in the modules at realistic activations, and no host sync inside a step."""
from __future__ import annotations

import numpy
import pytest

from baby import backend, plans, runs
from baby.config import Config
from baby.nn import variants
from baby.nn.core import Parameter
from baby.nn.layers import RMSNorm, cross_entropy, gelu, gelu_backward
from baby.nn.model import GPT
from baby.optim import AdamW, LossScale
from baby.train import Interrupted, Trainer
from tests.conftest import TINY_RUN, context, quiet, weights


@pytest.fixture
def fp16():
    backend.use("cpu", d_type="fp16")
    yield
    backend.use("cpu", d_type="fp32")


def fp16_param(value: float, shape: tuple[int, ...], decay: bool) -> Parameter:
    return Parameter(numpy.full(shape, value, dtype=numpy.float16), decay=decay)


def test_small_updates_reach_the_weights_through_fp32_masters(fp16: None) -> None:
    # a LayerNorm gain at lr 3e-4: each update is below fp16's spacing at 1.0 (2^-10), so fp16
    # weights alone would never move; the masters take all 1000 of them
    gain = fp16_param(1.0, (8,), decay=False)
    opt = AdamW([gain], lr=3e-4, weight_decay=0.0)
    for _ in range(1000):
        opt.zero_grad()
        gain.grad[...] = 1.0
        opt.step(finite=opt.unscale(1.0))
    assert gain.data.dtype == numpy.float16 and opt.master.dtype == numpy.float32
    numpy.testing.assert_allclose(gain.data.astype(float), 0.70, atol=2e-3)


def test_weight_decay_of_3e_5_per_step_acts_on_fp16_weights(fp16: None) -> None:
    w = fp16_param(0.5, (4, 4), decay=True)
    opt = AdamW([w], lr=1e-3, weight_decay=0.03)  # lr * decay = 3e-5 per step
    for _ in range(1000):
        opt.zero_grad()
        opt.step(finite=opt.unscale(1.0))
    numpy.testing.assert_allclose(w.data.astype(float), 0.5 * (1 - 3e-5) ** 1000, atol=2.5e-4)


def test_loss_scaling_keeps_cross_entropy_gradients_from_underflowing() -> None:
    rng = numpy.random.default_rng(0)
    logits = (2.0 * rng.standard_normal((4096, 8000), dtype=numpy.float32)).astype(numpy.float16)
    targets = rng.integers(0, 8000, 4096)
    _, reference = cross_entropy(logits.astype(numpy.float32), targets)
    _, scaled = cross_entropy(logits, targets, grad_scale=2.0 ** 16)
    assert scaled.dtype == numpy.float16
    zeros = float(numpy.mean(scaled == 0))
    assert zeros < 0.01, f"{zeros:.1%} of the scaled fp16 gradients are 0"
    rows = slice(0, 256)  # the same gradient, within fp16's rounding (a slice: the whole is 33M numbers)
    numpy.testing.assert_allclose(scaled[rows].astype(numpy.float32) / 2.0 ** 16, reference[rows], rtol=2e-3, atol=1e-10)


def test_a_step_with_overflowed_gradients_is_skipped_and_halves_the_scale(fp16: None) -> None:
    w = fp16_param(0.25, (3,), decay=False)
    opt, scaler = AdamW([w], lr=1e-2, weight_decay=0.0), LossScale(scale=1024.0, interval=3)
    before_m = opt.m.copy()
    w.grad[...] = numpy.inf
    finite = opt.unscale(scaler.scale)
    opt.step(finite=finite)
    scaler.update(finite)
    assert not bool(finite) and float(scaler.scale) == 512.0 and int(scaler.skipped) == 1
    assert (w.data == numpy.float16(0.25)).all() and (opt.m == before_m).all() and float(opt.applied) == 0
    for _ in range(3):  # three clean steps double it
        opt.zero_grad()
        w.grad[...] = 1.0
        finite = opt.unscale(scaler.scale)
        opt.step(finite=finite)
        scaler.update(finite)
    assert float(scaler.scale) == 1024.0 and float(opt.applied) == 3
    assert (w.data < 0.25).all()


def test_fp16_modules_do_not_overflow_at_realistic_activations(fp16: None) -> None:
    rng = numpy.random.default_rng(1)
    x = rng.normal(0.0, 300.0, (2, 5, 64))  # squares reach 1e5 > 65504
    norm = RMSNorm(64)
    y16 = norm.forward(x.astype(numpy.float16))
    assert numpy.isfinite(y16).all()
    numpy.testing.assert_allclose(y16.astype(float), x / numpy.sqrt((x * x).mean(-1, keepdims=True)), atol=2e-2)
    big = rng.normal(0.0, 30.0, (4, 64)).astype(numpy.float16)  # x^3 overflows fp16 beyond ~40
    y, t = gelu(big)
    assert numpy.isfinite(y).all() and numpy.isfinite(gelu_backward(big, t, numpy.ones_like(big))).all()
    # aft: keys near 13 give weights exp(20 tanh(k/20)) > 65504
    cfg = Config({"n_ctx": 8, "n_emb": 16, "n_heads": 2, "n_layers": 1, "c_attention": "aft", "d_type": "fp16"})
    aft = variants.lookup("mixer", "aft").cls(cfg, numpy.random.default_rng(2))
    k = numpy.full((1, 8, 16), 13.0)
    w = aft.key_weights(k.astype(numpy.float16), context(numpy.zeros((1, 8), int)))
    assert numpy.isfinite(w).all() and float(w.max()) > 65504


def test_an_fp16_run_ends_within_3_percent_of_fp32(tmp_path, corpus) -> None:
    settings = {**TINY_RUN, "n_emb": 32, "n_steps": 150, "r_dropout": 0.0, "n_eval_every": 50, "r_learn": 3e-3}
    losses = {}
    for d_type in ("fp32", "fp16"):
        guid = plans.train({**settings, "d_type": d_type}, [str(corpus)], root=tmp_path / d_type, log=quiet)
        report = runs.RunStore(tmp_path / d_type).read("report", guid)
        losses[d_type] = report["final_val_loss"]
        if d_type == "fp16":
            assert report["loss_scale"]["scale"] >= 1.0
    assert abs(losses["fp16"] - losses["fp32"]) <= 0.03 * losses["fp32"], losses


def test_an_fp16_run_resumes_exactly(tmp_path, corpus) -> None:
    settings = {**TINY_RUN, "d_type": "fp16"}
    whole = plans.train(settings, [str(corpus)], root=tmp_path / "a", log=quiet)
    with pytest.raises(Interrupted):
        plans.train(settings, [str(corpus)], root=tmp_path / "b", log=quiet, stop_at=8)
    (guid,) = runs.RunStore(tmp_path / "b").guids()
    plans.resume(guid, root=tmp_path / "b", log=quiet)
    assert weights(tmp_path / "b", guid) == weights(tmp_path / "a", whole)


@pytest.mark.parametrize("d_type", ["fp32", "fp16"])
def test_no_host_transfer_between_log_lines(monkeypatch: pytest.MonkeyPatch, d_type: str) -> None:
    backend.use("cpu", d_type=d_type)
    try:
        cfg = Config({**TINY_RUN, "n_steps": 20, "n_log_every": 5, "n_eval_every": 10, "d_type": d_type})
        tokens = numpy.random.default_rng(0).integers(0, 30, 3000)
        trainer = Trainer(cfg, GPT(cfg, 30), tokens, tokens[:400], log=quiet)
        calls: list[int] = []
        real = backend.to_host
        monkeypatch.setattr(backend, "to_host", lambda a: calls.append(trainer.step) or real(a))
        trainer.run()
    finally:
        backend.use("cpu", d_type="fp32")
    assert calls and set(calls) <= {5, 10, 15, 20}, sorted(set(calls))


# ---- fused CuPy kernels against the NumPy reference (run where a GPU is) ------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("d_type", ["fp32", "fp16"])
def test_fused_kernels_equal_the_reference(d_type: str) -> None:
    backend.use("gpu", d_type=d_type)
    try:
        xp = backend.xp
        x = xp.asarray(numpy.random.default_rng(0).normal(0, 3, (64, 257)), dtype=backend.dtype)
        dy = xp.asarray(numpy.random.default_rng(1).normal(0, 1, (64, 257)), dtype=backend.dtype)
        y, t = gelu(x)
        dx = gelu_backward(x, t, dy)
        backend.use_fused = False
        y_ref, t_ref = gelu(x)
        dx_ref = gelu_backward(x, t_ref, dy)
        tol = 1e-5 if d_type == "fp32" else 2e-3
        for got, want in ((y, y_ref), (dx, dx_ref)):
            numpy.testing.assert_allclose(backend.to_host(got).astype(float), backend.to_host(want).astype(float),
                                          rtol=tol, atol=tol)
        backend.use_fused = True
        runs = []
        for fused in (True, False):
            backend.use_fused = fused
            w = Parameter(xp.ones((5, 7), dtype=xp.float32), decay=True)
            opt = AdamW([w], lr=1e-2, weight_decay=0.1)
            for step in range(3):
                w.grad[...] = float(step + 1)
                opt.step()
            runs.append(backend.to_host(w.data))
        numpy.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)
    finally:
        backend.use_fused = True
        backend.use("cpu", d_type="fp32")
