"""The prepared GPU check runs end to end as a dry run on the CPU (tiny shapes, both sides)."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_the_gpu_check_script_dry_runs_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert data["dry_run"] and set(data["precisions"]) == {"fp32", "tf32", "fp16"}
    for row in data["precisions"].values():
        assert row["ours_tokens_per_second"] > 0 and row["torch_tokens_per_second"] > 0
    for side in ("ours", "torch"):
        assert math.isfinite(data["training"][side]["val_loss"])
    assert "| fp16 |" in (tmp_path / "bench_gpu.md").read_text()
