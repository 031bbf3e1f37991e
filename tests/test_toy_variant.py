"""A variant is one file plus one registry line: a toy mixer and a toy network written to a file of
their own and registered (the one line: importing the file) are picked up by everything, with no
other edit - the gradient check, causality, cached generation, ``info --config`` (parameters and the
memory the class declares), ``inspect``, ``export`` (refused in one line) and the settings table."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy
import pytest

from baby import backend, plans
from baby.config import Config, ConfigError, settings_table
from baby.generate import generate
from baby.nn import core
from baby.nn.gradcheck import LEARNER_TOLERANCE, check_by_name
from baby.nn.model import GPT
from tests.conftest import TINY

TOY_FILE = '''
"""toy_prev: each position reads the one before it, y_t = s * x_{t-1} W (0 at the first position);
toy_tanh: a per-token y = tanh(x) W."""
from typing import Any

from baby import backend
from baby.nn.core import Mixer, Network, register
from baby.nn.layers import Linear, residual_std
from baby.nn.settings import Setting


@register("mixer", "toy_prev", settings=(
    Setting("r_toy_scale", float, 1.0, "toy_prev: scale of the previous position's vector", 0.0, 10.0),
))
class PreviousToken(Mixer):
    @classmethod
    def score_floats(cls, cfg: Any, n_ctx: int) -> float:
        return 1000.0 * n_ctx  # declared, so that the memory estimate must read it

    def __init__(self, cfg: Any, rng: Any) -> None:
        self.scale = cfg.r_toy_scale
        self.proj = Linear(rng, cfg.n_emb, cfg.n_emb, bias=False, std=residual_std(cfg))

    def forward(self, x: Any, ctx: Any) -> Any:
        xp = backend.xp
        state = self.decoding_state(ctx)
        before = state.get("last") if state else None
        before = xp.zeros_like(x[:, :1]) if before is None else before
        if state is not None:
            state["last"] = x[:, -1:]
        return self.proj(self.scale * xp.concatenate([before, x[:, :-1]], axis=1))

    def backward(self, dy: Any) -> Any:
        # d: y_t = s x_{t-1} W: dx_t = s (dy_{t+1} W^T), 0 for the last position
        d = self.proj.backward(dy)
        dx = backend.xp.zeros_like(d)
        dx[:, :-1] = self.scale * d[:, 1:]
        return dx


@register("network", "toy_tanh")
class TanhNetwork(Network):
    def __init__(self, cfg: Any, rng: Any) -> None:
        self.proj = Linear(rng, cfg.n_emb, cfg.n_emb, bias=cfg.c_bias, std=residual_std(cfg))
        self.t: Any = None

    def forward(self, x: Any, ctx: Any) -> Any:
        self.t = backend.xp.tanh(x)
        return self.proj(self.t)

    def backward(self, dy: Any) -> Any:
        # d: y = tanh(x) W: dx = (1 - tanh(x)^2) * (dy W^T)
        return (1 - self.t * self.t) * self.proj.backward(dy)
'''
TOY = {**TINY, "c_attention": "toy_prev", "c_network": "toy_tanh", "c_position": "learned"}


@pytest.fixture(scope="module")
def toy_registered(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("variant") / "toy_variants.py"
    path.write_text(TOY_FILE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("toy_variants", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_variants"] = module
    spec.loader.exec_module(module)  # the registry line: importing the file runs its @register
    yield module
    core.REGISTRY["mixer"].pop("toy_prev")
    core.REGISTRY["network"].pop("toy_tanh")
    sys.modules.pop("toy_variants")


def test_the_toy_variants_pass_the_gradient_check(toy_registered) -> None:
    for name in ("toy_prev", "toy_tanh"):
        errors = check_by_name(name, log=None)
        assert errors and all(err <= LEARNER_TOLERANCE for err in errors.values()), (name, errors)


def test_a_toy_model_is_causal_and_generates_the_same_with_and_without_its_cache(toy_registered,
                                                                                 device64: str) -> None:
    model = GPT(Config(TOY), 11).eval()
    t = model.cfg.n_ctx
    ids = numpy.random.default_rng(0).integers(0, 11, (2, t))
    changed = ids.copy()
    changed[:, t // 2:] = (changed[:, t // 2:] + 1) % 11
    a, b = (backend.to_host(model.forward(backend.asarray(x))) for x in (ids, changed))
    numpy.testing.assert_allclose(a[:, :t // 2], b[:, :t // 2], rtol=1e-12, atol=1e-12)
    assert not numpy.allclose(a[:, t // 2:], b[:, t // 2:])
    cached = generate(model, [1, 2, 3], 2 * t + 3, temperature=0, use_cache=True)
    plain = generate(model, [1, 2, 3], 2 * t + 3, temperature=0, use_cache=False)
    assert cached.tokens == plain.tokens


def test_info_counts_the_toy_parameters_and_the_memory_its_class_declares(toy_registered) -> None:
    lines: list[str] = []
    toy = plans.info(config=TOY, probe=False, log=lines.append)
    assert toy["n_params"] == GPT(Config(TOY), toy["n_vocab"]).n_params()
    plain = plans.info(config={**TOY, "c_attention": "conv"}, probe=False, log=lines.append)
    declared = TINY["n_layers"] * 1000 * TINY["n_ctx"] * TINY["batch_size"] * TINY["n_ctx"] * 4
    grown = toy["memory_per_step"]["activation_bytes"] - plain["memory_per_step"]["activation_bytes"]
    assert grown >= declared  # the toy's score_floats reached the estimate


def test_the_settings_table_and_config_know_the_toy_setting(toy_registered) -> None:
    assert "`r_toy_scale`" in settings_table()
    assert Config({**TOY, "r_toy_scale": 2.0}).r_toy_scale == 2.0
    with pytest.raises(ConfigError, match="r_toy_scale"):
        Config({**TOY, "r_toy_scale": 20.0})


def test_a_trained_toy_run_is_inspected_and_its_export_is_refused_in_one_line(toy_registered,
                                                                              tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    guid = plans.train({**TOY, "n_steps": 3, "n_sample_tokens": 5}, inputs=[str(text)], root=tmp_path,
                       log=lambda _line: None)
    data = plans.inspect(guid, "the cat", tmp_path / "inside", root=tmp_path, log=lambda _line: None)
    toy_layers = [layer for layer in data["layers"] if layer["kind"] == "toy_prev"]
    assert len(toy_layers) == TINY["n_layers"] and all("no inside view" in layer["note"] for layer in toy_layers)
    assert not any(layer["kind"] == "toy_tanh" for layer in data["layers"])  # per token: nothing to show
    with pytest.raises(ConfigError, match="c_attention='toy_prev'"):
        plans.export(guid, tmp_path / "hf", root=tmp_path, log=lambda _line: None)
    assert not (tmp_path / "hf").exists()
