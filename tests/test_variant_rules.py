"""The rules variants declare: every variant derives from a declared base whose hooks the config
calls at validation time; each variant's cross-setting rules are refused as one ConfigError;
``c_freeze_base`` has one meaning whichever path builds the model; ``r_temp`` does what the settings
table says; nft's padded gradient is finite."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from baby import backend
from baby.config import Config, ConfigError
from baby.nn import core, variants
from baby.nn.context import Context
from baby.nn.model import GPT
from baby.nn.network.lor import freeze_base
from tests.conftest import ROOT, TINY


def test_config_re_exports_the_settings_machinery() -> None:
    from baby.nn import settings
    assert ConfigError is settings.ConfigError
    from baby.config import Setting
    assert Setting is settings.Setting


# ---- declared hooks ----------------------------------------------------------------------------------


def test_every_variant_derives_from_its_declared_base() -> None:
    for kind, base in (("mixer", core.Mixer), ("network", core.Network)):
        entries = variants.entries(kind)
        assert entries
        for entry in entries:
            assert issubclass(entry.cls, base), entry.name
    for hook in ("check_config", "check_config_unchosen", "prepare_model", "mixing_flops", "decoding_state"):
        assert hook in vars(core.Variant)


def test_registering_a_mixer_that_is_not_a_mixer_is_refused() -> None:
    with pytest.raises(TypeError, match="Mixer"):
        core.register("mixer", "not_a_mixer")(type("Plain", (core.Module,), {}))


@pytest.mark.parametrize("values, words", [
    ({"c_attention": "gqa", "n_kv_heads": 3, "n_heads": 4}, ["n_kv_heads=3", "n_heads=4"]),
    ({"c_attention": "gqa", "n_kv_heads": 8, "n_heads": 4}, ["n_kv_heads=8", "n_heads=4"]),
    ({"c_position": "rope", "n_emb": 12, "n_heads": 4}, ["rope", "head_size/n_heads", "3"]),
    ({"c_position": "rope", "head_size": 4, "n_heads": 4}, ["rope", "1"]),
    ({"c_position": "rope", "c_attention": "conv+moh", "n_emb": 20, "n_heads": 4, "n_conv_groups": 4}, ["rope"]),
    ({"c_attention": "conv", "n_conv_taps": 1}, ["n_conv_taps=1"]),
    ({"c_attention": "conv", "n_conv_groups": 3}, ["n_conv_groups=3"]),
    ({"c_attention": "induction", "n_induction_heads": 3}, ["n_induction_heads=3"]),
    ({"c_freeze_base": True}, ["c_freeze_base applies only to c_network=lor"]),
    ({"c_freeze_base": True, "c_network": "moe"}, ["c_freeze_base", "lor"]),
])
def test_variant_rules_are_config_errors(values: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Config(values)
    for word in words:
        assert word in str(err.value)


def test_the_rules_accept_what_they_should() -> None:
    Config({"c_attention": "gqa", "n_kv_heads": 2, "n_heads": 4})
    Config({"c_position": "rope", "n_emb": 16, "n_heads": 4})
    Config({"c_position": "rope", "c_attention": "aft"})  # no rotary attention: nothing to rotate
    Config({"c_attention": "conv", "n_conv_taps": 2})
    Config({"c_freeze_base": True, "c_network": "lor"})


def test_cli_gqa_with_a_bad_kv_head_count_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "baby", "train", "--config", str(ROOT / "configs" / "cpu.json"),
                          "--set", "c_attention=gqa", "--set", "n_kv_heads=3", "--root", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "n_kv_heads=3" in out.stderr and "n_heads=4" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# ---- c_freeze_base: one owner, one meaning ------------------------------------------------------------


def trainable_tensors(model: GPT) -> list[str]:
    return [name for name, p in model.named_parameters() if not p.frozen]


def test_freeze_base_means_the_same_whichever_path_builds_the_model() -> None:
    built_frozen = GPT(Config({**TINY, "c_network": "lor", "c_freeze_base": True}), n_vocab=7)
    finetuned = GPT(Config({**TINY, "c_network": "lor"}), n_vocab=7)  # plans.finetune's path: freeze after loading
    assert not any(p.frozen for p in finetuned.parameters())
    trainable = freeze_base(finetuned)
    names = trainable_tensors(built_frozen)
    assert names == trainable_tensors(finetuned)
    assert len(names) == 4 * TINY["n_layers"] and all("lora_" in n for n in names)  # A, B of up and down
    assert trainable == sum(p.data.size for p in built_frozen.parameters() if not p.frozen)
    assert freeze_base(GPT(Config(TINY), n_vocab=7)) == 0  # no lor network: nothing left to train


# ---- r_temp ---------------------------------------------------------------------------------------------

B, T = 2, 10


def mixer(name: str, **extra: object):
    cfg = Config({**TINY, "c_attention": name, **extra})
    module = variants.lookup("mixer", name).cls(cfg, numpy.random.default_rng(0))
    rng = numpy.random.default_rng(5)
    for p in module.parameters():  # off the init, so scores and gates are far from uniform
        p.data[...] = backend.asarray(rng.normal(0.0, 0.5, p.shape), p.data.dtype)
    return module


def forward(module, x, ids) -> numpy.ndarray:
    xp = backend.xp
    ctx = Context(ids=ids, positions=xp.broadcast_to(xp.arange(x.shape[1])[None], x.shape[:2]))
    return backend.to_host(module.forward(x, ctx))


def copy_weights(src, dst) -> None:
    for (_, p), (_, q) in zip(src.named_parameters(), dst.named_parameters()):
        q.data[...] = p.data


def scale_columns(linear, stop: int, factor: float) -> None:
    linear.weight.data[:, :stop] *= factor
    if linear.bias is not None:
        linear.bias.data[:stop] *= factor


def setup(width: int = 16):
    rng = numpy.random.default_rng(1)
    x = backend.asarray(rng.standard_normal((B, T, width)), backend.dtype)
    ids = backend.asarray(rng.integers(0, 3, (B, T)))  # repeats: induction has candidates
    return x, ids


@pytest.mark.parametrize("name", ["mha", "gqa", "rfa", "induction"])
def test_r_temp_divides_the_attention_scores(device64: str, name: str) -> None:
    """softmax(q.k / (sqrt(D) r_temp)): r_temp = 2 is r_temp = 1 with the query projection halved."""
    x, ids = setup()
    hot, cold = mixer(name, r_temp=2.0), mixer(name)
    copy_weights(hot, cold)
    queries = cold.n_heads * cold.head_dim  # W_q is the first block of the fused projection
    reference = forward(cold, x, ids)
    scale_columns(cold.qkv, queries, 0.5)
    numpy.testing.assert_allclose(forward(hot, x, ids), forward(cold, x, ids), rtol=1e-10, atol=1e-12)
    assert not numpy.allclose(forward(hot, x, ids), reference)  # it would fail if r_temp were ignored


@pytest.mark.parametrize("name", ["moh", "swh"])
def test_r_temp_divides_the_head_gate_logits_too(device64: str, name: str) -> None:
    x, ids = setup()
    hot, cold = mixer(name, r_temp=2.0), mixer(name)
    copy_weights(hot, cold)
    z = backend.to_host(x @ hot.gate.weight.data + hot.gate.bias.data)
    expected = numpy.exp(z / 2) / numpy.exp(z / 2).sum(-1, keepdims=True)
    numpy.testing.assert_allclose(backend.to_host(hot.gate.scores(x)[1]), expected, rtol=1e-12)
    assert not numpy.allclose(expected, numpy.exp(z) / numpy.exp(z).sum(-1, keepdims=True))
    scale_columns(cold.qkv, cold.n_heads * cold.head_dim, 0.5)
    scale_columns(cold.gate, cold.n_heads, 0.5)
    numpy.testing.assert_allclose(forward(hot, x, ids), forward(cold, x, ids), rtol=1e-10, atol=1e-12)


def test_r_temp_divides_the_moe_router_logits(device64: str) -> None:
    cfg = Config({**TINY, "c_network": "moe"})
    hot = variants.lookup("network", "moe").cls(cfg.replace(r_temp=2.0), numpy.random.default_rng(0))
    cold = variants.lookup("network", "moe").cls(cfg, numpy.random.default_rng(0))
    rng = numpy.random.default_rng(5)
    for p, q in zip(hot.parameters(), cold.parameters()):
        p.data[...] = q.data[...] = backend.asarray(rng.normal(0.0, 0.5, p.shape), p.data.dtype)
    x, ids = setup()
    reference = forward(cold, x, ids)
    scale_columns(cold.router, cfg.n_experts, 0.5)
    numpy.testing.assert_allclose(forward(hot, x, ids), forward(cold, x, ids), rtol=1e-10, atol=1e-12)
    assert not numpy.allclose(forward(hot, x, ids), reference)


# ---- nft with left padding: a finite gradient (den == 0 at leading pads) ------------------------------


def test_nft_padded_gradient_with_moved_weights_is_finite_and_right(device64: str) -> None:
    cfg = Config({**TINY, "c_network": "nft"})
    module = variants.lookup("network", "nft").cls(cfg, numpy.random.default_rng(0))
    rng = numpy.random.default_rng(2)
    for p in module.parameters():
        p.data[...] = backend.asarray(rng.normal(0.0, 0.5, p.shape), p.data.dtype)
    xp = backend.xp
    x = xp.asarray(rng.standard_normal((B, T, cfg.n_emb)))
    valid = numpy.ones((B, T), dtype=bool)
    valid[0, :4] = False  # left padding
    ctx = Context(ids=xp.zeros((B, T), dtype=xp.int64), positions=xp.broadcast_to(xp.arange(T)[None], (B, T)),
                  valid=xp.asarray(valid))
    w = xp.asarray(rng.standard_normal((B, T, cfg.n_emb)))

    def loss() -> float:
        return float((module.forward(x, ctx) * w).sum())

    module.forward(x, ctx)
    dx = module.backward(w)
    tensors = [("input", x, dx)] + [(name, p.data, p.grad.copy()) for name, p in module.named_parameters()]
    for name, value, grad in tensors:
        assert bool(xp.isfinite(grad).all()), f"{name}: non-finite gradient"
        for _ in range(2):
            d = xp.asarray(rng.standard_normal(value.shape))
            analytic = float((grad * d).sum())
            original = value.copy()
            value += 1e-6 * d
            plus = loss()
            value[...] = original - 1e-6 * d
            minus = loss()
            value[...] = original
            numeric = (plus - minus) / 2e-6
            err, tol = abs(analytic - numeric), 1e-8 + 1e-5 * max(abs(analytic), abs(numeric))
            assert err <= tol, f"{name}: analytic {analytic} vs numeric {numeric}"  # NaN fails too


# ---- c_sequence: where the norms sit (the original's meaning) -------------------------------------------


def test_post_norm_blocks_compute_norm_of_the_residual_sum(device64: str) -> None:
    from baby.nn.model import PostNormResidual, Residual

    ids = backend.asarray(numpy.random.default_rng(0).integers(0, 9, (2, TINY["n_ctx"])))
    for sequence, kind in (("pre", Residual), ("post", PostNormResidual)):
        model = GPT(Config({**TINY, "c_sequence": sequence}), 9).eval()
        assert all(type(part) is kind for block in model.blocks for part in block.parts)
    part = model.blocks[0].parts[0]  # post: y = LN1(x + mha(x))
    x = backend.asarray(numpy.random.default_rng(1).standard_normal((2, TINY["n_ctx"], TINY["n_emb"])))
    ctx = model.context(ids)
    expected = part.norm(x + part.inner(x, ctx))
    numpy.testing.assert_allclose(backend.to_host(part(x, ctx)), backend.to_host(expected), rtol=1e-12, atol=1e-12)


def test_the_originals_post_norm_config_builds_post_norm_blocks(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"c_sequence": "post", "s_head": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "n_ctx": 8}')
    cfg = Config.load(path)
    assert cfg.c_sequence == "post" and cfg.c_window_offset == "zero"
    assert any("post-norm" in n for n in cfg.notices())


def test_settings_written_before_the_change_keep_their_meaning() -> None:
    old = {k: v for k, v in Config().to_dict().items() if k != "c_window_offset"}
    for was, offset in (("post", "random"), ("pre", "zero")):
        cfg = Config({**old, "c_sequence": was})
        assert (cfg.c_sequence, cfg.c_window_offset) == ("pre", offset)
        assert f"c_window_offset={offset!r}" in cfg.migration_notice and cfg.migration_notice in cfg.notices()
    partial = Config({"c_sequence": "post"})  # a config file written by hand means what the setting says now
    assert (partial.c_sequence, partial.c_window_offset, partial.migration_notice) == ("post", "zero", "")
