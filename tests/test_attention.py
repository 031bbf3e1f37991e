"""The attention variants: each against a direct per-position reference of the equations in its
docstring, what each one claims (gqa's sharing and its settings, moh's uniform gate = mha, swh's hard
choice and straight-through gradient, rfa's window and memory, aft's stability, gla's gates),
padding, and incremental decoding equal to a full forward at module level."""
from __future__ import annotations

import math

import numpy
import pytest

from baby import backend
from baby.config import Config
from baby.nn import variants
from baby.nn.context import Context
from baby.nn.gradcheck import check_module, directional_check
from baby.nn.layers import softmax
from baby.nn.mixers.head_attention import HeadAttention
from baby.nn.mixers.kit import heads_first
from baby.nn.mixers.swh import SwitchHead
from tests.conftest import TINY

VARIANTS = ["mha", "moh", "gqa", "swh", "gla", "rfa", "aft"]
B = 2


def build(name: str, seed: int = 0, cls: type | None = None, **extra: object):
    cfg = Config({**TINY, "n_ctx": 24, "c_attention": name, **extra})
    return (cls or variants.lookup("mixer", name).cls)(cfg, numpy.random.default_rng(seed))


def context(x, start: int = 0, state: dict | None = None, valid=None, positions=None) -> Context:
    xp = backend.xp
    b, t, _ = x.shape
    if positions is None:
        positions = xp.broadcast_to(xp.arange(start, start + t)[None], (b, t))
    return Context(ids=xp.zeros((b, t), dtype=xp.int64), positions=positions, valid=valid, state=state)


def run(module, x, **kw):
    return backend.to_host(module.forward(x, context(x, **kw)))


def inputs(t: int, seed: int = 1, scale: float = 1.0, width: int = 16):
    return backend.asarray(numpy.random.default_rng(seed).standard_normal((B, t, width)) * scale, backend.dtype)


def host(p) -> numpy.ndarray:
    return backend.to_host(p.data).astype(numpy.float64)


def roughen(module, seed: int = 5, std: float = 0.5) -> None:
    """Larger random weights than the 0.02 init, so gates make varied choices and keys vary a lot."""
    rng = numpy.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = backend.asarray(rng.normal(0.0, std, p.shape), p.data.dtype)


# ---- registry and settings ---------------------------------------------------------------------------

def test_every_variant_and_the_lda_alias_are_registered() -> None:
    for name in VARIANTS + ["lda"]:
        assert Config({**TINY, "c_attention": name}).c_attention == name
    assert variants.lookup("mixer", "lda").cls is variants.lookup("mixer", "gla").cls


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_is_used(device64: str, name: str) -> None:
    module = build(name)
    roughen(module)
    x = inputs(9)
    out = module.forward(x, context(x))
    module.backward(backend.xp.ones_like(out))
    for pname, p in module.named_parameters():
        assert bool((p.grad != 0).any()), f"{name}.{pname} gets no gradient"


def test_gqa_kv_heads_default_and_validation() -> None:
    assert build("gqa").n_kv == 2  # 4 heads -> 2 shared K/V heads
    assert build("gqa", n_heads=5, n_emb=20).n_kv == 1
    assert build("gqa", n_heads=6, n_emb=24).n_kv == 3
    assert build("gqa", n_kv_heads=1).n_kv == 1
    assert build("gqa", n_kv_heads=4).n_kv == 4
    for bad in (3, 8):
        with pytest.raises(ValueError, match="n_kv_heads"):
            build("gqa", n_kv_heads=bad)
    # the projection holds H query heads and 2K key/value heads
    assert build("gqa", n_kv_heads=1).qkv.weight.shape == (16, (4 + 2) * 4)


def test_rfa_window_default_and_setting() -> None:
    assert build("rfa").window == 6  # n_ctx 24 // 4
    assert build("rfa", s_window=5).window == 5


# ---- quadratic variants against mha -----------------------------------------------------------------

def copy_attention_weights(src: HeadAttention, dst: HeadAttention) -> None:
    dst.qkv.weight.data[...] = src.qkv.weight.data
    dst.qkv.bias.data[...] = src.qkv.bias.data
    dst.proj.weight.data[...] = src.proj.weight.data
    dst.proj.bias.data[...] = src.proj.bias.data


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_gqa_equals_mha_with_each_kv_head_repeated_for_its_group(device64: str, position: str) -> None:
    gqa, mha = build("gqa", c_position=position), build("mha", c_position=position)
    roughen(gqa)
    h, kv, d = 4, 2, 4
    w, bias = host(gqa.qkv.weight), host(gqa.qkv.bias)
    # mha's columns: 4 query heads, then keys and values of head i taken from shared head i // 2
    heads = lambda a, first: [a[..., (first + i // 2) * d:(first + i // 2 + 1) * d] for i in range(h)]
    for name, a in (("weight", w), ("bias", bias)):
        full = numpy.concatenate([a[..., :h * d]] + heads(a, h) + heads(a, h + kv), axis=-1)
        getattr(mha.qkv, name).data[...] = backend.asarray(full)
    mha.proj.weight.data[...] = gqa.proj.weight.data
    mha.proj.bias.data[...] = gqa.proj.bias.data
    x = inputs(11)
    numpy.testing.assert_allclose(run(gqa, x), run(mha, x), rtol=1e-10, atol=1e-12)


def test_gqa_with_as_many_kv_heads_as_heads_is_mha(device64: str) -> None:
    gqa, mha = build("gqa", n_kv_heads=4), build("mha")
    copy_attention_weights(gqa, mha)
    x = inputs(10)
    numpy.testing.assert_allclose(run(gqa, x), run(mha, x), rtol=1e-12, atol=1e-14)


def test_moh_with_a_uniform_gate_is_mha(device64: str) -> None:
    moh, mha = build("moh"), build("mha")
    roughen(mha)
    copy_attention_weights(mha, moh)
    moh.gate.weight.data[...] = 0.0
    moh.gate.bias.data[...] = 0.0
    x = inputs(10)
    numpy.testing.assert_allclose(run(moh, x), run(mha, x), rtol=1e-12, atol=1e-14)
    roughen(moh.gate)  # a non-uniform gate changes the output
    assert not numpy.allclose(run(moh, x), run(mha, x))


def test_moh_matches_its_equation(device64: str) -> None:
    moh, mha = build("moh", r_temp=0.5), build("mha", r_temp=0.5)
    roughen(moh)
    copy_attention_weights(moh, mha)
    x = inputs(8)
    # head outputs of mha: the output projection's input, recovered by removing the projection
    mha.forward(x, context(x))
    heads = mha.proj.x  # (B, T, H*D) before the output projection
    g = softmax((x @ moh.gate.weight.data + moh.gate.bias.data) / 0.5)
    mixed = heads.reshape(B, 8, 4, 4) * (4 * g)[..., None]
    expected = mixed.reshape(B, 8, 16) @ moh.proj.weight.data + moh.proj.bias.data
    numpy.testing.assert_allclose(run(moh, x), backend.to_host(expected), rtol=1e-10, atol=1e-12)


# ---- swh: hard top-1 head, straight-through gradient -------------------------------------------------

def switch(seed: int = 0, cls: type = SwitchHead) -> SwitchHead:
    module = build("swh", seed=seed, cls=cls, r_temp=0.7)
    roughen(module, seed=seed + 7)
    return module


def test_swh_forward_uses_only_the_chosen_head(device64: str) -> None:
    module = switch()
    x = inputs(12)
    chosen = backend.to_host(module.choose(x)[1]).argmax(-1)  # (B, T)
    assert len(numpy.unique(chosen)) >= 3, "the test needs varied choices"
    base = run(module, x)
    d = module.head_dim
    for head in range(4):  # change head's values: only positions that chose it may change
        changed = switch()
        col = (4 + 4 + head) * d  # value columns of this head in the fused projection
        changed.qkv.weight.data[:, col:col + d] += 1.0
        diff = numpy.abs(run(changed, x) - base).max(axis=-1)
        assert (diff[chosen != head] == 0).all()
        assert (diff[chosen == head] > 1e-6).all()
    # and the output is the chosen head alone through its rows of the output projection
    mha = build("mha", r_temp=0.7)
    copy_attention_weights(module, mha)
    mha.forward(x, context(x))
    heads = backend.to_host(mha.proj.x).reshape(B, 12, 4, d)
    picked = numpy.take_along_axis(heads, chosen[..., None, None], axis=2)[:, :, 0]
    w_o = host(module.proj.weight).reshape(4, d, 16)
    expected = numpy.einsum("btd,btdc->btc", picked, w_o[chosen]) + host(module.proj.bias)
    numpy.testing.assert_allclose(base, expected, rtol=1e-10, atol=1e-12)


def test_swh_exact_mode_is_the_derivative_of_the_hard_forward(device64: str) -> None:
    module = switch()
    module.straight_through = False
    x = inputs(9)
    checked = check_module(module, x, lambda v: module.forward(v, context(v)),
                           allow_unused=("gate.weight", "gate.bias"))
    assert "input" in checked and "qkv.weight" in checked


class SoftSwitch(SwitchHead):
    """The soft mixture the straight-through estimator pretends the forward was: g . y, no choice.
    ``gate_input`` (if set) feeds the gate instead of the block input, to isolate the gate's path."""
    gate_input = None

    def mix_heads(self, x, y, ctx):
        g = softmax(self.gate(x if self.gate_input is None else self.gate_input) / self.temp)
        return y * heads_first(g)


def test_swh_straight_through_gradient_is_the_soft_mixtures_gate_gradient(device64: str) -> None:
    module, exact, soft = switch(), switch(), switch(cls=SoftSwitch)
    exact.straight_through = False
    x = inputs(9)
    w = backend.asarray(numpy.random.default_rng(3).standard_normal((B, 9, 16)))
    for m in (module, exact):
        m.forward(x, context(x))
    dx, dx_exact = module.backward(w), exact.backward(w)
    # 1. heads, projections: identical to the exact derivative of the hard forward
    for (name, p), (_, q) in zip(module.named_parameters(), exact.named_parameters()):
        if not name.startswith("gate."):
            numpy.testing.assert_array_equal(backend.to_host(p.grad), backend.to_host(q.grad))
    # 2. the gate: the derivative of the soft mixture's loss <out, w> w.r.t. the gate's parameters
    rng = numpy.random.default_rng(4)
    loss = lambda: float((soft.forward(x, context(x)) * w).sum())
    for name in ("weight", "bias"):
        p = getattr(soft.gate, name)
        directional_check(f"gate.{name}", p.data, getattr(module.gate, name).grad, loss, rng)
    # 3. the input: exact gradient through the heads + the soft mixture's gradient through the gate
    soft.gate_input = x.copy()
    loss_gate = lambda: float((soft.forward(x, context(x)) * w).sum())
    directional_check("input via gate", soft.gate_input, dx - dx_exact, loss_gate, rng)


# ---- rfa: window and memory --------------------------------------------------------------------------

def rfa_reference(module, x, positions=None) -> numpy.ndarray:
    """The docstring's equations, one query at a time."""
    x = backend.to_host(x).astype(numpy.float64)
    b, t, _ = x.shape
    h, d, w = module.n_heads, module.head_dim, module.window
    qkv = (x @ host(module.qkv.weight) + host(module.qkv.bias)).reshape(b, t, 3, h, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, D)
    if module.rotary:
        pos = numpy.arange(t) if positions is None else positions
        inv = 1.0 / 10000 ** (numpy.arange(0, d // 2) * 2.0 / d)
        ang = pos[:, None] * inv
        cos, sin = numpy.cos(ang)[None, :, None], numpy.sin(ang)[None, :, None]
        rot = lambda a: numpy.concatenate([a[..., :d // 2] * cos - a[..., d // 2:] * sin,
                                           a[..., :d // 2] * sin + a[..., d // 2:] * cos], -1)
        q, k = rot(q), rot(k)
    y = numpy.zeros((b, t, h, d))
    for i in range(t):
        lo = max(0, i - w + 1)
        s = numpy.einsum("bhd,bjhd->bhj", q[:, i], k[:, lo:i + 1]) * module.scale
        vals = v[:, lo:i + 1].transpose(0, 2, 1, 3)  # (B, H, J, D)
        if lo > 0:  # memory slot: means of everything that left the window
            mk, mv = k[:, :lo].mean(axis=1), v[:, :lo].mean(axis=1)
            s = numpy.concatenate([s, numpy.einsum("bhd,bhd->bh", q[:, i], mk)[..., None] * module.scale], -1)
            vals = numpy.concatenate([vals, mv[:, :, None]], axis=2)
        p = numpy.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        y[:, i] = numpy.einsum("bhj,bhjd->bhd", p, vals)
    return y.reshape(b, t, h * d) @ host(module.proj.weight) + host(module.proj.bias)


@pytest.mark.parametrize("window,t", [(3, 17), (4, 8), (1, 6), (6, 5), (5, 23)])
@pytest.mark.parametrize("position", ["rope", "learned"])
def test_rfa_matches_its_equations(device64: str, window: int, t: int, position: str) -> None:
    module = build("rfa", s_window=window, c_position=position)
    roughen(module, std=0.3)
    x = inputs(t)
    numpy.testing.assert_allclose(run(module, x), rfa_reference(module, x), rtol=1e-9, atol=1e-11)


def test_rfa_old_tokens_reach_a_query_only_through_the_memory_means(device64: str) -> None:
    module = build("rfa", s_window=4, c_position="learned")
    roughen(module, std=0.3)
    x = inputs(14)
    base = run(module, x)
    t = 13  # window {10..13}; positions 0..9 are in the memory, where only their means count
    noise = inputs(10, seed=4)
    same_mean = x.copy()  # other old tokens with the same mean: keys and values (linear in x) keep theirs
    same_mean[:, :10] += noise - noise.mean(axis=1, keepdims=True)
    numpy.testing.assert_allclose(run(module, same_mean)[:, t], base[:, t], rtol=1e-10, atol=1e-12)
    mha = build("mha")  # full attention, by contrast, sees each old token
    copy_attention_weights(module, mha)
    assert numpy.abs(run(mha, same_mean)[:, t] - run(mha, x)[:, t]).max() > 1e-6
    changed = x.copy()
    changed[:, 2] += 1.0  # an old token still counts (through the means)
    assert numpy.abs(run(module, changed)[:, t] - base[:, t]).max() > 1e-6
    swapped = x.copy()  # a token inside the window counts on its own
    swapped[:, 11] = x[:, 3]
    assert numpy.abs(run(module, swapped)[:, t] - base[:, t]).max() > 1e-6


def test_rfa_with_a_window_covering_everything_is_mha(device64: str) -> None:
    rfa, mha = build("rfa", s_window=24), build("mha")
    roughen(rfa)
    copy_attention_weights(rfa, mha)
    x = inputs(20)
    numpy.testing.assert_allclose(run(rfa, x), run(mha, x), rtol=1e-10, atol=1e-12)


def test_rfa_training_scores_are_linear_in_t(device64: str) -> None:
    module = build("rfa", s_window=4)
    x = inputs(20)
    module.forward(x, context(x))
    p = module.attn_cache[-1]
    assert p.size <= B * 4 * 20 * (2 * 4 + 1)  # at most 2W + 1 scores per query, never T x T


# ---- aft and gla -------------------------------------------------------------------------------------

def prefix_reference(module, x, weights) -> numpy.ndarray:
    x = backend.to_host(x).astype(numpy.float64)
    kv = x @ host(module.kv.weight) + host(module.kv.bias)
    k, v = kv[..., :16], kv[..., 16:]
    w = weights(k)
    t = x.shape[1]
    y = numpy.stack([(w[:, :i + 1] * v[:, :i + 1]).sum(1) / (module.eps + w[:, :i + 1].sum(1))
                     for i in range(t)], axis=1)
    return y @ host(module.proj.weight) + host(module.proj.bias)


def test_aft_matches_its_equations(device64: str) -> None:
    from baby.nn.mixers.aft import KEY_CAP
    module = build("aft")
    roughen(module)
    x = inputs(13)
    expected = prefix_reference(module, x, lambda k: numpy.exp(KEY_CAP * numpy.tanh(k / KEY_CAP)))
    numpy.testing.assert_allclose(run(module, x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("taps", [1, 3])
def test_gla_matches_its_equations(device64: str, taps: int) -> None:
    module = build("gla", n_gla_taps=taps)
    roughen(module)
    u, c = host(module.taps), host(module.shift)

    def gates(k):
        a = sum(u[i] * numpy.pad(k, ((0, 0), (i, 0), (0, 0)))[:, :k.shape[1]] for i in range(taps)) + c
        return numpy.maximum(a, 0.0)

    x = inputs(13)
    numpy.testing.assert_allclose(run(module, x), prefix_reference(module, x, gates), rtol=1e-10, atol=1e-12)


def test_gla_a_closed_gate_writes_nothing(device64: str) -> None:
    module = build("gla", n_gla_taps=1)
    roughen(module)
    module.taps.data[...] = 1.0
    module.shift.data[...] = -1e3  # every gate closed ...
    module.shift.data[0] = 0.0  # ... but channel 0's
    x = inputs(10)
    module.forward(x, context(x))
    y = module.proj.x  # the prefix means before the output projection
    assert bool((y[..., 1:] == 0).all()) and bool((y[..., 0] != 0).any())


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_aft_is_finite_and_exactly_causal_for_huge_inputs(device: str, scale: float) -> None:
    module = build("aft")
    roughen(module)
    x = inputs(16, scale=scale)
    out = module.forward(x, context(x))
    assert bool(backend.xp.isfinite(out).all())
    dx = module.backward(backend.xp.ones_like(out))
    assert bool(backend.xp.isfinite(dx).all())
    later = x.copy()
    later[:, 8:] = inputs(8, seed=9, scale=scale * 100)  # far larger keys later on
    a, b = run(module, x), run(module, later)
    numpy.testing.assert_array_equal(a[:, :8], b[:, :8])  # bit for bit: no shift by a later maximum


# ---- every variant: padding and incremental decoding -------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_left_padding_changes_nothing_for_real_tokens(device64: str, name: str) -> None:
    module = build(name, s_window=3, c_position="rope")
    roughen(module, std=0.3)
    x, t, pad = inputs(10), 10, 4
    xp = backend.xp
    junk = inputs(pad, seed=8, scale=5.0)
    padded = xp.concatenate([junk, x], axis=1)
    valid = xp.asarray(numpy.arange(t + pad)[None].repeat(B, 0) >= pad)
    positions = xp.maximum(xp.cumsum(valid, axis=1) - 1, 0)
    out = run(module, padded, valid=valid, positions=positions)
    numpy.testing.assert_allclose(out[:, pad:], run(module, x), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_with_left_padding(device64: str, name: str) -> None:
    module = build(name, s_window=3, c_position="rope")
    roughen(module, std=0.3)
    allow = ()
    if isinstance(module, SwitchHead):  # its gate's gradient is a surrogate (checked above)
        module.straight_through, allow = False, ("gate.weight", "gate.bias")
    xp = backend.xp
    valid = xp.asarray(numpy.arange(11)[None].repeat(B, 0) >= numpy.array([[3], [0]]))
    positions = xp.maximum(xp.cumsum(valid, axis=1) - 1, 0)
    checked = check_module(module, inputs(11),
                           lambda v: module.forward(v, context(v, valid=valid, positions=positions)),
                           allow_unused=allow)
    assert "input" in checked


@pytest.mark.parametrize("name", VARIANTS + ["lda"])
@pytest.mark.parametrize("chunks", [(5,) + (1,) * 18, (2, 7, 1, 3, 1, 1, 4, 1, 3)],
                         ids=["prompt-then-tokens", "uneven-chunks"])
def test_decoding_equals_full_forward(device64: str, name: str, chunks: tuple[int, ...]) -> None:
    module = build(name, s_window=4, c_position="rope")
    roughen(module, std=0.3)
    t = sum(chunks)
    x = inputs(t)
    full = run(module, x)
    state: dict = {}
    outs, start = [], 0
    for n in chunks:
        outs.append(run(module, x[:, start:start + n], start=start, state=state))
        start += n
    numpy.testing.assert_allclose(numpy.concatenate(outs, axis=1), full, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["gla", "aft", "rfa"])
def test_decoding_state_does_not_grow(device64: str, name: str) -> None:
    module = build(name, s_window=4)
    x = inputs(20)
    state: dict = {}
    run(module, x[:, :3], state=state)
    sizes = []
    for i in range(3, 20):
        run(module, x[:, i:i + 1], start=i, state=state)
        sizes.append(sum(a.size for a in state[id(module)].values() if hasattr(a, "size")))
    assert len(set(sizes[4:])) == 1  # constant once the window is full
    if name == "rfa":
        assert state[id(module)]["k"].shape[2] == 3  # W - 1 keys kept, the rest is in the memory


# ---- the side-by-side benchmark ----------------------------------------------------------------------

def test_bench_variants_writes_one_row_per_variant(tmp_path) -> None:
    import json

    from baby.bench.variants import main
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "batch_size": 2, "n_eval_batches": 2}), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--kind", "attention", "--config", str(config), "--steps", "2", "--variants", "mha,aft",
                 "--input", str(text), "--gen-tokens", "15", "--out", str(out)]) == 0
    data = json.loads((out / "bench_variants_attention.json").read_text(encoding="utf-8"))
    assert list(data["results"]) == ["mha", "aft"] and data["steps"] == 2
    for r in data["results"].values():
        assert r["params"] > 0 and math.isfinite(r["val_loss"]) and r["train_tokens_per_second"] > 0
        assert r["same_tokens_with_and_without_cache"]
    table = (out / "bench_variants_attention.md").read_text(encoding="utf-8")
    assert "| aft |" in table and data["machine"]["cpu"] in table
