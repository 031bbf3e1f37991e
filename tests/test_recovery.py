"""A diverged run really recovers: rollback points (earlier checkpoints, a bounded number), a loss or
gradient-norm spike stopped before a checkpoint saves it, and ``train --resume G --from-step S``
continuing from an earlier point with a lower learning rate, optionally skipping the batches that
led to the spike; ``info`` and ``runs`` show the points."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from baby import plans
from baby.__main__ import main
from baby.config import Config
from baby.nn.model import GPT
from baby.runs import RunStore
from baby.train import Diverged, Interrupted, Trainer
from tests.conftest import TINY_RUN, quiet, weights

# The run of the report: r_learn 1 without clipping and with beta2 = 0 blows up within a few steps.
HOT = {"n_ctx": 32, "n_emb": 32, "n_heads": 2, "n_layers": 2, "batch_size": 8, "n_steps": 40, "n_sample_tokens": 20,
       "r_learn": 1.0, "r_clip": 0.0, "r_beta2": 0.0, "n_eval_every": 4, "seed": 3}


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def hot_run(tmp_path: Path, corpus: Path) -> tuple[Path, str, str]:
    """The hot run, stopped by its divergence: (root, guid, the one error line)."""
    config = tmp_path / "hot.json"
    config.write_text(json.dumps(HOT), encoding="utf-8")
    status, _, err = run_main("train", "--config", str(config), "--input", str(corpus), "--root", str(tmp_path))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    (guid,) = RunStore(tmp_path).guids()
    return tmp_path, guid, err


def test_a_diverged_run_names_its_rollback_points_and_finishes_after_one_rollback(hot_run) -> None:
    root, guid, err = hot_run
    store = RunStore(root)
    assert "rollback points: steps 0, 4" in err and f"--resume {guid}" in err and "--from-step 0" in err
    assert store.rollback_points(guid) == [0]  # the latest checkpoint (step 4) is the other point
    status, out, err = run_main("train", "--resume", guid, "--from-step", "0", "--set", "r_learn=0.0001",
                                "--root", str(root))
    assert status == 0, err
    assert "rolling back to step 0" in out
    report = store.read("report", guid)
    assert report["steps"] == report["total_steps"] == HOT["n_steps"]
    assert report["curves"]["step"] == sorted(set(report["curves"]["step"])) and report["curves"]["step"][-1] == 40
    record = store.read("config", guid)
    assert "diverged" not in record["runtime"]
    (rollback,) = record["runtime"]["rollbacks"]
    assert rollback["from_step"] == 0 and rollback["set"] == {"r_learn": 0.0001} and rollback["diverged"]["step"] > 0
    assert record["settings"]["r_learn"] == 0.0001
    _, latest = store.read("checkpoint", guid)["model"], store.read("checkpoint", guid)["trainer"]
    assert latest["step"] == 40 and store.rollback_points(guid) == [32, 36]  # n_rollback = 2 kept
    assert store.path("model", guid).exists()


def test_info_and_runs_show_the_rollback_points(hot_run) -> None:
    root, guid, _ = hot_run
    data = plans.info(guid, root=root, log=quiet)
    assert data["rollback_points"] == [0] and data["status"]["state"].startswith("stopped on a divergence")
    (row,) = plans.runs_plan(root=root, log=quiet)
    assert row["rollback_points"] == [0] and row["state"].startswith("diverged")


def test_skipping_batches_after_a_rollback_continues_bit_for_bit_after_a_kill(hot_run, tmp_path: Path) -> None:
    root, guid, _ = hot_run
    diverged_at = RunStore(root).read("config", guid)["runtime"]["diverged"]["step"]
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("copy"))
    plans.resume(guid, root=root, from_step=0, skip_batches=True, overrides={"r_learn": 0.0001}, log=quiet)
    rollback = RunStore(root).read("config", guid)["runtime"]["rollbacks"][0]
    assert rollback["skipped_batches"] == diverged_at
    assert RunStore(root).read("checkpoint", guid)["trainer"]["batch_offset"] == diverged_at
    with pytest.raises(Interrupted):  # the same rollback, killed before its first checkpoint, resumed plainly
        plans.resume(guid, root=copy, from_step=0, skip_batches=True, overrides={"r_learn": 0.0001}, log=quiet,
                     stop_at=2)
    assert RunStore(copy).read("checkpoint", guid)["trainer"]["batch_offset"] == diverged_at
    plans.resume(guid, root=copy, log=quiet)
    assert weights(copy, guid) == weights(root, guid)


def test_a_rollback_to_a_step_that_is_no_point_is_one_line_and_changes_nothing(hot_run) -> None:
    root, guid, _ = hot_run
    before = {p.name: p.read_bytes() for p in (root / "models").iterdir()}
    status, _, err = run_main("train", "--resume", guid, "--from-step", "3", "--root", str(root))
    assert status == 2 and len(err.strip().splitlines()) == 1 and "no rollback point there" in err
    status, _, err = run_main("train", "--config", str(root / "hot.json"), "--skip-batches", "--root", str(root))
    assert status == 2 and "--resume" in err
    assert {p.name: p.read_bytes() for p in (root / "models").iterdir()} == before


def test_rollback_points_are_bounded_by_n_rollback(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train({**TINY_RUN, "n_steps": 24, "n_eval_every": 2, "n_rollback": 3}, [str(corpus)], root=tmp_path,
                       log=quiet)
    store = RunStore(tmp_path)
    assert store.rollback_points(guid) == [18, 20, 22]
    checkpoints = [p for p in store.files(guid) if p.name.startswith("checkpoint_")]
    assert len(checkpoints) == 4  # the latest and n_rollback earlier ones: the disk cost is bounded


def test_a_healthy_run_is_never_stopped_and_trains_as_before(tmp_path: Path, corpus: Path) -> None:
    off = plans.train({**TINY_RUN, "r_spike_loss": 0.0, "r_spike_norm": 0.0, "n_log_every": 1}, [str(corpus)],
                      root=tmp_path / "off", log=quiet)
    on = plans.train({**TINY_RUN, "n_log_every": 1}, [str(corpus)], root=tmp_path / "on", log=quiet)
    assert weights(tmp_path / "off", off) == weights(tmp_path / "on", on)


def spiky_trainer(**settings: object) -> Trainer:
    import numpy
    cfg = Config({**TINY_RUN, **settings})
    tokens = numpy.random.default_rng(0).integers(0, 20, 2000)
    return Trainer(cfg, GPT(cfg, 20), tokens[:1500], tokens[1500:], log=quiet)


@pytest.mark.parametrize("losses, norms, stops", [
    ([3.0, 2.9, 2.8, 2.7, 2.6], [1.0, 1.1, 0.9, 1.0, 1.0], False),    # a healthy run
    ([3.0, 2.9, 2.8, 2.7, 5.2], [1.0, 1.1, 0.9, 1.0, 1.0], True),     # loss 2.4 nats above the mean
    ([3.0, 2.0, 4.0, 2.5, 5.2], [1.0, 1.1, 0.9, 1.0, 1.0], False),    # as far, but within this run's noise
    ([3.0, 2.9, 2.8, 2.7, 2.6], [1.0, 1.1, 0.9, 1.0, 150.0], True),   # gradient norm 150 x the median
    ([9.0, 9.0, 9.0, 3.0], [1.0, 1.0, 1.0, 1.0], False),               # too few lines to judge
])
def test_a_spike_is_a_loss_far_above_its_recent_mean_or_a_norm_far_above_its_median(losses, norms, stops) -> None:
    trainer = spiky_trainer()
    with pytest.raises(Diverged, match="loss spike") if stops else contextlib.nullcontext():
        for loss, norm in zip(losses, norms):
            trainer.check_spike(loss, norm)
