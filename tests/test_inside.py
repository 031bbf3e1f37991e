"""The inside views read the forward's own numbers: each is checked against what the module computed
(probabilities sum to 1 and, multiplied with the values, give the head outputs)."""
from __future__ import annotations

import numpy
import pytest

from baby import backend, inside
from baby.config import Config
from baby.nn import variants
from baby.nn.context import Context
from baby.nn.model import GPT
from tests.conftest import TINY

B, T = 2, 11


def run_captured(kind: str, name: str, **extra: object) -> tuple[object, dict, numpy.ndarray]:
    cfg = Config({**TINY, "c_position": "rope", "n_ctx": 16, "s_window": 4, **extra})
    rng = numpy.random.default_rng(0)
    module = variants.lookup(kind, name).cls(cfg, rng)
    x = backend.xp.asarray(rng.standard_normal((B, T, cfg.n_emb)).astype(backend.dtype))
    ids = backend.xp.asarray(rng.integers(0, 4, (B, T)))
    ctx = Context(ids=ids, positions=backend.xp.broadcast_to(backend.xp.arange(T)[None], (B, T)), capture={})
    module.forward(x, ctx)
    return module, ctx.capture[module], backend.to_host(ids)


def h(x: object) -> numpy.ndarray:
    return numpy.asarray(backend.to_host(x), dtype=numpy.float64)


@pytest.mark.parametrize("name", ["mha", "gqa", "moh", "swh"])
def test_attention_rows_sum_to_one_and_reproduce_the_heads(name: str) -> None:
    module, noted, _ = run_captured("mixer", name)
    p, v, heads = h(noted["probs"]), h(noted["values"]), h(noted["heads"])
    assert numpy.allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    assert numpy.allclose(numpy.triu(p, 1), 0.0)  # causal: nothing from later positions
    v_per_head = numpy.repeat(v, noted["group"], axis=1)  # gqa: query head i reads K/V head i // group
    assert numpy.allclose(p @ v_per_head, heads, atol=1e-5)
    view = inside.attention_view(module.inside_view, noted)
    assert view["probs"].shape == (module.n_heads, T, T)
    if name in ("moh", "swh"):
        assert numpy.allclose(h(noted["gate"]).sum(axis=-1), 1.0, atol=1e-5)
    if name == "swh":
        assert (h(noted["chosen"]) == h(noted["gate"]).argmax(axis=-1)).all()


def test_rfa_window_and_memory_sum_to_one_and_reproduce_the_heads() -> None:
    _, noted, _ = run_captured("mixer", "rfa")
    p, mem = h(noted["window_probs"]), h(noted["memory_probs"])
    assert numpy.allclose(p.sum(axis=-1) + mem, 1.0, atol=1e-5)
    w = noted["window"]
    i, j = numpy.indices((T, T))
    assert numpy.allclose(p[..., (j > i) | (j <= i - w)], 0.0)  # only the last W keys, itself included
    assert numpy.allclose(mem[..., :w], 0.0) and (mem[..., w:] > 0).all()  # the memory holds what left
    out = p @ h(noted["values"]) + mem[..., None] * h(noted["memory_values"])
    assert numpy.allclose(out, h(noted["heads"]), atol=1e-5)


@pytest.mark.parametrize("kind,name", [("mixer", "aft"), ("mixer", "gla"), ("network", "nft")])
def test_effective_weights_reproduce_the_prefix_mean(kind: str, name: str) -> None:
    module, noted, _ = run_captured(kind, name)
    a = inside.effective_weights(noted)  # batch row 0
    y = numpy.einsum("tjc,jc->tc", a, h(noted["values"][0]))
    assert numpy.allclose(y, h(noted["means"][0]), atol=1e-5)
    assert (a.sum(axis=1) <= 1.0 + 1e-5).all()
    assert module.inside_view == "prefix mean"
    assert inside.attention_view(module.inside_view, noted)["probs"].shape == (1, T, T)


def test_induction_probabilities_sum_to_one_with_the_sink_and_reproduce_the_output() -> None:
    module, noted, ids = run_captured("mixer", "induction")
    p, vc = h(noted["probs"]), h(noted["values"])
    m = module.m
    assert numpy.allclose(p.sum(axis=2), 1.0, atol=1e-5)
    y = numpy.einsum("btmh,btmhd->bthd", p[:, :, :m], vc) + p[:, :, m, :, None] * h(module.sink_value.data)
    assert numpy.allclose(y, h(noted["heads"]), atol=1e-5)
    rows = inside.induction_view(noted, [int(i) for i in ids[0]], str)
    cand = backend.to_host(noted["candidates"][0])
    for t, row in enumerate(rows):
        for found in row["found"]:  # an earlier occurrence of the same token; its follower is copied
            c = found["position"]
            assert c < t - 1 and ids[0, c] == ids[0, t] and found["copied"] == str(ids[0, c + 1])
            assert c in cand[t]
        total = sum(numpy.array(f["probability"]) for f in row["found"]) + numpy.array(row["sink"])
        assert numpy.allclose(total, 1.0, atol=1e-5)


def test_conv_kernels_sum_to_one_per_group_and_reproduce_the_taps() -> None:
    module, noted, _ = run_captured("mixer", "conv")
    for w, padded, out, offsets in zip(noted["kernels"], noted["padded"], noted["outputs"], noted["offsets"]):
        w, padded, out = h(w), h(padded), h(out)
        assert numpy.allclose(w.sum(axis=-1), 1.0, atol=1e-5)
        b, t, g, _ = w.shape
        reach = padded.shape[1] - t
        mixed = sum(w[..., j, None] * padded[:, reach - off:reach - off + t].reshape(b, t, g, -1)
                    for j, off in enumerate(offsets))
        assert numpy.allclose(mixed.reshape(out.shape), out, atol=1e-5)
    assert [v["dilation"] for v in inside.conv_view(noted)] == module.dilations


def test_views_of_a_model_match_its_forward_and_are_saved(tmp_path) -> None:
    cfg = Config({**TINY, "c_attention": "conv+induction+rfa", "c_network": "nft", "n_ctx": 16})
    model = GPT(cfg, 7)
    ids = [1, 2, 3, 1, 2, 3, 1, 2]
    data = inside.views(model, ids, str, top_k=3)
    logits = h(model.forward(backend.asarray(numpy.array([ids])))[0])  # no capture: the same numbers
    p = numpy.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    assert numpy.isclose(data["next_tokens"][-1]["next"][0]["probability"], p[-1].max(), atol=1e-6)
    kinds = [e["kind"] for e in data["layers"]]
    assert kinds == ["conv", "induction", "rfa", "nft"] * cfg.n_layers
    files = inside.save_views(data, tmp_path / "views")
    assert (tmp_path / "views" / "views.json").exists()
    if inside.figure_class() is not None:
        assert (tmp_path / "views" / "induction_block0.induction.png").exists()
        assert all(f.exists() for f in files)


def test_sampling_view_reports_the_probability_each_token_was_drawn_with() -> None:
    model = GPT(Config({**TINY, "n_ctx": 16}), 7)
    ids = [1, 2, 3]
    greedy = inside.sampling_view(model, ids, str, 1, 0.0, 0, 1.0, 0)
    first = inside.next_token_view(inside.captured_forward(model, ids)[0], ids, str, 1)[-1]["next"][0]
    assert greedy["tokens"][0]["token"] == first["token"]
    assert numpy.isclose(greedy["tokens"][0]["probability"], first["probability"], atol=1e-6)
    nucleus = inside.sampling_view(model, ids, str, 5, 1.0, 2, 1.0, 0)
    assert all(0.0 < t["probability"] <= 1.0 for t in nucleus["tokens"])
