"""The ops layer: every op's fast body equals its reference body (float64 to rounding, float32 close),
on odd shapes, with padding and cut into row blocks over the pool; the switch runs the references;
whole models run both ways give the same logits, gradients and AdamW step."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy
import pytest

from baby import backend, ops, pool
from baby.config import Config
from baby.nn.model import GPT
from baby.ops import registry
from baby.optim import AdamW
from tests.conftest import TINY


@pytest.fixture
def blocks(monkeypatch):
    """Two threads, and blocks from 4,096 values on: the test-sized arrays are really cut into blocks."""
    monkeypatch.setattr(pool, "MIN_ELEMENTS", 4096)
    backend.set_cpu_threads(2)
    yield
    backend.set_cpu_threads(backend.cpu_count())


def both(fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """fn(*args) on the fast bodies and on the references, each on fresh copies of the arguments
    (in-place ops write into theirs)."""
    out = []
    for mode in ("fast", "reference"):
        with ops.using(mode):
            out.append(fn(*[a.copy() if hasattr(a, "shape") and hasattr(a, "copy") else a for a in args]))
    return out[0], out[1]


def leaves(value: Any) -> list[numpy.ndarray]:
    """The arrays of a result (nested tuples; a glu cache's gate name is skipped)."""
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in leaves(v)]
    return [backend.to_host(value)] if hasattr(value, "shape") or isinstance(value, float) else []


def assert_close(fast: Any, reference: Any, dtype: Any) -> None:
    tol = {numpy.float64: 1e-12, numpy.float32: 2e-5}[dtype]
    a, b = leaves(fast), leaves(reference)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        scale = max(float(numpy.max(numpy.abs(y), initial=0.0)), 1.0)
        err = float(numpy.max(numpy.abs(x.astype(numpy.float64) - y.astype(numpy.float64)), initial=0.0))
        assert err <= tol * scale, f"max difference {err:.3g} (scale {scale:.3g})"


def attention_case(rng: numpy.random.Generator, dtype: Any, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """(B, K, G, T, D) queries over (B, K, 1, T, D) keys with a causal bias, the second row left-padded."""
    b, kv, g, t, d = shape
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, kv, g, t, d), (b, kv, 1, t, d), (b, kv, 1, t, d)))
    bias = numpy.where(numpy.tril(numpy.ones((t, t), bool)), 0.0, -1e30).astype(dtype)
    bias = numpy.broadcast_to(bias, (b, 1, 1, t, t)).copy()
    bias[1, ..., :2] = -1e30  # padding keys
    return q, k, v, bias, 0.3


def glu_case(rng: numpy.random.Generator, dtype: Any, shape: tuple[int, ...], gate: str) -> tuple[Any, ...]:
    return rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype), gate


# Each op with arguments made from (rng, dtype, shape); an op's backward is checked on its forward's output.
CASES: dict[str, Callable[[numpy.random.Generator, Any, tuple[int, ...]], Callable[[], Any]]] = {
    "gelu": lambda r, d, s: (lambda x: ops.gelu(x), 4 * r.standard_normal(s).astype(d)),
    "gelu_backward": lambda r, d, s: (lambda x, dy: ops.gelu_backward(x, ops.gelu.reference(x)[1], dy),
                                      4 * r.standard_normal(s).astype(d), r.standard_normal(s).astype(d)),
    "sigmoid": lambda r, d, s: (ops.sigmoid, 10 * r.standard_normal(s).astype(d)),
    "silu": lambda r, d, s: (ops.silu, 4 * r.standard_normal(s).astype(d)),
    "silu_backward": lambda r, d, s: (lambda x, dy: ops.silu_backward(x, ops.sigmoid(x), dy),
                                      4 * r.standard_normal(s).astype(d), r.standard_normal(s).astype(d)),
    "glu": lambda r, d, s: (ops.glu, *glu_case(r, d, s, "swish")),
    "glu:sigmoid": lambda r, d, s: (ops.glu, *glu_case(r, d, s, "sigmoid")),
    "glu_backward": lambda r, d, s: (lambda f, dy: ops.glu_backward(ops.glu.reference(f, "swish")[1], dy),
                                     glu_case(r, d, s, "swish")[0], r.standard_normal(s).astype(d)),
    "glu_backward:sigmoid": lambda r, d, s: (lambda f, dy: ops.glu_backward(ops.glu.reference(f, "sigmoid")[1], dy),
                                             glu_case(r, d, s, "sigmoid")[0], r.standard_normal(s).astype(d)),
    "dropout": lambda r, d, s: (lambda x: ops.dropout(x, 0.3, numpy.random.default_rng(7)), r.standard_normal(s).astype(d)),
    "dropout_backward": lambda r, d, s: (ops.dropout_backward, r.standard_normal(s).astype(d),
                                         (r.random(s) > 0.3).astype(d) / 0.7),
    "layer_norm": lambda r, d, s: (lambda x, g, b: ops.layer_norm(x, g, b, 1e-5), 3 + 2 * r.standard_normal(s).astype(d),
                                   r.standard_normal(s[-1]).astype(d), r.standard_normal(s[-1]).astype(d)),
    "layer_norm_backward": lambda r, d, s: (
        lambda x, g, dy: ops.layer_norm_backward(dy, *ops.layer_norm.reference(x, g, g, 1e-5)[1], g),
        r.standard_normal(s).astype(d), r.standard_normal(s[-1]).astype(d), r.standard_normal(s).astype(d)),
    "rms_norm": lambda r, d, s: (lambda x, g: ops.rms_norm(x, g, 1e-6), r.standard_normal(s).astype(d),
                                 r.standard_normal(s[-1]).astype(d)),
    "rms_norm_backward": lambda r, d, s: (
        lambda x, g, dy: ops.rms_norm_backward(dy, *ops.rms_norm.reference(x, g, 1e-6)[1], g),
        r.standard_normal(s).astype(d), r.standard_normal(s[-1]).astype(d), r.standard_normal(s).astype(d)),
    "softmax_": lambda r, d, s: (ops.softmax_, 5 * r.standard_normal(s).astype(d)),
    "softmax_:axis1": lambda r, d, s: (lambda x: ops.softmax_(x, axis=1), 5 * r.standard_normal(s).astype(d)),
    "softmax_backward_": lambda r, d, s: (lambda x, dp: ops.softmax_backward_(ops.softmax_.reference(x), dp),
                                          r.standard_normal(s).astype(d), r.standard_normal(s).astype(d)),
    "log_softmax": lambda r, d, s: (ops.log_softmax, 5 * r.standard_normal(s).astype(d)),
    "cross_entropy": lambda r, d, s: (lambda z, t: ops.cross_entropy(z, t, -1, 8.0), 3 * r.standard_normal(s).astype(d),
                                      numpy.where(r.random(s[:-1]) < 0.2, -1, r.integers(0, s[-1], s[:-1]))),
    "attend": lambda r, d, s: (ops.attend, *attention_case(r, d, (2, 2, 2) + s[-2:])),
    "attend_backward": lambda r, d, s: (
        lambda q, k, v, bias, scale, dy: ops.attend_backward(dy, q, k, v, ops.attend.reference(q, k, v, bias, scale)[1],
                                                              scale),
        *attention_case(r, d, (2, 2, 2) + s[-2:]), r.standard_normal((2, 2, 2) + s[-2:]).astype(d)),
    "rope": lambda r, d, s: (lambda x, c, sn: ops.rope(x, c, sn), *rope_case(r, d, s)),
    "rope:inverse": lambda r, d, s: (lambda x, c, sn: ops.rope(x, c, sn, inverse=True), *rope_case(r, d, s)),
    "rope:out": lambda r, d, s: (lambda x, c, sn: ops.rope(x, c, sn, True, numpy.zeros((2, 3, 2, x.shape[-1]), d)
                                                           .repeat(s[-2] // 2 + 1, axis=2)[:, :, :s[-2]]), *rope_case(r, d, s)),
    "adamw": lambda r, d, s: (adamw_case, r.standard_normal(s).astype(d).ravel(), (r.random(s) < 0.5).astype(d).ravel(),
                              r.standard_normal(s).astype(d).ravel(), 0.1 * r.standard_normal(s).astype(d).ravel(),
                              r.random(s).astype(d).ravel()),
    "grad_norm": lambda r, d, s: (ops.grad_norm, r.standard_normal(s).astype(d).ravel()),
    "clip_": lambda r, d, s: (lambda g: ops.clip_(g, ops.grad_norm.reference(g), 3.0), r.standard_normal(s).astype(d)),
    "clip_:below": lambda r, d, s: (lambda g: ops.clip_(g, ops.grad_norm.reference(g), 1e9), r.standard_normal(s).astype(d)),
}


def rope_case(r: numpy.random.Generator, d: Any, s: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """(B, H, T, D) with D even, and the tables of positions that restart in the second row (left padding)."""
    x = r.standard_normal((2, 3, s[-2], 2 * (s[-1] // 2 + 1))).astype(d)
    angles = r.random((2, 1, s[-2], x.shape[-1] // 2)) * 6.0
    return x, numpy.cos(angles).astype(d), numpy.sin(angles).astype(d)


def adamw_case(g: Any, mask: Any, w: Any, m: Any, v: Any) -> tuple[Any, Any, Any]:
    ops.adamw(g, mask, w, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9 ** 3, 1 - 0.95 ** 3)
    return w, m, v


SHAPES = [(3, 5, 7), (4, 33, 130)]  # odd: nothing a multiple of a vector width or a block


def test_every_op_is_checked_here_and_carries_its_math() -> None:
    checked = {name.split(":")[0] for name in CASES}
    assert checked == set(ops.OPS)
    for name, op in ops.OPS.items():
        source = inspect.getsource(op)  # the reference's: the op wraps it
        assert source == inspect.getsource(op.reference)
        assert '"""' in source, f"{name}: no formula in its docstring"
        if name.endswith("backward"):
            assert "# d:" in source, f"{name}: no derivation comment"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_body_equals_reference(name: str, dtype: Any, shape: tuple[int, ...]) -> None:
    fn, *args = CASES[name](numpy.random.default_rng(0), dtype, shape)
    fast, reference = both(fn, *args)
    assert_close(fast, reference, dtype)


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_body_in_row_blocks_equals_reference(blocks, name: str, dtype: Any) -> None:
    fn, *args = CASES[name](numpy.random.default_rng(1), dtype, (6, 37, 130))
    fast, reference = both(fn, *args)
    assert_close(fast, reference, dtype)


@pytest.mark.parametrize("name", ["gelu", "gelu_backward", "layer_norm", "rms_norm", "softmax_", "cross_entropy"])
def test_fp16_inputs_give_the_same_values_both_ways(name: str) -> None:
    fn, *args = CASES[name](numpy.random.default_rng(2), numpy.float16, (4, 9, 40))
    fast, reference = both(fn, *args)
    for x, y in zip(leaves(fast), leaves(reference)):
        assert x.dtype == y.dtype and numpy.isfinite(x).all() and numpy.isfinite(y).all()
        numpy.testing.assert_allclose(x.astype(numpy.float32), y.astype(numpy.float32), rtol=2e-2, atol=2e-2)


def test_the_switch_and_the_environment_run_the_references(monkeypatch) -> None:
    calls: list[str] = []
    reference = ops.gelu.reference
    monkeypatch.setitem(ops.gelu.fast, "numpy", lambda x: calls.append("fast") or reference(x))
    x = numpy.ones(3)

    def ran(mode: str) -> str:
        before = len(calls)
        ops.gelu(x)
        assert ops.mode() == mode
        return "fast" if len(calls) > before else "reference"

    assert ran("fast") == "fast"
    with ops.using("reference"):
        assert ran("reference") == "reference"
    assert ran("fast") == "fast"
    monkeypatch.setenv(registry.ENV, "reference")
    registry.refresh_environment()
    try:
        assert ran("reference") == "reference"
    finally:
        monkeypatch.delenv(registry.ENV)
        registry.refresh_environment()
    assert ran("fast") == "fast"
    with pytest.raises(ValueError, match="c_ops"):
        ops.use("quick")


def test_the_config_names_the_switch() -> None:
    assert Config({}).c_ops == "fast"
    assert Config({"c_ops": "reference"}).c_ops == "reference"


MODELS = {
    "gpt": {"c_attention": "mha", "c_network": "mlp", "c_norm": "layer", "c_position": "learned"},
    "llama": {"c_attention": "mha", "c_network": "swi", "c_norm": "rms", "c_position": "rope", "c_bias": False},
    "conv+induction": {"c_attention": "conv+induction", "c_network": "mlp", "c_position": "none"},
    "gqa": {"c_attention": "gqa", "c_network": "gln", "c_norm": "rms", "c_position": "rope"},
    "moe": {"c_attention": "moh", "c_network": "moe", "r_dropout": 0.1},
}


def train_once(settings: dict[str, Any], mode: str, padded: bool) -> tuple[Any, ...]:
    """Logits, every parameter gradient and the parameters after one AdamW step, on ``mode`` bodies."""
    backend.use("cpu", d_type="fp64")
    cfg = Config({**TINY, **settings})
    model = GPT(cfg, 11)
    opt = AdamW(model.parameters(), 1e-2, (0.9, 0.95), 1e-8, 0.1)
    rng = numpy.random.default_rng(5)
    ids = rng.integers(0, 5, (3, cfg.n_ctx))  # few ids: repeats for induction
    targets = rng.integers(0, 11, (3, cfg.n_ctx))
    valid = None
    if padded:
        valid = numpy.ones(ids.shape, bool)
        valid[1, :4] = False
        targets[1, :4] = -1
    with ops.using(mode):
        model.train()
        opt.zero_grad()
        ctx = model.context(ids, valid=valid, rng=backend.rng(1, 2))
        logits = model.forward(ids, ctx)
        loss, dlogits = ops.cross_entropy(logits, targets)
        model.backward(dlogits)
        grads = [p.grad.copy() for p in model.parameters()]
        opt.clip(1.0)
        opt.step()
    return logits, grads, opt.flat.copy(), loss


@pytest.mark.parametrize("padded", [False, True], ids=["full", "left-padded"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_whole_model_runs_the_same_on_references(name: str, padded: bool) -> None:
    fast = train_once(MODELS[name], "fast", padded)
    reference = train_once(MODELS[name], "reference", padded)
    for a, b in zip(fast[:1] + tuple(fast[1]) + fast[2:], reference[:1] + tuple(reference[1]) + reference[2:]):
        assert_close(a, b, numpy.float64)


def test_whole_model_on_references_in_row_blocks(blocks) -> None:
    settings = {**MODELS["llama"], "n_emb": 32, "n_ctx": 40}
    fast = train_once(settings, "fast", True)
    reference = train_once(settings, "reference", True)
    for a, b in zip(fast[:1] + tuple(fast[1]) + fast[2:], reference[:1] + tuple(reference[1]) + reference[2:]):
        assert_close(a, b, numpy.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(n for n, o in ops.OPS.items() if "cupy" in o.fast))
def test_cupy_bodies_equal_references(name: str) -> None:
    """The fused CuPy kernels (fp32 inside) against the references on the GPU."""
    backend.use("gpu", d_type="fp32")
    fn, *args = CASES[name](numpy.random.default_rng(3), numpy.float32, (4, 33, 130))
    fast, reference = both(fn, *[backend.asarray(a) if isinstance(a, numpy.ndarray) else a for a in args])
    assert_close(fast, reference, numpy.float32)


def test_a_run_with_c_ops_reference_trains_on_the_references(tmp_path, corpus) -> None:
    from baby import plans
    from baby.runs import RunStore
    from tests.conftest import TINY_RUN, quiet
    fast = plans.train(TINY_RUN, [str(corpus)], root=tmp_path / "fast", log=quiet)
    assert ops.mode() == "fast"
    ref = plans.train({**TINY_RUN, "c_ops": "reference"}, [str(corpus)], root=tmp_path / "ref", log=quiet)
    assert ops.mode() == "reference"  # the conftest puts the fast bodies back after the test
    a = RunStore(tmp_path / "fast").read("report", fast)["final_val_loss"]
    b = RunStore(tmp_path / "ref").read("report", ref)["final_val_loss"]
    assert abs(a - b) < 1e-3  # float32: the two bodies round differently, the run is the same
