"""Training health: per-group gradient norms and update-to-weight ratios, residual RMS per block and
the clipped-steps count, measured on the logged steps without changing training."""
from __future__ import annotations

import numpy

from baby import backend
from baby.config import Config
from baby.health import parameter_groups
from baby.nn.model import GPT
from baby.train import Trainer
from tests.conftest import TINY


def trainer(**extra: object) -> Trainer:
    cfg = Config({**TINY, "n_steps": 6, "n_log_every": 3, "n_eval_every": 3, "c_attention": "mha+conv", **extra})
    tokens = numpy.random.default_rng(0).integers(0, 20, 3000)
    return Trainer(cfg, GPT(cfg, 20), tokens, tokens[:500], log=lambda line: None)


def test_health_is_recorded_at_the_log_cadence_and_changes_nothing() -> None:
    with_health, without = trainer(), trainer()
    without.health = None
    report = with_health.run()
    without.run()
    for p, q in zip(with_health.model.parameters(), without.model.parameters()):
        assert numpy.array_equal(backend.to_host(p.data), backend.to_host(q.data))
    health = report["curves"]["health"]
    assert [h["step"] for h in health] == report["curves"]["step"] == [3, 6]
    labels = ["embedding", "block0.mha", "block0.conv", "block0.mlp", "block1.mha", "block1.conv", "block1.mlp", "head"]
    assert list(health[0]["grad_norm"]) == labels and list(health[0]["update_ratio"]) == labels
    assert len(health[0]["residual_rms"]) == 2 and all(r > 0 for r in health[0]["residual_rms"])
    assert all(0 < v < 1 for v in health[-1]["update_ratio"].values())
    assert without.curves["health"] == []


def test_health_figures_equal_a_direct_computation() -> None:
    tr = trainer(r_clip=0.0)
    tr.step = 2  # the next step, 3, is a logged one
    params = parameter_groups(tr.model)
    before = [[backend.to_host(p.data).copy() for p in ps] for _, ps in params]
    result = tr.train_step()
    figures = tr.health.read(result.health)
    for (label, ps), old in zip(params, before):
        grad = numpy.sqrt(sum(float((backend.to_host(p.grad).astype(float) ** 2).sum()) for p in ps))
        step = numpy.sqrt(sum(float(((backend.to_host(p.data) - o).astype(float) ** 2).sum()) for p, o in zip(ps, old)))
        weight = numpy.sqrt(sum(float((o.astype(float) ** 2).sum()) for o in old))
        assert numpy.isclose(figures["grad_norm"][label], grad, rtol=1e-4)
        assert numpy.isclose(figures["update_ratio"][label], step / weight, rtol=1e-3)


def test_clipped_steps_are_counted_and_kept_in_the_checkpoint() -> None:
    tr = trainer(r_clip=1e-6)  # every step is clipped
    report = tr.run()
    assert report["clipped_steps"] == 6 and report["curves"]["health"][-1]["clipped_steps"] == 6
    again = trainer(r_clip=1e-6)
    again.load_state_dict(tr.state_dict())
    assert again.clipped_steps == 6
    assert trainer(r_clip=0.0).run()["clipped_steps"] == 0
