"""Specifics of the feed-forward variants (the generic gradient check in test_gradcheck.py covers every
one of them too): moe routing and load balancing, lor's frozen base, ggl's channel shuffle, nft's
causality and decoding, the settings they declare, and a few training steps of a GPT with each."""
from __future__ import annotations

import numpy
import pytest

from baby import backend
from baby.config import Config, ConfigError
from baby.nn import variants
from baby.nn.context import Context
from baby.nn.gradcheck import GradientMismatch, check_module
from baby.nn.layers import cross_entropy, gelu
from baby.nn.model import GPT
from baby.nn.network.ggl import channel_shuffle, channel_unshuffle
from baby.optim import AdamW
from tests.conftest import TINY

B, T, C = 2, 9, 16
NETWORKS = ["mlp", "moe", "lor", "swi", "gln", "ggl", "nft"]


def config(**extra: object) -> Config:
    return Config({**TINY, **extra})


def build(name: str, **extra: object):
    cfg = config(c_network=name, **extra)
    return variants.lookup("network", name).cls(cfg, numpy.random.default_rng(0)), cfg


def context(b: int = B, t: int = T, start: int = 0, state: dict | None = None, valid=None) -> Context:
    xp = backend.xp
    ids = xp.zeros((b, t), dtype=xp.int64)
    positions = xp.broadcast_to(xp.arange(start, start + t)[None], (b, t))
    return Context(ids=ids, positions=positions, valid=valid, state=state)


def inputs(seed: int = 1, shape: tuple[int, ...] = (B, T, C)):
    return backend.xp.asarray(numpy.random.default_rng(seed).standard_normal(shape), dtype=backend.dtype)


def randomise(module, seed: int = 2, std: float = 0.5) -> None:
    """Move every parameter away from its init (zero biases, tiny weights) so each term matters."""
    rng = numpy.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = backend.xp.asarray(rng.normal(0.0, std, p.shape))


def host(a) -> numpy.ndarray:
    return backend.to_host(a).astype(numpy.float64)


# ---- settings -------------------------------------------------------------------------------------


def test_every_network_name_and_the_lin_alias_are_registered() -> None:
    assert set(NETWORKS) | {"lin"} <= set(variants.names("network"))
    assert variants.lookup("network", "lin").cls is variants.lookup("network", "gln").cls
    assert config(c_network="lin").c_network == "lin"


def test_variant_settings_have_defaults_valid_for_the_test_config() -> None:
    cfg = config()
    assert (cfg.n_experts, cfg.n_top, cfg.r_balance) == (4, 2, 0.01)
    assert (cfg.n_rank, cfg.r_lora_alpha, cfg.c_freeze_base, cfg.n_groups) == (8, 16.0, False, 4)


@pytest.mark.parametrize("values, key", [
    ({"c_network": "moe", "n_top": 0}, "n_top"),
    ({"c_network": "moe", "n_experts": 0}, "n_experts"),
    ({"c_network": "moe", "r_balance": -0.1}, "r_balance"),
    ({"c_network": "lor", "n_rank": 0}, "n_rank"),
    ({"c_network": "lor", "r_lora_alpha": 0.0}, "r_lora_alpha"),
    ({"c_network": "lor", "c_freeze_base": "yes"}, "c_freeze_base"),
    ({"c_network": "ggl", "n_groups": 0}, "n_groups"),
    ({"c_network": "ffn"}, "c_network"),
])
def test_settings_out_of_range_are_rejected_by_the_config(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config(**values)


@pytest.mark.parametrize("name, values, key", [
    ("moe", {"n_experts": 3, "n_top": 4}, "n_top"),
    ("ggl", {"n_groups": 3}, "n_groups"),
    ("lor", {"n_rank": 17}, "n_rank"),
])
def test_relations_between_settings_fail_with_the_key_named(name: str, values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):  # each value alone is in range; the config checks relations
        config(c_network=name, **values)


# ---- simple gated variants against their formulas -------------------------------------------------


def _linear(x, lin) -> numpy.ndarray:
    y = x @ host(lin.weight.data)
    return y + host(lin.bias.data) if lin.bias is not None else y


def _sig(a):
    return 1.0 / (1.0 + numpy.exp(-a))


def test_swi_gln_ggl_match_their_formulas() -> None:
    x = inputs()
    xh = host(x)
    swi, cfg = build("swi")
    randomise(swi)
    h = cfg.hidden
    ug = _linear(xh, swi.up_gate)
    up, gate = ug[..., :h], ug[..., h:]
    expected = _linear(up * gate * _sig(gate), swi.down)
    numpy.testing.assert_allclose(host(swi(x, context())), expected, rtol=1e-4, atol=1e-5)

    gln, _ = build("gln")
    randomise(gln)
    vg = _linear(xh, gln.value_gate)
    numpy.testing.assert_allclose(host(gln(x, context())), vg[..., :C] * _sig(vg[..., C:]), rtol=1e-4, atol=1e-5)

    ggl, cfg = build("ggl")
    randomise(ggl)
    g, d = cfg.n_groups, C // cfg.n_groups
    w, bias = host(ggl.weight.data), host(ggl.bias.data)
    groups = []
    for i in range(g):  # each group: its own [W | V] rows and bias
        f = xh[..., i * d:(i + 1) * d] @ w[i * d:(i + 1) * d] + bias[2 * i * d:2 * (i + 1) * d]
        groups.append(f[..., :d] * _sig(f[..., d:]))
    unshuffled = numpy.concatenate(groups, axis=-1)
    shuffled = numpy.stack(groups, axis=-1).reshape(B, T, C)  # channel j*G + g = group g's channel j
    out = host(ggl(x, context()))
    numpy.testing.assert_allclose(out, shuffled, rtol=1e-4, atol=1e-5)
    assert not numpy.allclose(out, unshuffled)


# ---- ggl channel shuffle --------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_channel_shuffle_is_a_permutation_whose_backward_is_its_inverse(groups: int) -> None:
    xp = backend.xp
    d = C // groups
    channels = xp.arange(C)
    shuffled = host(channel_shuffle(channels, groups)).astype(int)
    assert sorted(shuffled) == list(range(C))
    for g in range(groups):
        for j in range(d):
            assert shuffled[j * groups + g] == g * d + j
    assert (host(channel_unshuffle(channel_shuffle(channels, groups), groups)) == numpy.arange(C)).all()
    a, b = inputs(3, (2, C)), inputs(4, (2, C))  # <shuffle(a), b> == <a, unshuffle(b)>: the adjoint
    assert float((channel_shuffle(a, groups) * b).sum()) == pytest.approx(float((a * channel_unshuffle(b, groups)).sum()))


def test_ggl_output_groups_depend_on_other_input_groups() -> None:
    module, cfg = build("ggl")
    randomise(module)
    g, d = cfg.n_groups, C // cfg.n_groups
    x = inputs()
    base = host(module(x, context()))
    influence = numpy.zeros((g, g), dtype=bool)  # [input group i, output group j]
    for i in range(g):
        moved = x.copy()
        moved[..., i * d:(i + 1) * d] += 1.0
        diff = numpy.abs(host(module(moved, context())) - base)
        influence[i] = [diff[..., j * d:(j + 1) * d].max() > 1e-6 for j in range(g)]
    for j in range(g):
        assert any(influence[i, j] for i in range(g) if i != j), f"output group {j} sees only its own input group"


# ---- moe ------------------------------------------------------------------------------------------


def _router_probs(module, xh: numpy.ndarray) -> numpy.ndarray:
    logits = _linear(xh.reshape(-1, C), module.router) / module.temp
    e = numpy.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _expert_direct(module, e: int, xh: numpy.ndarray) -> numpy.ndarray:
    h = xh @ host(module.w_up.data[e]) + host(module.b_up.data[e])
    return host(gelu(backend.xp.asarray(h))[0]) @ host(module.w_down.data[e]) + host(module.b_down.data[e])


def test_moe_runs_only_the_chosen_experts_on_their_tokens() -> None:
    module, cfg = build("moe", n_experts=4, n_top=2)
    randomise(module)
    rows: dict[int, int] = {}
    inner = module._expert

    def counting(e, xs):
        rows[e] = rows.get(e, 0) + xs.shape[0]
        return inner(e, xs)

    module._expert = counting
    x = inputs()
    module(x, context())
    top2 = numpy.argsort(-_router_probs(module, host(x)), axis=-1)[:, :2]
    expected = numpy.bincount(top2.reshape(-1), minlength=4)
    assert sum(rows.values()) == B * T * 2 < B * T * 4  # N*k expert rows, not N*E
    assert [rows.get(e, 0) for e in range(4)] == expected.tolist() == module.tokens_per_expert.tolist()


def test_moe_experts_never_chosen_neither_run_nor_matter() -> None:
    module, _ = build("moe", n_experts=4, n_top=2)
    randomise(module)
    module.router.bias.data[...] = backend.xp.asarray([9.0, 9.0, -9.0, -9.0])  # always experts 0 and 1
    x = inputs()
    y = module(x, context())
    assert module.tokens_per_expert.tolist() == [B * T, B * T, 0, 0]
    module.backward(inputs(5))
    for p in (module.w_up, module.w_down, module.b_up, module.b_down):
        assert not bool((p.grad[2:] != 0).any()) and bool((p.grad[:2] != 0).all())
    module.w_up.data[2:] += 1.0
    assert (host(module(x, context())) == host(y)).all()


def test_moe_with_k_equal_to_e_is_the_dense_softmax_mixture() -> None:
    module, _ = build("moe", n_experts=3, n_top=3, r_temp=0.7)
    randomise(module)
    x = inputs()
    xh = host(x).reshape(-1, C)
    probs = _router_probs(module, xh)
    dense = sum(probs[:, e:e + 1] * _expert_direct(module, e, xh) for e in range(3))
    numpy.testing.assert_allclose(host(module(x, context())).reshape(-1, C), dense, rtol=1e-4, atol=1e-5)


def test_moe_balance_loss_matches_the_switch_formula_and_only_in_training() -> None:
    module, _ = build("moe", n_experts=4, n_top=2, r_balance=0.3)
    randomise(module)
    x = inputs()
    valid = backend.xp.asarray(numpy.arange(T)[None, :] >= numpy.array([[0], [3]]))  # 3 pads in row 2
    module(x, context(valid=valid))
    probs = _router_probs(module, host(x))
    keep = host(valid).reshape(-1).astype(bool)
    top2 = numpy.argsort(-probs, axis=-1)[:, :2][keep]
    f = numpy.bincount(top2.reshape(-1), minlength=4) / top2.size
    expected = 0.3 * 4 * (f * probs[keep].mean(axis=0)).sum()
    assert module.extra_loss() == pytest.approx(expected, rel=1e-5)
    module.eval()
    module(x, context())
    assert module.extra_loss() == 0.0


def test_moe_gradient_check_covers_the_balance_loss(device64: str) -> None:
    ctx = context()
    for k in (4, 1, 2):  # k = 1: the router learns through p_e and the balance loss
        module, _ = build("moe", n_experts=4, n_top=k, r_balance=1.0)
        checked = check_module(module, inputs(), lambda v, m=module: m.forward(v, ctx))
        assert "router.weight" in checked and "w_up" in checked
    # Backward without the balance loss's gradient must be caught. (Not with k = E: every f_e is then
    # 1/E and the loss the constant r_balance, whose gradient is zero.)
    module._balance_grad = lambda: None
    with pytest.raises(GradientMismatch):
        check_module(module, inputs(), lambda v: module.forward(v, ctx))


# ---- lor ------------------------------------------------------------------------------------------


def test_lor_gradient_check_with_frozen_base_checks_only_the_low_rank_matrices(device64: str) -> None:
    module, _ = build("lor", c_bias=False, n_rank=3)
    module.freeze_base()
    ctx = context()
    checked = check_module(module, inputs(), lambda v: module.forward(v, ctx))
    assert sorted(checked) == ["down.lora_a", "down.lora_b", "input", "up.lora_a", "up.lora_b"]
    assert not bool((module.up.weight.grad != 0).any())  # the frozen base's matmul is skipped


def test_lor_finetune_with_frozen_base_changes_only_the_low_rank_weights() -> None:
    cfg = config(c_network="lor", c_freeze_base=True, n_rank=4)
    model = GPT(cfg, n_vocab=7)
    lor_modules = [m for m in model.modules() if getattr(m, "registry_name", "") == "lor"]
    assert len(lor_modules) == cfg.n_layers
    base = {id(p): host(p.data).copy() for m in lor_modules for p in m.up.base() + m.down.base()}
    low_rank = [(p, host(p.data).copy()) for m in lor_modules
                for p in (m.up.lora_a, m.up.lora_b, m.down.lora_a, m.down.lora_b)]
    opt = AdamW(model.parameters(), lr=1e-2)
    assert all(id(p) not in base for p in opt.params)
    ids = backend.xp.asarray(numpy.random.default_rng(0).integers(0, 7, (4, 13)))
    for _ in range(3):
        opt.zero_grad()
        _, dlogits = cross_entropy(model.forward(ids[:, :-1]), ids[:, 1:])
        model.backward(dlogits)
        opt.step()
    for m in lor_modules:
        for p in m.up.base() + m.down.base():
            assert (host(p.data) == base[id(p)]).all()
    for p, before in low_rank:
        assert not numpy.allclose(host(p.data), before)


# ---- nft ------------------------------------------------------------------------------------------


def test_nft_is_causal() -> None:
    module, _ = build("nft")
    randomise(module)
    x = inputs()
    y = host(module(x, context()))
    later = x.copy()
    later[:, 6:] = inputs(9, (B, T - 6, C))
    y2 = host(module(later, context()))
    assert (y2[:, :6] == y[:, :6]).all()
    assert not numpy.allclose(y2[:, 6:], y[:, 6:])


def test_nft_decoding_keeps_a_fixed_state_and_equals_the_full_forward() -> None:
    module, _ = build("nft")
    randomise(module)
    x = inputs()
    full = host(module(x, context()))
    state: dict = {}
    steps = [host(module(x[:, :4], context(t=4, state=state)))]
    for t in range(4, T):
        steps.append(host(module(x[:, t:t + 1], context(t=1, start=t, state=state))))
        assert {k: v.shape for k, v in state[id(module)].items()} == {"num": (B, C), "den": (B, C)}
    numpy.testing.assert_allclose(numpy.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)


def test_nft_ignores_padding_positions() -> None:
    module, _ = build("nft")
    randomise(module)
    x = inputs()
    valid = backend.xp.asarray(numpy.arange(T)[None, :] >= numpy.array([[0], [3]]))
    y = host(module(x, context(valid=valid)))
    alone = host(module(x[1:, 3:], context(b=1, t=T - 3)))  # row 2 without its 3 pads
    numpy.testing.assert_allclose(y[1:, 3:], alone, rtol=1e-4, atol=1e-5)


# ---- every network inside a GPT -------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_pass_the_gradient_check_without_biases(device64: str, name: str) -> None:
    module, _ = build(name, c_bias=False, r_temp=0.7)
    randomise(module, std=0.3)
    ctx = context()
    assert "input" in check_module(module, inputs(), lambda v: module.forward(v, ctx))


@pytest.mark.parametrize("name", NETWORKS)
def test_cached_decoding_equals_the_full_forward(name: str) -> None:
    model = GPT(config(c_network=name), n_vocab=7).eval()
    for m in model.modules():  # larger weights: differences would show
        if m is not model:
            randomise(m, std=0.2)
    ids = backend.xp.asarray(numpy.random.default_rng(0).integers(0, 7, (2, 10)))
    full = host(model.forward(ids))
    state: dict = {}
    parts = [host(model.forward(ids[:, :4], model.context(ids[:, :4], state=state)))]
    for t in range(4, 10):
        step = ids[:, t:t + 1]
        parts.append(host(model.forward(step, model.context(step, start=t, state=state))))
    numpy.testing.assert_allclose(numpy.concatenate(parts, axis=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_gpt_with_each_network_learns_a_repetitive_sequence(name: str) -> None:
    # No attention: the network is the only block, and without it (tied embeddings straight into the
    # head) this loss stays near 1.6. The bigram floor of the stream is about 0.46.
    cfg = config(c_network=name, c_attention="", n_ctx=16)
    model = GPT(cfg, n_vocab=6)
    stream = numpy.tile(numpy.array([0, 1, 2, 3, 4, 5, 2, 4, 0]), 20)
    rng = numpy.random.default_rng(0)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(40):
        starts = rng.integers(0, len(stream) - 17, 8)
        batch = backend.xp.asarray(numpy.stack([stream[s:s + 17] for s in starts]))
        opt.zero_grad()
        loss, dlogits = cross_entropy(model.forward(batch[:, :-1]), batch[:, 1:])
        model.backward(dlogits)
        opt.step()
        losses.append(float(loss))
        if name == "moe":
            assert model.extra_loss() > 0.0
    assert numpy.mean(losses[:3]) > 1.6 and numpy.mean(losses[-5:]) < 0.8, losses
