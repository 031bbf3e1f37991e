"""The backend's thread control: threadpoolctl limits whichever BLAS NumPy was built with."""
from __future__ import annotations

import pytest

from baby import backend


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_threads_limit_numpys_blas(threads: int) -> None:
    pytest.importorskip("threadpoolctl")
    before = backend.blas_threads()[0]["num_threads"]
    try:
        backend.set_cpu_threads(threads)
        blas = backend.blas_threads()
        assert blas and all(lib["num_threads"] == threads for lib in blas)
    finally:
        backend.set_cpu_threads(before)
