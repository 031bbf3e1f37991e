"""Shared helpers of the benchmarks: machine description, sgemm peak, result files."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend
from baby.runs import write_json


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "device": backend.device_name, "platform": platform.platform(),
            "date": _dt.date.today().isoformat(), **backend.versions()}


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
