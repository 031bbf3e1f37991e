"""Model-level behaviour over every registered mixer and network: causality, incremental decoding
equal to full forwards (also past n_ctx), training reduces the loss."""
from __future__ import annotations

import numpy
import pytest

from baby import backend
from baby.config import Config
from baby.generate import generate
from baby.nn import variants
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from baby.optim import AdamW
from tests.conftest import TINY

VOCAB = 13


def mixers() -> list[str]:
    return sorted(e.name for e in variants.entries("mixer"))


def networks() -> list[str]:
    return sorted(e.name for e in variants.entries("network"))


LAYOUTS = [{"c_attention": m} for m in mixers()] + \
          [{"c_attention": "mha", "c_network": n} for n in networks() if n != "mlp"]
IDS = [f"{d['c_attention']}+{d.get('c_network', 'mlp')}" for d in LAYOUTS]


def tiny_model(layout: dict, **extra: object) -> GPT:
    cfg = Config({**TINY, **layout, **extra})
    return GPT(cfg, VOCAB)


def random_ids(shape: tuple[int, int], seed: int = 0, vocab: int = 6) -> numpy.ndarray:
    # a small id range makes repeats common (the induction mixer only acts on repeats)
    return numpy.random.default_rng(seed).integers(0, vocab, shape)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_changing_later_tokens_never_changes_earlier_logits(device64: str, layout: dict) -> None:
    model = tiny_model(layout).eval()
    t = model.cfg.n_ctx
    ids = random_ids((2, t))
    cut = t // 2
    changed = ids.copy()
    changed[:, cut:] = random_ids((2, t - cut), seed=1, vocab=VOCAB)
    a = backend.to_host(model.forward(backend.asarray(ids)))
    b = backend.to_host(model.forward(backend.asarray(changed)))
    numpy.testing.assert_allclose(a[:, :cut], b[:, :cut], rtol=1e-10, atol=1e-12)
    assert not numpy.allclose(a[:, cut:], b[:, cut:]), "later logits should depend on later tokens"


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_incremental_logits_equal_full_forward(device64: str, layout: dict) -> None:
    """Prefill a prompt, then feed one token at a time: every step's logits match a full forward."""
    model = tiny_model(layout).eval()
    t = model.cfg.n_ctx
    ids = backend.asarray(random_ids((2, t), seed=2))
    full = backend.to_host(model.forward(ids))
    state: dict = {}
    prompt = 5
    steps = [backend.to_host(model.forward(ids[:, :prompt], model.context(ids[:, :prompt], 0, state=state)))]
    for i in range(prompt, t):
        step = ids[:, i:i + 1]
        steps.append(backend.to_host(model.forward(step, model.context(step, i, state=state))))
    numpy.testing.assert_allclose(numpy.concatenate(steps, axis=1), full, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_cached_greedy_generation_equals_uncached_past_n_ctx(device64: str, layout: dict) -> None:
    model = tiny_model(layout)
    n = model.cfg.n_ctx
    prompt = list(random_ids((1, 4), seed=3)[0])
    cached = generate(model, prompt, 2 * n + 3, temperature=0, use_cache=True)
    plain = generate(model, prompt, 2 * n + 3, temperature=0, use_cache=False)
    assert cached.tokens == plain.tokens
    assert len(cached.tokens) == 2 * n + 3
    assert cached.prefills >= 2  # the window filled up and was re-run at least once


def test_sampled_generation_is_reproducible_and_prompt_is_cut(device: str) -> None:
    model = tiny_model({"c_attention": "mha"})
    long_prompt = list(random_ids((1, model.cfg.n_ctx + 5))[0])
    a = generate(model, long_prompt, 20, temperature=1.0, top_k=5, top_p=0.9, seed=7)
    b = generate(model, long_prompt, 20, temperature=1.0, top_k=5, top_p=0.9, seed=7, use_cache=False)
    assert a.tokens == b.tokens
    assert a.notices and "cut" in a.notices[0]


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_a_few_steps_reduce_the_loss(device: str, layout: dict) -> None:
    model = tiny_model(layout)
    rng = numpy.random.default_rng(0)
    pattern = rng.integers(0, VOCAB, 7)
    stream = numpy.tile(pattern, 40)  # a repeating sequence any mixer can learn to predict
    starts = rng.integers(0, len(stream) - model.cfg.n_ctx - 1, (40, 4))
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for s in starts:
        windows = backend.asarray(stream[s[:, None] + numpy.arange(model.cfg.n_ctx + 1)])
        opt.zero_grad()
        loss, d = cross_entropy(model.forward(windows[:, :-1]), windows[:, 1:])
        model.backward(d)
        opt.clip(1.0)
        opt.step()
        losses.append(float(loss) + model.extra_loss())
    assert numpy.mean(losses[-5:]) < 0.7 * numpy.mean(losses[:5])


def test_parameter_count_matches_formula() -> None:
    """GPT-2 layout: V*C + T*C + L*(12 C^2 + 13 C) + 2C (tied head, biases, LayerNorms)."""
    cfg = Config({"n_ctx": 64, "n_emb": 48, "n_heads": 4, "n_layers": 3})
    c, v, t, layers = 48, 50, 64, 3
    assert GPT(cfg, v).n_params() == v * c + t * c + layers * (12 * c * c + 13 * c) + 2 * c


def test_untied_head_adds_its_matrix() -> None:
    cfg = Config({"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1})
    assert GPT(cfg.replace(c_tie=False), 30).n_params() - GPT(cfg, 30).n_params() == 16 * 30


def test_grow_vocab_keeps_old_rows() -> None:
    cfg = Config({"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "c_tie": False})
    model = GPT(cfg, 20)
    old_tok, old_head = model.tok.weight.data.copy(), model.head.weight.data.copy()
    model.grow_vocab(25, seed=1)
    assert model.tok.weight.shape == (25, 16) and model.head.weight.shape == (16, 25)
    numpy.testing.assert_array_equal(model.tok.weight.data[:20], old_tok)
    numpy.testing.assert_array_equal(model.head.weight.data[:, :20], old_head)
    assert model.forward(numpy.array([[24, 3]])).shape == (1, 2, 25)
