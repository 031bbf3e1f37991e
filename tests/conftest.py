"""Shared fixtures: backends to parametrize over, float64 mode, tiny configs, the shared data dir."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy
import pytest

from baby import backend, ops
from baby.nn.context import Context
from baby.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
BACKENDS = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs CuPy and a GPU (skipped cleanly without)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if backend.gpu_available():
        return
    skip = pytest.mark.skip(reason="CuPy with a usable GPU is not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def float32_cpu_after_each_test():
    """plans.train switches the backend to its config's device and dtype and leaves it there (the CLI
    runs one plan per process); without this a test would inherit fp16 from the one before it."""
    yield
    if backend.device_name != "cpu" or backend.dtype is not numpy.float32:
        backend.use("cpu", d_type="fp32")
    ops.use("fast")  # a run with c_ops=reference leaves the references on, as it leaves its dtype


@pytest.fixture(params=BACKENDS)
def device(request: pytest.FixtureRequest):
    """Run the test on each backend (CPU always; GPU when CuPy and a GPU exist), in float32."""
    backend.use(request.param, d_type="fp32")
    yield request.param
    backend.use("cpu", d_type="fp32")


@pytest.fixture(params=BACKENDS)
def device64(request: pytest.FixtureRequest):
    """Each backend in float64, for finite-difference checks."""
    backend.use(request.param, d_type="fp64")
    yield request.param
    backend.use("cpu", d_type="fp32")


TINY = {"n_ctx": 12, "n_emb": 16, "n_heads": 4, "n_layers": 2, "batch_size": 4, "seed": 3}
# a run that trains in about a second: the plans' end-to-end tests use it
TINY_RUN = {"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "batch_size": 4, "n_steps": 12,
            "n_eval_every": 4, "n_eval_batches": 2, "n_sample_tokens": 10, "r_dropout": 0.1, "seed": 5}


def quiet(_: str) -> None:
    """A log that says nothing."""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The first 6,000 characters of the default corpus, as a file of their own."""
    text = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:6000]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root: what "nothing was changed" is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def weights(root: Path, guid: str, suffix: str = "") -> dict:
    """The encoded tensors of a run's model file."""
    return RunStore(root).read("model", guid, suffix)["tensors"]


def context(ids: numpy.ndarray, valid: numpy.ndarray | None = None) -> Context:
    """The context of a forward over ``ids`` (B, T) from position 0, with an optional valid mask."""
    b, t = ids.shape
    return Context(ids=backend.asarray(ids), positions=backend.asarray(numpy.broadcast_to(numpy.arange(t), (b, t))),
                   valid=None if valid is None else backend.asarray(valid))
