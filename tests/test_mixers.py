"""The attention-free mixers: the induction index against a brute-force reference, both mixers against
direct per-position loops, gradients of a whole conv+induction model, causality, padding, incremental
decoding, settings validation and the parameter counts of the released shapes."""
from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy
import pytest

from baby import backend
from baby.config import Config, ConfigError
from baby.nn import core, variants
from baby.nn.gradcheck import directional_check
from baby.nn.layers import cross_entropy
from baby.nn.mixers.conv import DynamicConv
from baby.nn.mixers.induction import Induction, scatter_rows
from baby.nn.mixers.induction_index import build_index, grow_index
from baby.nn.model import GPT
from tests.conftest import TINY, context

ROOT = Path(__file__).resolve().parents[1]


# ---- the index -------------------------------------------------------------------------------------

def brute_index(ids: numpy.ndarray, valid: numpy.ndarray | None, m: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The definition, one position at a time: the last m earlier real positions with the same id,
    newest first; usable when the follower c + 1 is real and strictly before t."""
    b, t = ids.shape
    valid = numpy.ones((b, t), bool) if valid is None else valid
    cand = numpy.full((b, t, m), -1)
    mask = numpy.zeros((b, t, m), bool)
    for row in range(b):
        for pos in range(t):
            if not valid[row, pos]:
                continue
            found = [s for s in range(pos - 1, -1, -1) if valid[row, s] and ids[row, s] == ids[row, pos]][:m]
            for j, c in enumerate(found):
                cand[row, pos, j] = c
                mask[row, pos, j] = c + 1 < pos and valid[row, c + 1]
    return cand, mask


def index_cases() -> list[tuple[str, numpy.ndarray, numpy.ndarray | None]]:
    rng = numpy.random.default_rng(0)
    t = 40
    left = numpy.ones((3, t), bool)
    left[0, :7], left[2, :19] = False, False
    right = numpy.ones((3, t), bool)
    right[1, 25:] = False
    scattered = rng.random((3, t)) > 0.3
    return [
        ("many repeats", rng.integers(0, 3, (3, t)), None),
        ("no repeats", numpy.stack([rng.permutation(t) for _ in range(3)]), None),
        ("one token", numpy.full((3, t), 7), None),
        ("single row", rng.integers(0, 5, (1, t)), None),
        ("left padding", rng.integers(0, 4, (3, t)), left),
        ("right padding", rng.integers(0, 4, (3, t)), right),
        ("scattered padding", rng.integers(0, 4, (3, t)), scattered),
        ("large ids", rng.integers(0, 3, (2, t)) * 1_000_003 + 50_000, None),
    ]


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("case", index_cases(), ids=lambda c: c[0])
def test_index_matches_brute_force(device: str, case: tuple, m: int) -> None:
    _, ids, valid = case
    cand, mask = build_index(backend.asarray(ids), None if valid is None else backend.asarray(valid), m)
    want_cand, want_mask = brute_index(ids, valid, m)
    assert numpy.array_equal(backend.to_host(cand), want_cand)
    assert numpy.array_equal(backend.to_host(mask), want_mask)


def test_index_rules_by_hand() -> None:
    # ids:      a b a a b a      -> at t=3 ('a'): previous a's at 2 and 0; c=2 is unusable (2+1 = t)
    ids = numpy.array([[0, 1, 0, 0, 1, 0]])
    cand, mask = build_index(ids, None, 3)
    assert cand[0, 3].tolist() == [2, 0, -1] and mask[0, 3].tolist() == [False, True, False]
    assert cand[0, 5].tolist() == [3, 2, 0] and mask[0, 5].tolist() == [True, True, True]
    assert cand[0, 4].tolist() == [1, -1, -1] and mask[0, 4].tolist() == [True, False, False]
    # the pad (id 0, like the real 'a's) is never a candidate and never finds one
    valid = numpy.array([[True, True, False, True, True, True]])
    cand, mask = build_index(ids, valid, 3)
    assert cand[0, 2].tolist() == [-1, -1, -1]
    assert cand[0, 3].tolist() == [0, -1, -1] and mask[0, 3].tolist() == [True, False, False]
    # c = 1 is a real 'b' but its follower (2) is the pad: not usable
    assert cand[0, 4].tolist() == [1, -1, -1] and mask[0, 4].tolist() == [False, False, False]


def test_index_memory_is_linear_in_t() -> None:
    """No T x T array: at T = 16384 a T x T boolean alone would take 268 MB."""
    t, m = 16384, 5
    ids = numpy.random.default_rng(1).integers(0, 50, (1, t))
    tracemalloc.start()
    build_index(ids, None, m)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * t * m * 8, f"index peak {peak / 1e6:.1f} MB at T={t}"  # ~26 MB, far below T^2


@pytest.mark.parametrize("chunks", [[40], [9] + [1] * 31, [1] * 40, [5, 1, 7, 2, 1, 24]])
def test_grown_index_equals_full_index(chunks: list[int]) -> None:
    rng = numpy.random.default_rng(2)
    ids = rng.integers(0, 6, (2, 40))
    valid = numpy.ones((2, 40), bool)
    valid[1, :6] = False  # a left-padded row
    full_cand, full_mask = build_index(ids, valid, 5)
    state: dict = {}
    start = 0
    for size in chunks:
        part = slice(start, start + size)
        cand, mask = grow_index(state, ids[:, part], valid[:, part], 5, capacity=40)
        assert numpy.array_equal(cand, full_cand[:, part]), f"chunk at {start}"
        assert numpy.array_equal(mask, full_mask[:, part]), f"chunk at {start}"
        start += size
    assert state["prev"].shape == (2, 40)  # the state never grows past its capacity
    with pytest.raises(RuntimeError, match="re-prefill"):
        grow_index(state, ids[:, :1], None, 5, capacity=40)


@pytest.mark.parametrize("follower", [0, 1], ids=["keys", "values"])
def test_slotwise_scatter_equals_scatter_add(follower: int) -> None:
    """The gathers' backward adds one candidate slot at a time with plain += (rows are distinct within
    a slot); it must equal a scatter-add that sums duplicates."""
    rng = numpy.random.default_rng(13)
    ids = rng.integers(0, 3, (3, 30))
    valid = rng.random((3, 30)) > 0.2
    cand, mask = build_index(ids, valid, 5)
    n_rows = 3 * 30
    rows = numpy.arange(3)[:, None, None] * 30 + cand + follower
    grads = rng.standard_normal((3, 30, 5, 2, 4))
    want = numpy.zeros((n_rows, 2, 4))
    numpy.add.at(want, rows[mask], grads[mask])
    got = scatter_rows(n_rows, numpy.where(mask, rows, n_rows), grads * mask[..., None, None])
    numpy.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---- the mixers against direct loops ----------------------------------------------------------------

def tiny(**extra: object) -> Config:
    return Config({**TINY, "c_position": "learned", **extra})


def randomize(module: core.Module, rng: numpy.random.Generator, std: float = 0.5) -> None:
    """Large random weights so that kernels, gates and scores are far from uniform."""
    for p in module.parameters():
        p.data[...] = backend.asarray(rng.normal(0.0, std, p.shape))


def test_conv_matches_definition(device64: str) -> None:
    cfg = tiny(n_conv_groups=4, s_conv_dilations="1,3")
    rng = numpy.random.default_rng(3)
    conv = DynamicConv(cfg, rng)
    randomize(conv, rng)
    b, t, c, g, k = 2, 11, cfg.n_emb, 4, cfg.n_conv_taps
    x = rng.standard_normal((b, t, c))
    got = backend.to_host(conv.forward(backend.asarray(x), context(numpy.zeros((b, t), int))))

    def weights(name: str) -> numpy.ndarray:
        return backend.to_host(dict(conv.named_parameters())[name].data)

    cur = x.copy()
    for i, dil in enumerate([1, 3]):
        nxt = cur.copy()
        for row in range(b):
            for pos in range(t):
                logits = (cur[row, pos] @ weights(f"kernels.{i}.weight") + weights(f"kernels.{i}.bias")).reshape(g, k)
                w = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
                out = numpy.zeros(c)
                for j in range(k):
                    src = pos - (k - 1 - j) * dil
                    if src >= 0:
                        out += numpy.repeat(w[:, j], c // g) * cur[row, src]
                gate = 1 / (1 + numpy.exp(-(out @ weights(f"gates.{i}.weight") + weights(f"gates.{i}.bias"))))
                nxt[row, pos] = cur[row, pos] + gate * out
        cur = nxt
    want = cur @ weights("proj.weight") + weights("proj.bias")
    numpy.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_induction_matches_definition(device64: str) -> None:
    cfg = tiny(n_induction_m=3, n_induction_heads=2)
    rng = numpy.random.default_rng(4)
    mixer = Induction(cfg, rng)
    randomize(mixer, rng)
    b, t, c, h, m = 2, 13, cfg.n_emb, 2, 3
    d = c // h
    ids = rng.integers(0, 3, (b, t))
    valid = numpy.ones((b, t), bool)
    valid[1, :4] = False
    x = rng.standard_normal((b, t, c))
    got = backend.to_host(mixer.forward(backend.asarray(x), context(ids, valid)))
    params = {name: backend.to_host(p.data) for name, p in mixer.named_parameters()}
    qkv = x @ params["qkv.weight"] + params["qkv.bias"]
    q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, t, h, d) for i in range(3))
    want = numpy.zeros((b, t, c))
    for row in range(b):
        for pos in range(t):
            earlier = [s for s in range(pos - 1, -1, -1) if valid[row, pos] and valid[row, s] and ids[row, s] == ids[row, pos]]
            usable = [s for s in earlier[:m] if s + 1 < pos and valid[row, s + 1]]
            y = numpy.zeros((h, d))
            for head in range(h):
                scores = [q[row, pos, head] @ k[row, s, head] / math.sqrt(d) for s in usable]
                scores.append(q[row, pos, head] @ params["sink_key"][head] / math.sqrt(d))
                p = numpy.exp(numpy.array(scores) - max(scores))
                p /= p.sum()
                values = [v[row, s + 1, head] for s in usable] + [params["sink_value"][head]]
                y[head] = sum(pj * vj for pj, vj in zip(p, values))
            want[row, pos] = y.reshape(c) @ params["proj.weight"] + params["proj.bias"]
    numpy.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---- whole models -------------------------------------------------------------------------------------

def model_config(mixers: str = "conv+induction", **extra: object) -> Config:
    return Config({**TINY, "c_attention": mixers, "c_network": "mlp", "c_norm": "rms", "n_ctx": 24,
                   "n_conv_groups": 4, **extra})


ABLATIONS = [{}, {"c_conv_static": True}, {"c_induction_sink": False}, {"n_induction_m": 1}]


@pytest.mark.parametrize("ablation", ABLATIONS, ids=["seed", "static-conv", "no-sink", "m1"])
@pytest.mark.parametrize("padded", [False, True], ids=["plain", "left-padded"])
def test_whole_model_gradients(device64: str, padded: bool, ablation: dict) -> None:
    cfg = model_config(c_bias=False, **ablation)
    model = GPT(cfg, n_vocab=7)
    rng = numpy.random.default_rng(5)
    randomize(model, rng, std=0.3)
    xp = backend.xp
    ids = xp.asarray(rng.integers(0, 4, (2, 15)))  # few ids: many induction matches
    valid = None
    targets = ids[:, 1:].copy()
    if padded:
        valid_host = numpy.ones((2, 14), bool)
        valid_host[0, :5] = False
        valid = xp.asarray(valid_host)
        targets[~valid] = -100

    def loss_at() -> float:
        logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], valid=valid))
        return float(cross_entropy(logits, targets, ignore=-100)[0])

    for p in model.parameters():
        p.grad[...] = 0
    logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], valid=valid))
    model.backward(cross_entropy(logits, targets, ignore=-100)[1])
    for name, p in model.named_parameters():
        assert bool((p.grad != 0).any()), f"{name} gets no gradient"
        directional_check(name, p.data, p.grad.copy(), loss_at, rng)


def test_static_conv_uses_one_kernel_at_every_position_and_no_sink_abstains_with_zero(device64: str) -> None:
    rng = numpy.random.default_rng(8)
    conv = variants.lookup("mixer", "conv").cls(tiny(n_conv_groups=4, c_conv_static=True), rng)
    randomize(conv, rng)
    assert all(k.shape == (4 * 3,) for k in conv.kernels)  # no token-dependent projection
    ids = rng.integers(0, 9, (2, 10))
    x = backend.asarray(rng.normal(size=(2, 10, TINY["n_emb"])))
    conv.forward(x, context(ids))
    w = backend.to_host(conv.cache[1][0][1])  # level 0 kernels, (B, T, G, k)
    numpy.testing.assert_allclose(w, numpy.broadcast_to(w[:1, :1], w.shape))
    induction = variants.lookup("mixer", "induction").cls(tiny(c_induction_sink=False), rng)
    randomize(induction, rng)
    ids = numpy.array([[1, 2, 3, 1, 2, 3, 4, 5]])
    y = backend.to_host(induction.forward(backend.asarray(rng.normal(size=(1, 8, TINY["n_emb"]))), context(ids)))
    bias = backend.to_host(induction.proj.bias.data) if induction.proj.bias is not None else 0.0
    for pos in (0, 1, 2, 6, 7):  # no earlier occurrence of their token: only the output bias
        numpy.testing.assert_allclose(y[0, pos], bias, atol=1e-12)
    for pos in (3, 4, 5):  # "1" at 3 finds 0, whose follower 1 lies before 3: copied
        assert not numpy.allclose(y[0, pos], bias)


@pytest.mark.parametrize("mixers", ["conv+induction", "induction", "conv+mha"])
def test_causality(device: str, mixers: str) -> None:
    model = GPT(model_config(mixers), n_vocab=9)
    randomize(model, numpy.random.default_rng(6), std=0.3)
    rng = numpy.random.default_rng(7)
    ids = rng.integers(0, 4, (2, 24))
    base = backend.to_host(model.forward(backend.asarray(ids)))
    for cut in (1, 8, 23):
        changed = ids.copy()
        changed[:, cut:] = rng.integers(0, 4, changed[:, cut:].shape)
        out = backend.to_host(model.forward(backend.asarray(changed)))
        numpy.testing.assert_array_equal(out[:, :cut], base[:, :cut])


def test_left_padding_changes_nothing(device: str) -> None:
    """A left-padded row gives the unpadded row's outputs at its real positions (pad ids collide
    with real ids on purpose: the index must not match them)."""
    model = GPT(model_config("conv+induction"), n_vocab=9)
    randomize(model, numpy.random.default_rng(8), std=0.3)
    ids = numpy.random.default_rng(9).integers(0, 3, (1, 17))
    alone = backend.to_host(model.forward(backend.asarray(ids)))
    padded = numpy.concatenate([numpy.zeros((1, 7), int), ids], axis=1)
    valid = numpy.concatenate([numpy.zeros((1, 7), bool), numpy.ones((1, 17), bool)], axis=1)
    ids_p = backend.asarray(padded)
    out = backend.to_host(model.forward(ids_p, model.context(ids_p, valid=backend.asarray(valid))))
    numpy.testing.assert_allclose(out[:, 7:], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunks", [[7] + [1] * 17, [1] * 24, [3, 5, 1, 1, 10, 4]])
@pytest.mark.parametrize("mixers", ["conv+induction", "induction+conv", "conv", "conv+mha"])
def test_incremental_decoding_equals_full_forward(device64: str, mixers: str, chunks: list[int]) -> None:
    model = GPT(model_config(mixers, s_conv_dilations="1,2,4,3"), n_vocab=9).eval()
    randomize(model, numpy.random.default_rng(10), std=0.3)
    ids = backend.asarray(numpy.random.default_rng(11).integers(0, 4, (2, 24)))
    full = backend.to_host(model.forward(ids))
    state: dict = {}
    start, pieces = 0, []
    for size in chunks:
        part = ids[:, start:start + size]
        pieces.append(backend.to_host(model.forward(part, model.context(part, start=start, state=state))))
        start += size
    numpy.testing.assert_allclose(numpy.concatenate(pieces, axis=1), full, rtol=1e-9, atol=1e-11)


def test_generate_with_cache_equals_without(device: str) -> None:
    """Through the model's sampler, past n_ctx (the state is dropped and re-prefilled)."""
    from baby.generate import generate

    model = GPT(model_config("conv+induction", n_ctx=12), n_vocab=9)
    randomize(model, numpy.random.default_rng(12), std=0.3)
    prompt = [1, 2, 3, 1, 2]
    cached = generate(model, prompt, 20, temperature=0, use_cache=True)
    plain = generate(model, prompt, 20, temperature=0, use_cache=False)
    assert cached.tokens == plain.tokens and cached.prefills >= 2


def test_induction_copies_after_a_repeat(device: str) -> None:
    """With W_q = W_k = identity-like, W_v = W_o = identity and a weak sink, the output at the second
    'a' in 'a b ... a' is the input at 'b' (what followed 'a' last time)."""
    cfg = tiny(n_induction_m=2, n_induction_heads=1, c_bias=False)
    mixer = Induction(cfg, numpy.random.default_rng(0))
    c = cfg.n_emb
    eye = numpy.eye(c)
    mixer.qkv.weight.data[...] = backend.asarray(numpy.concatenate([10 * eye, eye, eye], axis=1))
    mixer.proj.weight.data[...] = backend.asarray(eye)
    mixer.sink_key.data[...] = 0.0
    x = numpy.random.default_rng(1).standard_normal((1, 6, c))
    ids = numpy.array([[4, 5, 6, 7, 8, 4]])
    x[0, 5] = x[0, 0]  # the same token, the same input vector
    y = backend.to_host(mixer.forward(backend.asarray(x.astype(backend.dtype)), context(ids)))
    numpy.testing.assert_allclose(y[0, 5], x[0, 1], rtol=1e-3, atol=1e-3)
    assert numpy.abs(y[0, :5]).max() < 0.5 * numpy.abs(x).max()  # no match: mostly the sink value


# ---- settings and sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, key", [
    ({"c_attention": "conv", "s_conv_dilations": "1,two"}, "s_conv_dilations"),
    ({"c_attention": "conv", "s_conv_dilations": "1,0"}, "s_conv_dilations"),
    ({"c_attention": "conv", "n_emb": 24, "n_conv_groups": 16}, "n_conv_groups"),
    ({"c_attention": "induction", "n_emb": 18, "n_heads": 3, "n_induction_heads": 4}, "n_induction_heads"),
])
def test_bad_settings_name_the_key(extra: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        GPT(Config({**TINY, **extra}), n_vocab=5)


def test_tiny_defaults_build() -> None:
    """Defaults (16 groups, 3 taps, 1,2,4, M = 5, 4 heads) fit the tiny width 16, and a narrower
    width caps the groups."""
    GPT(Config({**TINY, "c_attention": "conv+induction"}), n_vocab=5)
    assert DynamicConv(Config({**TINY, "n_emb": 8, "c_attention": "conv"}), numpy.random.default_rng(0)).groups == 8


@pytest.mark.skipif("swi" not in variants.names("network"),
                    reason="the released shape uses c_network 'swi', which is not registered yet")
@pytest.mark.parametrize("width, count", [(384, 12_288_816), (192, 3_932_784)])
def test_released_parameter_counts(width: int, count: int) -> None:
    cfg = Config.load(ROOT / "configs" / "conv-induction-12m.json", overrides={"n_emb": width})
    assert GPT(cfg, n_vocab=8000).n_params() == count
