"""bench mqar takes any c_attention value, composed ones included, and marks unknown mixers."""
from __future__ import annotations

import json

from baby.bench import mqar


def test_mqar_runs_a_composed_mixer_and_marks_an_unknown_one(tmp_path) -> None:
    out = tmp_path / "mqar.json"
    assert mqar.main(["--mixers", "conv+induction,nosuch", "--cells", "16:2", "--widths", "16", "--vocab", "32",
                      "--steps", "2", "--test", "8", "--eval-every", "1", "--budget", "30",
                      "--tokens-per-batch", "64", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["mixer"] for r in report["results"]] == ["conv+induction"] and report["missing"] == ["nosuch"]
    assert "| nosuch | not registered |" in out.with_suffix(".md").read_text()
