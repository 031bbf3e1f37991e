"""Data parallelism inside one CPU process (baby/replicas.py): replicas of the model, one per
thread, each train a slice of the batch; their summed gradient must be the whole batch's gradient
(to rounding), their weights the model's, and a run with them must repeat and resume bit for bit."""
from __future__ import annotations

import threading

import numpy
import pytest

from baby import backend, config, plans
from baby.nn.model import GPT
from baby.optim import AdamW
from baby.replicas import Replicas, for_training, replica_count
from baby.train import train_step
from tests.conftest import TINY_RUN, quiet

SMALL = {"n_ctx": 16, "n_emb": 32, "n_heads": 4, "n_layers": 2, "batch_size": 6, "r_dropout": 0.0}


@pytest.fixture()
def two_threads():
    backend.use("cpu", 2, d_type="fp64")
    yield
    backend.use("cpu", d_type="fp32")


def batches(n_vocab: int, count: int, rows: int = 6, ignored: bool = True) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
    rng = numpy.random.default_rng(3)
    out = []
    for _ in range(count):
        w = rng.integers(0, n_vocab, (rows, SMALL["n_ctx"] + 1))
        y = w[:, 1:].copy()
        if ignored:
            y[0, :9] = -1  # padding: the slices then count different numbers of targets
            y[4, 3:] = -1
        out.append((w[:, :-1], y))
    return out


def train(settings: dict, replicas: int, steps: int = 3, accumulate: int = 1) -> tuple[numpy.ndarray, list[float], list[float]]:
    cfg = config.as_config({**SMALL, **settings})
    model = GPT(cfg, 50)
    opt = AdamW(model.parameters(), 1e-3, (0.9, 0.95), 1e-8, 0.1)
    reps = Replicas(model, opt, replicas) if replicas > 1 else None
    data = batches(50, steps * accumulate)
    losses, norms = [], []
    for i in range(steps):
        micro = [(x, y, None) for x, y in data[i * accumulate:(i + 1) * accumulate]]
        result = train_step(model, opt, micro, 1e-3, 0.5, replicas=reps)
        losses.append(float(result.loss))
        norms.append(float(result.grad_norm))
    return opt.flat.copy(), losses, norms


@pytest.mark.parametrize("settings", [{}, {"c_attention": "gqa", "n_kv_heads": 2, "c_network": "swi", "c_norm": "rms",
                                           "c_position": "rope", "c_tie": False},
                                      {"c_attention": "conv+induction", "c_network": "swi"}])
@pytest.mark.parametrize("n", [2, 3])
def test_replicas_train_like_one_model_on_the_whole_batch(two_threads, settings: dict, n: int) -> None:
    weights, losses, norms = train(settings, 1)
    weights_n, losses_n, norms_n = train(settings, n)
    numpy.testing.assert_allclose(losses_n, losses, rtol=1e-12)
    numpy.testing.assert_allclose(norms_n, norms, rtol=1e-10)  # clipped at 0.5: the norm is the whole batch's
    numpy.testing.assert_allclose(weights_n, weights, rtol=1e-9, atol=1e-12)


def test_replicas_with_micro_batches_are_the_mean_over_them(two_threads) -> None:
    weights, losses, _ = train({}, 1, steps=2, accumulate=2)
    weights_2, losses_2, _ = train({}, 2, steps=2, accumulate=2)
    numpy.testing.assert_allclose(losses_2, losses, rtol=1e-12)
    numpy.testing.assert_allclose(weights_2, weights, rtol=1e-9, atol=1e-12)


def test_replicas_share_the_weights_and_keep_their_own_gradients(two_threads) -> None:
    cfg = config.as_config(SMALL)
    model = GPT(cfg, 50)
    opt = AdamW(model.parameters(), 1e-3)
    reps = Replicas(model, opt, 2)
    twin = reps.models[1]
    assert twin is not model
    for p, q in zip(model.parameters(), twin.parameters()):
        assert q.data is p.data  # the same array: an optimizer step moves both
        assert q.grad is not p.grad and not numpy.shares_memory(q.grad, opt.flat_grad)
    assert len(twin.parameters()) == len(model.parameters())  # tied weights stay tied (listed once)


def test_replicas_run_on_their_own_threads_with_one_blas_thread(two_threads, monkeypatch) -> None:
    pytest.importorskip("threadpoolctl")
    cfg = config.as_config(SMALL)
    model = GPT(cfg, 50)
    opt = AdamW(model.parameters(), 1e-3)
    assert for_training(model, opt, cfg.replace(c_device_cpu_parallel="ops"), 6) is None
    assert all(lib["num_threads"] == 2 for lib in backend.blas_threads())
    reps = for_training(model, opt, cfg, 6)
    assert reps is not None and reps.n == 2
    blas = backend.blas_threads()
    assert all(lib["num_threads"] == 1 for lib in blas), blas  # woken BLAS threads would spin
    seen: dict[int, tuple[int, int]] = {}
    barrier = threading.Barrier(2, timeout=10)  # passes only if both replicas run at the same time

    def forward(self, x, ctx=None):
        barrier.wait()
        seen[id(self)] = (threading.get_ident(), backend.pool.threads())
        return original(self, x, ctx)

    original = GPT.forward
    monkeypatch.setattr(GPT, "forward", forward)
    x, y = batches(50, 1)[0]
    train_step(model, opt, [(x, y, None)], 1e-3, 1.0, replicas=reps)
    assert len({ident for ident, _ in seen.values()}) == 2
    assert {threads for _, threads in seen.values()} == {1}
    assert backend.pool.threads() == 2  # restored after the step


def test_replicas_evaluate_the_mean_loss_of_the_whole_batch(two_threads) -> None:
    from baby.nn.layers import cross_entropy
    cfg = config.as_config(SMALL)
    model = GPT(cfg, 50).eval()
    reps = Replicas(model, AdamW(model.parameters(), 1e-3), 2)
    x, y = batches(50, 1)[0]
    assert float(reps.loss(x, y)) == pytest.approx(float(cross_entropy(model.forward(x), y)[0]), rel=1e-12)


def test_replicas_with_dropout_and_health_repeat_bit_for_bit(two_threads) -> None:
    from baby.health import Health

    def run() -> tuple[list[float], list[float]]:
        cfg = config.as_config({**SMALL, "r_dropout": 0.2})
        model = GPT(cfg, 50)
        opt = AdamW(model.parameters(), 1e-3)
        reps = Replicas(model, opt, 2)
        health = Health(model, opt)
        losses, figures = [], []
        for i, (x, y) in enumerate(batches(50, 3)):
            result = train_step(model, opt, [(x, y, backend.rng(5, 1, i))], 1e-3, 1.0, health=health, replicas=reps)
            losses.append(float(result.loss))
            figures.append(health.read(result.health))
        assert all(len(f["residual_rms"]) == cfg.n_layers and all(v > 0 for v in f["residual_rms"]) for f in figures)
        return losses, [f["grad_norm"]["head"] for f in figures]

    assert run() == run()


@pytest.mark.parametrize("layout, rows, expected", [("auto", 6, 2), ("auto", 1, 1), ("batch", 6, 2), ("ops", 6, 1)])
def test_the_layout_setting_chooses_replicas_per_thread(two_threads, layout: str, rows: int, expected: int) -> None:
    assert replica_count(config.as_config({"c_device_cpu_parallel": layout}), rows) == expected


def test_one_thread_never_uses_replicas() -> None:
    backend.use("cpu", 1)
    try:
        assert replica_count(config.as_config({"c_device_cpu_parallel": "batch"}), 8) == 1
    finally:
        backend.use("cpu")


def test_a_run_records_its_replicas_and_resumes_bit_for_bit_with_them(tmp_path) -> None:
    from baby.runs import RunStore
    from baby.train import Interrupted
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log. " * 60, encoding="utf-8")
    settings = {**TINY_RUN, "c_device_cpu_cores": 2, "c_device_cpu_yield": 0, "c_device_cpu_parallel": "batch"}
    whole = plans.train(settings, [str(corpus)], root=tmp_path / "a", log=quiet)
    with pytest.raises(Interrupted):
        plans.train(settings, [str(corpus)], root=tmp_path / "b", log=quiet, stop_at=5)
    (guid,) = RunStore(tmp_path / "b").guids()
    assert RunStore(tmp_path / "b").read("config", guid)["runtime"]["cpu_replicas"] == 2
    plans.resume(guid, root=tmp_path / "b", log=quiet)
    a = RunStore(tmp_path / "a").read("report", whole)["curves"]["train_loss"]
    b = RunStore(tmp_path / "b").read("report", guid)["curves"]["train_loss"]
    assert a == b
    backend.use("cpu")
