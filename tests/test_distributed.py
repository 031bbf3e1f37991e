"""Data parallelism: sharded batches, the communicator, and 2 MPI ranks against one process.

The MPI tests launch ``mpiexec -n 2 python -m baby train`` as the user would; they skip (with the
install hint) where mpi4py or an mpiexec is missing. Each stays well under 30 s.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import backend, distributed, plans, runs
from baby.config import ConfigError
from baby.data import Batches
from baby.runs import RunStore
from tests.conftest import ROOT

TINY_DP = {"c_tokenizer": "char", "n_ctx": 16, "n_emb": 32, "n_heads": 2, "n_layers": 2, "batch_size": 4,
           "n_accumulate": 2, "n_steps": 12, "d_type": "fp64", "r_dropout": 0.0, "n_eval_every": 6,
           "n_eval_batches": 2, "n_checkpoint_every": 2, "n_sample_tokens": 5, "seed": 5,
           "s_checkpoint_words": "100"}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **extra}


@lru_cache(maxsize=1)
def mpi_missing() -> str:
    """Why 2 MPI ranks cannot run here ('' when they can), probed once."""
    launcher = shutil.which("mpiexec") or shutil.which("mpirun")
    if not launcher:
        return f"no mpiexec on PATH: {distributed.MPI_HELP}"
    probe = "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
    try:
        done = subprocess.run([launcher, "-n", "2", sys.executable, "-c", probe], env=env(), capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "mpiexec -n 2 did not start within 60 s"
    return "" if done.returncode == 0 else f"mpi4py under mpiexec failed ({done.stderr.strip()[-200:]}): {distributed.MPI_HELP}"


def needs_mpi() -> str:
    reason = mpi_missing()
    if reason:
        pytest.skip(reason)
    return shutil.which("mpiexec") or shutil.which("mpirun") or ""


@pytest.fixture()
def text(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text((ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


def weights(root: Path, guid: str) -> list[numpy.ndarray]:
    model = runs.Run(RunStore(root), guid).model()
    return [backend.to_host(p.data).copy() for p in model.parameters()]


def reference(settings: dict[str, Any], text: Path, root: Path) -> str:
    """One process, in this interpreter."""
    root.mkdir()
    guid = plans.train(settings, inputs=[str(text)], root=root, log=lambda _line: None)
    backend.use("cpu", d_type="fp32")
    return guid


def launch(mpiexec: str, n: int, args: list[str], timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "baby", *args], cwd=ROOT, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def assert_same(a: list[numpy.ndarray], b: list[numpy.ndarray], tol: float) -> None:
    worst = max(float(numpy.abs(x - y).max()) for x, y in zip(a, b))
    assert worst <= tol, worst


# ---- without MPI --------------------------------------------------------------------------------

def test_shards_of_a_batch_are_the_batch() -> None:
    tokens = numpy.arange(2000) % 97
    whole = Batches(tokens, 8, 6, seed=1, offset="random")
    for step in (0, 5, 40):
        x, y = whole.batch(step)
        parts = [Batches(tokens, 8, 6, 1, True, "random", rank, 3).batch(step) for rank in range(3)]
        assert numpy.array_equal(numpy.concatenate([p[0] for p in parts]), x)
        assert numpy.array_equal(numpy.concatenate([p[1] for p in parts]), y)
        assert parts[0][0].shape == (2, 8)


def test_uneven_split_is_refused() -> None:
    distributed.check_split(12, 4)
    with pytest.raises(ConfigError, match=r"batch_size=6 cannot be split evenly over 4 ranks.*\(1, 2, 3, 6\)"):
        distributed.check_split(6, 4)


def test_one_process_imports_no_mpi() -> None:
    code = "import sys; from baby import distributed; c = distributed.world(); print(c.size, 'mpi4py' in sys.modules)"
    clean = {k: v for k, v in env().items() if k not in distributed.SIZE_VARIABLES + distributed.RANK_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_missing_mpi4py_under_a_launcher_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    monkeypatch.setattr(distributed, "_WORLD", {})
    with pytest.raises(distributed.CommError, match=r"mpi4py is missing.*pip install -e \.\[mpi\]"):
        distributed.world()


def test_comm_timeout_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABY_COMM_TIMEOUT", "soon")
    with pytest.raises(distributed.CommError, match="BABY_COMM_TIMEOUT"):
        distributed.timeout_seconds()
    monkeypatch.setenv("BABY_COMM_TIMEOUT", "2.5")
    assert distributed.timeout_seconds() == 2.5


# ---- 2 MPI ranks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("d_type, tol", [("fp64", 1e-12), ("fp32", 1e-5)])
def test_two_ranks_train_the_weights_of_one_process(tmp_path: Path, text: Path, d_type: str, tol: float) -> None:
    mpiexec = needs_mpi()
    settings = {**TINY_DP, "d_type": d_type}
    one = reference(settings, text, tmp_path / "one")
    (tmp_path / "two").mkdir()
    (tmp_path / "cfg.json").write_text(json.dumps(settings), encoding="utf-8")
    done = launch(mpiexec, 2, ["train", "--config", str(tmp_path / "cfg.json"), "--input", str(text),
                               "--root", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr
    two = done.stdout.split()[-1]
    assert done.stdout.count("training 12 steps") == 1  # rank 0 alone prints
    assert_same(weights(tmp_path / "one", one), weights(tmp_path / "two", two), tol)
    report = json.loads((tmp_path / "two" / "outputs" / f"report_{two}.json").read_text())
    assert report["world_size"] == 2 and report["words_seen"] > 0
    # the same files as one process writes (learning-curve checkpoint included), once
    names = sorted(p.name.replace(one, "G") for p in RunStore(tmp_path / "one").files(one))
    assert sorted(p.name.replace(two, "G") for p in RunStore(tmp_path / "two").files(two)) == names
    assert any("_chck_100" in n for n in names)


def test_uneven_batch_is_refused_in_one_line(tmp_path: Path) -> None:
    mpiexec = needs_mpi()
    done = launch(mpiexec, 2, ["train", "--config", "configs/tiny.json", "--set", "batch_size=3",
                               "--root", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: batch_size=3 cannot be split evenly over 2 ranks: launch a number of ranks that divides it (1, 3) "
        "or change batch_size"]
    assert not list(tmp_path.iterdir())


def test_killed_two_rank_run_resumes_on_two_and_on_one(tmp_path: Path, text: Path) -> None:
    mpiexec = needs_mpi()
    settings = {**TINY_DP, "n_steps": 60, "n_checkpoint_every": 3, "n_eval_every": 30}
    one = reference(settings, text, tmp_path / "one")
    killed = tmp_path / "killed"
    killed.mkdir()
    (tmp_path / "cfg.json").write_text(json.dumps(settings), encoding="utf-8")
    job = subprocess.Popen([mpiexec, "-n", "2", sys.executable, "-m", "baby", "train", "--config",
                            str(tmp_path / "cfg.json"), "--input", str(text), "--root", str(killed)],
                           cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    step, deadline = 0, time.monotonic() + 60
    while step < 3 and time.monotonic() < deadline and job.poll() is None:
        for path in (killed / "models").glob("checkpoint_*.json"):
            try:
                step = json.loads(path.read_text())["trainer"]["step"]
            except (OSError, ValueError):
                pass
        time.sleep(0.005)
    os.killpg(job.pid, signal.SIGKILL)  # mpiexec and both ranks, mid-run
    job.wait(timeout=30)
    guid = next((killed / "configs").glob("config_*.json")).stem.split("_")[1]
    assert 3 <= step < 60 and not (killed / "models" / f"model_{guid}.json").exists()
    again = tmp_path / "again"
    shutil.copytree(killed, again)
    done = launch(mpiexec, 2, ["train", "--resume", guid, "--root", str(killed)])
    assert done.returncode == 0, done.stderr
    plans.resume(guid, root=again, log=lambda _line: None)  # the same checkpoint on one process
    backend.use("cpu", d_type="fp32")
    expected = weights(tmp_path / "one", one)
    assert_same(weights(killed, guid), expected, 1e-10)
    assert_same(weights(again, guid), expected, 1e-10)


STALL = """
import os, signal, sys, numpy
from baby import distributed
from baby.__main__ import one_line
comm = distributed.world()
values = numpy.full(4, float(comm.rank))
comm.all_reduce_mean(values)  # under BABY_COMM_TIMEOUT=60: ranks start seconds apart on a busy machine
assert values.tolist() == [0.5] * 4
comm.timeout = float(sys.argv[2])  # both ranks are up: from here a silent rank is the only reason to wait
if comm.rank == 1:
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
try:
    comm.all_reduce_mean(values)
except distributed.CommError as err:
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    distributed.abort_job(2)
"""


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_a_dead_or_stalled_rank_stops_the_others(tmp_path: Path, how: str) -> None:
    mpiexec = needs_mpi()
    script = tmp_path / "stall.py"
    script.write_text(STALL, encoding="utf-8")
    start = time.monotonic()
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), how, "2"],
                          env=env(BABY_COMM_TIMEOUT="60"), capture_output=True, text=True, timeout=90)
    assert done.returncode != 0 and time.monotonic() - start < 60, done.stderr
    if how == "SIGSTOP":  # the launcher sees nothing wrong: the deadline on the collective stops rank 0
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors == ["error: rank 0 of 2: no answer from the other ranks in all-reduce within 2 s "
                          "(a rank died or stalled; BABY_COMM_TIMEOUT sets the limit)"]


# ---- one GPU over NCCL ------------------------------------------------------------------------------

@pytest.mark.gpu
def test_one_rank_over_nccl_changes_nothing() -> None:
    from baby.config import Config
    from baby.nn.model import GPT
    from baby.optim import AdamW
    from baby.train import train_step

    backend.use("gpu", d_type="fp64")
    try:
        comm = distributed.NCCLCommunicator()
        values = backend.xp.arange(5, dtype=backend.xp.float64)
        comm.all_reduce_mean(values)
        assert numpy.array_equal(backend.to_host(values), numpy.arange(5.0))
        cfg = Config(TINY_DP)
        results = []
        for use in (None, comm):
            model = GPT(cfg, 50)
            opt = AdamW(model.parameters(), cfg.r_learn)
            data = backend.asarray(numpy.random.default_rng(0).integers(0, 50, (4, 17)))
            for step in range(3):
                train_step(model, opt, [(data[:, :-1], data[:, 1:], backend.rng(1, step))], 1e-3, 1.0, comm=use)
            results.append(backend.to_host(opt.flat))
        assert numpy.array_equal(results[0], results[1])
    finally:
        backend.use("cpu", d_type="fp32")
