"""Float64 finite-difference checks of every registered module (input and every parameter) and of
the whole model's loss. The registry is walked, so a new variant is checked the moment it registers."""
from __future__ import annotations

import numpy
import pytest

from baby import backend
from baby.config import Config
from baby.nn import core, variants
from baby.nn.context import Context
from baby.nn.gradcheck import check_module
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from tests.conftest import TINY

B, T = 2, 9


def ids_with_repeats(rng: numpy.random.Generator, vocab: int = 5) -> numpy.ndarray:
    """Few distinct ids, so that repeats (which the induction mixer needs) are common."""
    return rng.integers(0, vocab, (B, T))


def tiny_config(**extra: object) -> Config:
    return Config({**TINY, "c_position": "rope", **extra})


def mixer_names() -> list[str]:
    return sorted(e.name for e in variants.entries("mixer"))


def network_names() -> list[str]:
    return sorted(e.name for e in variants.entries("network"))


PAD = 3  # left pads in the second row


def move_weights(module: core.Module, rng: numpy.random.Generator, scale: float = 0.3) -> None:
    """Add scale * N(0, 1) * max(std, 1) to every parameter, so that terms which zero biases and gates,
    unit gains or a small init would hide show in the check."""
    for p in module.parameters():
        std = max(float(p.data.std()), 1.0)
        p.data += backend.xp.asarray(scale * std * rng.standard_normal(p.shape))


def padded_valid(b: int = B, t: int = T) -> numpy.ndarray:
    valid = numpy.ones((b, t), bool)
    valid[1, :PAD] = False
    return valid


def check_sequence_module(kind: str, name: str, cfg: Config, padded: bool = False) -> list[str]:
    """Check a registered module on (B, T, n_emb) inputs. ``padded``: weights moved off their init and
    the second row left-padded (positions count real tokens, as GPT.context makes them); the loss
    weights every output, padding included."""
    rng = numpy.random.default_rng(0)
    module = variants.lookup(kind, name).cls(cfg, rng)
    allow: tuple[str, ...] = ()
    if getattr(module, "straight_through", False):
        # swh: the gate's straight-through gradient is a surrogate (finite differences of a hard argmax
        # are zero); it is tested against the soft mixture in test_attention.py. Here: the exact rest.
        module.straight_through = False
        allow = tuple(n for n, _ in module.named_parameters() if n.startswith("gate."))
    if padded:
        move_weights(module, rng)
    xp = backend.xp
    x = xp.asarray(rng.standard_normal((B, T, cfg.n_emb)))
    ids = xp.asarray(ids_with_repeats(rng))
    valid = xp.asarray(padded_valid()) if padded else None
    positions = (xp.maximum(xp.cumsum(valid, axis=1) - 1, 0) if padded
                 else xp.broadcast_to(xp.arange(T)[None], (B, T)))
    return check_module(module, x, lambda v: module.forward(v, Context(ids=ids, positions=positions, valid=valid)),
                        allow_unused=allow)


@pytest.mark.parametrize("name", mixer_names())
def test_mixer_gradients(device64: str, name: str) -> None:
    checked = check_sequence_module("mixer", name, tiny_config())
    assert "input" in checked and len(checked) > 1


@pytest.mark.parametrize("name", mixer_names())
def test_mixer_gradients_learned_positions_no_bias(device64: str, name: str) -> None:
    check_sequence_module("mixer", name, tiny_config(c_position="learned", c_bias=False, r_temp=0.7))


@pytest.mark.parametrize("name", network_names())
def test_network_gradients(device64: str, name: str) -> None:
    checked = check_sequence_module("network", name, tiny_config())
    assert "input" in checked and len(checked) > 1


@pytest.mark.parametrize("name", sorted(e.name for e in variants.entries("norm")))
def test_norm_gradients(device64: str, name: str) -> None:
    module = variants.lookup("norm", name).cls(8)
    rng = numpy.random.default_rng(1)
    for p in module.parameters():  # move away from the ones/zeros init so every term matters
        p.data[...] = backend.xp.asarray(rng.standard_normal(p.shape))
    x = backend.xp.asarray(rng.standard_normal((3, 4, 8)))
    assert "input" in check_module(module, x)


@pytest.mark.parametrize("extra", [
    {},
    {"c_tie": False, "c_norm": "rms", "c_position": "rope", "c_bias": False},
    {"r_dropout": 0.3},
    {"c_sequence": "post"},
    {"c_sequence": "post", "c_attention": "conv+induction", "c_network": "swi", "c_norm": "rms", "r_dropout": 0.2},
    {"c_tie": False, "c_head_bias": True, "c_sequence": "post"},
    {"c_head_bias": True},
], ids=["gpt", "untied-rms-rope", "dropout", "post-norm", "post-norm-conv-induction-swi", "original-head-bias-post",
        "tied-head-bias"])
def test_whole_model_loss_gradients(device64: str, extra: dict) -> None:
    cfg = Config({**TINY, **extra})
    model = GPT(cfg, n_vocab=11)
    rng = numpy.random.default_rng(5)
    xp = backend.xp
    ids = xp.asarray(rng.integers(0, 11, (B, T + 1)))

    def loss_at() -> float:
        # the same dropout masks on every evaluation: a fresh generator with a fixed seed
        logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], rng=backend.rng(7)))
        return float(cross_entropy(logits, ids[:, 1:])[0])

    for p in model.parameters():
        p.grad[...] = 0
    logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], rng=backend.rng(7)))
    model.backward(cross_entropy(logits, ids[:, 1:])[1])
    from baby.nn.gradcheck import directional_check
    for name, p in model.named_parameters():
        assert bool((p.grad != 0).any()), f"{name} gets no gradient"
        directional_check(name, p.data, p.grad.copy(), loss_at, rng)


def test_gradcheck_catches_a_wrong_backward(device64: str) -> None:
    """The checker itself must fail on a deliberately broken backward."""
    from baby.nn.gradcheck import GradientMismatch
    from baby.nn.layers import LayerNorm

    class Broken(LayerNorm):
        def backward(self, dy):  # drops the mean-subtraction terms
            xhat, rstd = self.cache
            self.gain.grad += (dy * xhat).sum(axis=(0, 1))
            self.bias.grad += dy.sum(axis=(0, 1))
            return dy * self.gain.data * rstd

    x = backend.xp.asarray(numpy.random.default_rng(0).standard_normal((2, 3, 6)))
    with pytest.raises(GradientMismatch):
        check_module(Broken(6), x)


def test_cross_entropy_value_gradient_and_ignored_targets(device64: str) -> None:
    from baby.nn.gradcheck import directional_check
    from baby.nn.layers import log_softmax
    xp = backend.xp
    rng = numpy.random.default_rng(4)
    logits = xp.asarray(rng.standard_normal((2, 5, 7)) * 3)
    targets = xp.asarray(rng.integers(0, 7, (2, 5)))
    targets[0, 1] = targets[1, 4] = -100
    loss, grad = cross_entropy(logits, targets, ignore=-100)
    keep = backend.to_host(targets) != -100
    logp = backend.to_host(log_softmax(logits))
    picked = numpy.take_along_axis(logp, numpy.where(keep, backend.to_host(targets), 0)[..., None], -1)[..., 0]
    assert float(loss) == pytest.approx(-picked[keep].mean(), rel=1e-12)
    assert float(abs(grad[0, 1]).sum()) == 0.0
    directional_check("logits", logits, grad, lambda: float(cross_entropy(logits, targets, ignore=-100)[0]), rng)


def test_scatter_add_sums_repeated_rows() -> None:
    rng = numpy.random.default_rng(0)
    index = rng.integers(0, 7, 50)
    values = rng.standard_normal((50, 3))
    expected = numpy.zeros((7, 3))
    numpy.add.at(expected, index, values)
    target = numpy.zeros((7, 3))
    backend.scatter_add(target, index, values)
    numpy.testing.assert_allclose(target, expected, rtol=1e-12, atol=1e-12)


# ---- NaN/inf must fail the check -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["input", "parameter"])
def test_gradcheck_fails_on_a_non_finite_gradient(device64: str, bad: float, where: str) -> None:
    """A backward that returns NaN/inf (in one entry or everywhere) must never pass."""
    from baby.nn.gradcheck import GradientMismatch
    from baby.nn.layers import Linear

    class Poisoned(Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            if where == "input":
                dx[...] = bad
            else:
                self.weight.grad[0, 0] = bad
            return dx

    x = backend.xp.asarray(numpy.random.default_rng(0).standard_normal((2, 3, 4)))
    with pytest.raises(GradientMismatch, match="not finite"):
        check_module(Poisoned(numpy.random.default_rng(1), 4, 5), x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_directional_check_fails_on_a_non_finite_numeric_side(device64: str, bad: float) -> None:
    """A NaN error fails every "greater than" test: the comparison itself must reject a non-finite loss."""
    from baby.nn.gradcheck import GradientMismatch, directional_check
    x = backend.xp.zeros(3)
    with pytest.raises(GradientMismatch):
        directional_check("x", x, backend.xp.ones(3), lambda: bad * float(x.sum() + 1), numpy.random.default_rng(0))


# ---- left padding, weights moved off their initialisation ------------------------------------------


@pytest.mark.parametrize("name", mixer_names())
def test_mixer_gradients_left_padded_moved_weights(device64: str, name: str) -> None:
    checked = check_sequence_module("mixer", name, tiny_config(r_temp=0.8), padded=True)
    assert "input" in checked and len(checked) > 1


@pytest.mark.parametrize("name", network_names())
def test_network_gradients_left_padded_moved_weights(device64: str, name: str) -> None:
    checked = check_sequence_module("network", name, tiny_config(r_balance=0.5), padded=True)
    assert "input" in checked and len(checked) > 1


@pytest.mark.parametrize("groups", [2, 8])
def test_ggl_gradients_with_a_shuffle_that_is_not_its_own_inverse(device64: str, groups: int) -> None:
    """With 4 groups of 4 channels the shuffle is a 4x4 transpose, its own inverse: 2 and 8 groups
    catch an unshuffle that is not the shuffle's inverse."""
    check_sequence_module("network", "ggl", tiny_config(n_groups=groups))
    check_sequence_module("network", "ggl", tiny_config(n_groups=groups), padded=True)


def whole_model_check_padded(cfg: Config) -> None:
    """Loss = mean cross-entropy over real targets + the modules' auxiliary losses (moe's balance
    loss over real tokens), for moved weights and a left-padded row; every parameter is checked."""
    model = GPT(cfg, n_vocab=7)
    hard_gates = False  # swh: the exact derivative, 0 for the hard gate (its surrogate is tested elsewhere)
    for m in model.modules():
        if getattr(m, "straight_through", False):
            m.straight_through, hard_gates = False, True
    rng = numpy.random.default_rng(5)
    move_weights(model, rng)
    xp = backend.xp
    ids = xp.asarray(ids_with_repeats(rng, 7))
    ids = xp.concatenate([ids, ids[:, :1]], axis=1)  # T + 1 tokens: inputs and shifted targets
    valid = xp.asarray(padded_valid())
    targets = ids[:, 1:].copy()
    targets[~valid] = -100

    def loss_at() -> float:
        logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], valid=valid))
        return float(cross_entropy(logits, targets, ignore=-100)[0]) + model.extra_loss()

    for p in model.parameters():
        p.grad[...] = 0
    logits = model.forward(ids[:, :-1], model.context(ids[:, :-1], valid=valid))
    model.backward(cross_entropy(logits, targets, ignore=-100)[1])
    from baby.nn.gradcheck import directional_check
    for name, p in model.named_parameters():
        assert bool((p.grad != 0).any()) or (hard_gates and ".gate." in name), f"{name} gets no gradient"
        directional_check(name, p.data, p.grad.copy(), loss_at, rng)


@pytest.mark.parametrize("name", mixer_names())
def test_whole_model_gradients_left_padded_per_mixer(device64: str, name: str) -> None:
    whole_model_check_padded(tiny_config(c_attention=name, n_layers=1))


@pytest.mark.parametrize("name", network_names())
def test_whole_model_gradients_left_padded_per_network(device64: str, name: str) -> None:
    whole_model_check_padded(tiny_config(c_network=name, c_position="learned", n_layers=1, r_balance=0.5))


@pytest.mark.parametrize("name", ["mha", "conv+induction"])
def test_whole_model_gradients_left_padded_post_norm(device64: str, name: str) -> None:
    whole_model_check_padded(tiny_config(c_attention=name, c_sequence="post", n_layers=2))
