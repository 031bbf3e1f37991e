"""Shared helpers of the benchmarks: machine description, sgemm peak, result files."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend, pool
from baby.runs import write_json


def machine() -> dict[str, Any]:
    """What a number was measured on: CPU model and ISA, cores, L2 cache, BLAS library and kernel, versions."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first core's lines
    except OSError:
        pass
    cpu = info.get("model name") or platform.processor()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"cpu": cpu, "isa": isa(flags), "cores": os.cpu_count(), "l2_cache_kib": pool.L2_BYTES >> 10,
            "blas": blas(), "device": backend.device_name, "platform": platform.platform(),
            "date": _dt.date.today().isoformat(), **backend.versions(), **torch_build()}


def machine_line(m: dict[str, Any]) -> str:
    """The machine of a table in one line: CPU, ISA, cores, BLAS on both sides, date."""
    parts = [m["cpu"]] + ([m["isa"]] if m.get("isa") else []) + [f"{m['cores']} cores"]
    if m.get("blas"):
        parts.append(f"NumPy {m.get('numpy', '')} on {m['blas']}")
    if m.get("torch"):
        parts.append(f"PyTorch {m['torch']} on {m.get('torch_blas', '?')}")
    return ", ".join(parts) + f" ({m['date']})"


def isa(flags: set[str]) -> str:
    """The widest vector instructions among the CPU's flags: AVX-512 (with its extensions), AVX2, ..."""
    if "avx512f" in flags:
        extensions = [name for name in ("bw", "vl", "vnni", "bf16", "fp16") if f"avx512{name}" in flags
                      or f"avx512_{name}" in flags]
        return "AVX-512" + (f" ({', '.join(extensions)})" if extensions else "")
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"), ("asimd", "NEON"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return "unknown"


def blas() -> str:
    """NumPy's BLAS as threadpoolctl reports it: library, version and the kernel it chose for this CPU."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - a runtime dependency of the CPU path
    except ImportError:
        return "unknown"
    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in str(info.get("filepath", "")):
            name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(info.get("internal_api"), "BLAS")
            kernel = info.get("architecture")
            return f"{name} {info.get('version')}" + (f" ({kernel} kernels)" if kernel else "")
    return "unknown"


def torch_build() -> dict[str, str]:
    """PyTorch's version and the BLAS it was built with (its side of a comparison), when importable."""
    try:
        import torch  # noqa: PLC0415 - optional, benchmark only
    except ImportError:
        return {}
    text = torch.__config__.show()
    library = "MKL" if "Math Kernel Library" in text else "OpenBLAS" if "OpenBLAS" in text else "unknown"
    return {"torch": torch.__version__.split("+")[0], "torch_blas": library, "torch_cpu_capability":
            torch.backends.cpu.get_cpu_capability()}


def sgemm_peak(n: int = 1024, seconds: float = 1.0) -> float:
    """Best achieved GFLOP/s of an n x n x n float32 matmul on the current backend and threads."""
    xp = backend.xp
    a = xp.asarray(numpy.random.default_rng(0).standard_normal((n, n)), dtype=xp.float32)
    b = a.T.copy()
    out = xp.empty_like(a)
    xp.matmul(a, b, out=out)
    backend.sync()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        xp.matmul(a, b, out=out)
        backend.sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def save(name: str, data: dict[str, Any], table: str, out_dir: str | Path = "outputs") -> Path:
    """outputs/bench_<name>.json and .md (the markdown table the README quotes)."""
    out = Path(out_dir)
    path = out / f"bench_{name}.json"
    write_json(path, data)
    (out / f"bench_{name}.md").write_text(table + "\n", encoding="utf-8")
    return path
