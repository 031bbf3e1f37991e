"""The backend's CPU threads: threadpoolctl limits whichever BLAS NumPy was built with, and baby's own
pool (baby/pool.py) cuts GEMMs and elementwise work into row blocks. The pooled paths must give the
serial results: the same bits where a block's arithmetic is the whole array's, the same values to
rounding where block sums are added, and the same bits from one run to the next."""
from __future__ import annotations

import sys
import threading

import numpy
import pytest

from baby import backend, config, device, pool
from baby.config import Config
from baby.nn import layers
from baby.nn.model import GPT
from baby.optim import AdamW
from tests.conftest import TINY_RUN, quiet


@pytest.fixture()
def restore_threads(monkeypatch):
    """Threads back to every core afterwards; blocks from 4,096 values on, so that the test-sized
    arrays below are really cut into blocks."""
    monkeypatch.setattr(pool, "MIN_ELEMENTS", 4096)
    yield
    backend.set_cpu_threads(backend.cpu_count())


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_threads_set_blas_and_the_pool(restore_threads, threads: int) -> None:
    pytest.importorskip("threadpoolctl")
    backend.set_cpu_threads(threads)
    blas = backend.blas_threads()
    assert blas and all(lib["num_threads"] == threads for lib in blas)
    assert pool.threads() == threads


def test_a_blas_loaded_after_the_first_switch_is_switched_too(restore_threads, monkeypatch) -> None:
    """An import (SciPy's own OpenBLAS, say) may load a BLAS after the libraries were looked up: the
    next switch looks again, or that library would keep its threads spinning beside the replicas."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    scans = []

    class Lib:
        def set_num_threads(self, n: int) -> None:
            scans[-1].append(n)

    class Controller:
        def __init__(self) -> None:
            scans.append([])

        def select(self, user_api: str):
            return type("Selected", (), {"lib_controllers": [Lib()]})()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Controller)
    monkeypatch.setattr(backend, "_BLAS", None)  # both restored afterwards: the real libraries again
    monkeypatch.setattr(backend, "_BLAS_SCANNED_AT", -1)
    backend.set_blas_threads(2)
    backend.set_blas_threads(1)
    assert scans == [[2, 1]]  # looked up once while nothing new is imported
    monkeypatch.setitem(sys.modules, "a_module_with_its_own_blas", object())
    backend.set_blas_threads(1)
    assert scans == [[2, 1], [1]]


def test_freed_memory_is_kept_so_a_step_does_not_fault_its_pages_in_again(restore_threads) -> None:
    resource = pytest.importorskip("resource")
    if not backend.keep_freed_memory():
        pytest.skip("not glibc")
    numpy.ones(1 << 22, dtype=numpy.float32)  # 16 MiB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        numpy.ones(1 << 22, dtype=numpy.float32)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 100  # not 5 x 4096 pages


def test_pool_blocks_cover_the_rows_in_order_and_small_work_stays_whole(restore_threads) -> None:
    backend.set_cpu_threads(2)
    assert pool.blocks(1000, pool.MIN_ELEMENTS - 1) == [(0, 1000)]
    ranges = pool.blocks(1000, 1 << 24)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000 and len(ranges) == 2 * pool.BLOCKS_PER_THREAD
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert pool.blocks(3, 1 << 24) == [(0, 1), (1, 2), (2, 3)]  # never an empty block
    backend.set_cpu_threads(1)
    assert pool.blocks(1000, 1 << 24) == [(0, 1000)]


def test_pool_runs_blocks_on_several_threads_and_returns_them_in_order() -> None:
    p = pool.Pool(2)
    seen: set[str] = set()
    barrier = threading.Barrier(2, timeout=10)  # passes only if two threads run blocks at once

    def block(i: int) -> int:
        if i < 2:
            seen.add(threading.current_thread().name)
            barrier.wait()
        return i * i

    assert p.run(block, 6) == [0, 1, 4, 9, 16, 25]
    assert len(seen) == 2


def test_pool_hands_a_blocks_error_to_the_caller_and_stays_usable() -> None:
    p = pool.Pool(2)

    def block(i: int) -> int:
        if i == 3:
            raise ValueError("block 3")
        return i

    with pytest.raises(ValueError, match="block 3"):
        p.run(block, 8)
    assert p.run(lambda i: i, 4) == [0, 1, 2, 3]


def test_nested_use_of_the_pool_runs_serially_instead_of_deadlocking() -> None:
    p = pool.Pool(2)
    assert p.run(lambda i: sum(p.run(lambda j: j, 3)) + i, 4) == [3, 4, 5, 6]


def pooled_and_serial(fn, *args):
    """fn(*args) with the pool's two threads and with one thread (fresh copies of the arguments)."""
    backend.set_cpu_threads(2)
    assert len(pool.blocks(1000, 1 << 20)) > 1
    out = []
    for threads in (2, 1):
        backend.set_cpu_threads(threads)
        out.append(fn(*[a.copy() if isinstance(a, numpy.ndarray) else a for a in args]))
    return out


ELEMENTWISE = {
    "gelu": lambda x: layers.gelu(x),
    "gelu_backward": lambda x: layers.gelu_backward(x, layers.gelu(x)[1], x[::-1].copy()),
    "softmax_": lambda x: layers.softmax_(x),
    "softmax_backward_": lambda x: layers.softmax_backward_(layers.softmax(x), x[::-1].copy()),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_pooled_elementwise_work_is_bit_for_bit_the_serial_work(restore_threads, name: str, dtype) -> None:
    x = numpy.random.default_rng(2).standard_normal((8, 64, 300)).astype(dtype)
    pooled, serial = pooled_and_serial(ELEMENTWISE[name], x)
    for p, s in zip(pooled if isinstance(pooled, tuple) else (pooled,), serial if isinstance(serial, tuple) else (serial,)):
        assert p.dtype == s.dtype and numpy.array_equal(p, s)


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float16])
def test_pooled_norms_match_the_serial_norms(restore_threads, norm: str, dtype) -> None:
    rng = numpy.random.default_rng(3)
    x, dy = rng.standard_normal((16, 128, 256)).astype(dtype), rng.standard_normal((16, 128, 256)).astype(dtype)

    def run(x, dy):
        module = layers.LayerNorm(256) if norm == "layer" else layers.RMSNorm(256)
        for p in module.parameters():
            p.data = p.data.astype(dtype)
            p.grad = numpy.zeros_like(p.data)
        y = module(x)
        return y, module.backward(dy), [p.grad.astype(numpy.float64) for p in module.parameters()]

    (y2, dx2, g2), (y1, dx1, g1) = pooled_and_serial(run, x, dy)
    assert numpy.array_equal(y2, y1) and numpy.array_equal(dx2, dx1)  # per-row arithmetic: same bits
    for a, b in zip(g2, g1):  # sums over rows: block partials added in order
        numpy.testing.assert_allclose(a, b, rtol=1e-3 if dtype == numpy.float16 else 1e-5, atol=1e-3)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float16])
def test_pooled_cross_entropy_matches_the_serial_one(restore_threads, dtype) -> None:
    rng = numpy.random.default_rng(4)
    logits = (3 * rng.standard_normal((16, 128, 500))).astype(dtype)
    targets = rng.integers(0, 500, (16, 128))
    targets[3, :40] = -1  # ignored positions
    (loss2, d2), (loss1, d1) = pooled_and_serial(lambda z, t: layers.cross_entropy(z, t, -1, 8.0), logits, targets)
    assert d2.dtype == d1.dtype == dtype and numpy.array_equal(d2, d1)
    assert loss2 == pytest.approx(float(loss1), rel=1e-12)
    assert not d2[3, :40].any()


def test_pooled_adamw_and_clip_match_the_serial_ones(restore_threads) -> None:
    def run(seed: int):
        cfg = Config({"n_layers": 2, "n_emb": 64, "n_heads": 4, "n_ctx": 16})
        model = GPT(cfg, 300)
        opt = AdamW(model.parameters(), 1e-2, (0.9, 0.95), 1e-8, 0.1)
        g = numpy.random.default_rng(seed).standard_normal(opt.flat_grad.shape).astype(opt.flat_grad.dtype)
        for _ in range(3):
            opt.flat_grad[...] = g
            norm = opt.clip(1.0)
            opt.step()
        return float(norm), opt.flat.copy(), opt.m.copy(), opt.v.copy()

    (n2, *s2), (n1, *s1) = pooled_and_serial(run, 5)
    assert n2 == pytest.approx(n1, rel=1e-12)
    for a, b in zip(s2, s1):
        numpy.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_training_with_the_pool_repeats_bit_for_bit(restore_threads) -> None:
    from baby.train import train_step

    def losses() -> list[float]:
        backend.set_cpu_threads(2)
        cfg = Config({"n_layers": 2, "n_emb": 128, "n_heads": 4, "n_ctx": 64, "batch_size": 8})
        model = GPT(cfg, 300)
        opt = AdamW(model.parameters(), 3e-3, (0.9, 0.95), 1e-8, 0.1)
        rng = numpy.random.default_rng(6)
        out = []
        for i in range(4):
            w = rng.integers(0, 300, (8, 65))
            out.append(float(train_step(model, opt, [(w[:, :-1], w[:, 1:], backend.rng(1, i))], 3e-3, 1.0).loss))
        return out

    assert losses() == losses()


def test_busy_cores_sees_a_process_that_keeps_a_core_busy() -> None:
    import subprocess
    import sys
    import time
    if not __import__("os").path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert backend.busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_a_run_yields_the_cores_others_keep_busy_records_it_and_resumes_on_as_many(
        restore_threads, monkeypatch, tmp_path) -> None:
    from baby import plans
    from baby.runs import RunStore
    from baby.train import Interrupted
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log. " * 60, encoding="utf-8")
    monkeypatch.setattr(backend, "cpu_count", lambda: 2)
    monkeypatch.setattr(backend, "busy_cores", lambda: 1)
    settings = {**TINY_RUN, "c_device_cpu_cores": 2}
    lines: list[str] = []
    with pytest.raises(Interrupted):
        plans.train(settings, [str(corpus)], root=tmp_path, log=lines.append, stop_at=4)
    assert any("keep 1 of the 2 cores busy, so this runs on 1 thread" in line for line in lines)
    (guid,) = RunStore(tmp_path).guids()
    record = RunStore(tmp_path).read("config", guid)
    assert record["runtime"]["cpu_threads"] == 1 and record["settings"]["c_device_cpu_cores"] == 2
    monkeypatch.setattr(backend, "busy_cores", lambda: 0)  # the machine is free again: still 1, as recorded
    plans.resume(guid, root=tmp_path, log=quiet)
    assert pool.threads() == 1
    assert device.cpu_threads(config.as_config(settings)) == (2, "")
    monkeypatch.setattr(backend, "busy_cores", lambda: 2)
    assert device.cpu_threads(config.as_config(settings))[0] == 1  # never below one thread
    assert device.cpu_threads(config.as_config({**settings, "c_device_cpu_yield": 0})) == (2, "")


@pytest.mark.parametrize("grouped", [False, True])
def test_pooled_attention_by_blocks_of_sequences_is_the_serial_attention(restore_threads, grouped: bool) -> None:
    from baby.nn.mixers.kit import attend, attend_backward, causal_bias
    rng = numpy.random.default_rng(7)
    b, t, d = 6, 24, 8
    shape_q, shape_kv = ((b, 2, 2, t, d), (b, 2, 1, t, d)) if grouped else ((b, 4, t, d), (b, 4, t, d))
    q, k, v = (rng.standard_normal(s).astype(numpy.float32) for s in (shape_q, shape_kv, shape_kv))
    dy = rng.standard_normal(shape_q).astype(numpy.float32)
    valid = numpy.ones((b, t), bool)
    valid[1, :5] = False  # a padded sequence: its own mask row must go with it into its block
    bias = causal_bias(t, t, None, rank=len(shape_q)) + numpy.where(
        valid, 0.0, -1e9).astype(numpy.float32).reshape((b,) + (1,) * (len(shape_q) - 2) + (t,))

    def run(q, k, v, dy):
        y, p = attend(q, k, v, bias, 0.3)
        return (y, p) + attend_backward(dy, q, k, v, p.copy(), 0.3)

    pooled, serial = pooled_and_serial(run, q, k, v, dy)
    for a, s in zip(pooled, serial):
        assert a.shape == s.shape
        numpy.testing.assert_allclose(a, s, rtol=1e-6, atol=1e-6)


def test_busy_cores_does_not_count_this_processs_own_busy_threads() -> None:
    import os
    if not os.path.exists("/proc/self/task"):
        pytest.skip("no /proc")
    stop = threading.Event()
    a = numpy.ones((256, 256), numpy.float32)

    def spin() -> None:  # a thread of ours in a GIL-free loop, like a BLAS thread that spins
        while not stop.is_set():
            a @ a

    before = backend.busy_cores()
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        during = backend.busy_cores()
    finally:
        stop.set()
        thread.join()
    assert during <= max(before, backend.busy_cores())
