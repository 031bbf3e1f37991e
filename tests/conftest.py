"""Shared fixtures: backends to parametrize over, float64 mode, tiny configs, the shared data dir."""
from __future__ import annotations

from pathlib import Path

import numpy
import pytest

from baby import backend

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
