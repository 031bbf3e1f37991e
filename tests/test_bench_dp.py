"""bench dp times the three layouts of the same cores (MPI ranks, replicas, one model) on one config."""
from __future__ import annotations

import json
import shutil

import pytest

from baby.bench import dp
from tests.conftest import ROOT

pytest.importorskip("mpi4py")


@pytest.mark.skipif(not (shutil.which("mpiexec") or shutil.which("mpirun")), reason="needs an MPI launcher")
def test_bench_dp_times_every_layout_and_names_the_fastest(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert dp.main(["--config", "configs/tiny.json", "--steps", "1", "--warmup", "0", "--repeats", "1",
                    "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_dp.json").read_text())["results"][0]
    speeds = {name: result[name]["tokens_per_second"] for name in dp.LAYOUTS}
    assert all(speed > 0 for speed in speeds.values())
    assert result["fastest"] == max(speeds, key=speeds.get)
    assert (result["ranks"]["ranks"], result["replicas"]["ranks"], result["one model"]["ranks"]) == (2, 1, 1)
    assert "| configs/tiny.json |" in (tmp_path / "bench_dp.md").read_text()
