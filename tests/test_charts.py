"""Charts of every run, the plot/inspect/gradcheck commands, and the live gradient check."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from baby import charts, plans
from baby.__main__ import main
from baby.nn import gradcheck, variants
from baby.nn.mixers.aft import AttentionFree
from baby.runs import RunStore
from tests.conftest import ROOT

TINY_RUN = {"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "n_steps": 6, "batch_size": 4,
            "n_sample_tokens": 5, "c_attention": "mha+induction"}


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text((ROOT / "inputs" / "shakespeare.txt").read_text()[:4000])
    return path


def train(root: Path, text: Path, lines: list[str] | None = None) -> str:
    return plans.train(TINY_RUN, [str(text)], root=root, log=(lines.append if lines is not None else lambda s: None))


def test_every_run_writes_its_chart_and_delete_removes_it(tmp_path: Path, text: Path) -> None:
    pytest.importorskip("matplotlib")
    guid = train(tmp_path, text)
    store = RunStore(tmp_path)
    chart = store.path("chart", guid)
    assert chart.name == f"chart_{guid}.png" and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart in store.files(guid)
    assert not list(chart.parent.glob(".*.tmp"))  # written atomically, no temp left
    plans.delete(guid, root=tmp_path, log=lambda s: None)
    assert not chart.exists()


def test_without_matplotlib_one_notice_and_training_unchanged(tmp_path: Path, text: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "figure_class", lambda: None)
    lines: list[str] = []
    guid = train(tmp_path / "a", text, lines)
    assert [line for line in lines if "matplotlib" in line] == [f"notice: {charts.NO_MATPLOTLIB}"]
    assert not RunStore(tmp_path / "a").path("chart", guid).exists()
    monkeypatch.undo()
    other = train(tmp_path / "b", text)
    loss = [RunStore(tmp_path / r).read("report", g)["final_val_loss"] for r, g in (("a", guid), ("b", other))]
    assert loss[0] == loss[1]
    monkeypatch.setattr(charts, "figure_class", lambda: None)
    assert main(["plot", "--root", str(tmp_path / "a"), "--guid", guid, "--out", str(tmp_path / "x.png")]) == 2


def test_plot_inspect_and_their_bad_input(tmp_path: Path, text: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    guid = train(tmp_path, text)
    root = ["--root", str(tmp_path)]
    assert main(["plot", *root, "--guid", guid, "--guid", guid, "--out", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").exists()
    out = tmp_path / "views"
    assert main(["inspect", *root, "--guid", guid, "--prompt", "the the", "--out", str(out), "--sample", "3"]) == 0
    data = json.loads((out / "views.json").read_text())
    assert [e["kind"] for e in data["layers"]] == ["mha", "induction"]
    assert len(data["sampling"]["tokens"]) <= 3 and (out / "attention_block0.mha.png").exists()
    capsys.readouterr()
    missing = "0" * 32
    for argv in (["plot", *root, "--guid", missing, "--out", str(tmp_path / "y.png")],
                 ["inspect", *root, "--guid", missing, "--out", str(out)],
                 ["inspect", *root, "--guid", "not-a-guid", "--out", str(out)],
                 ["gradcheck", "no-such-module"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_gradcheck_by_name_passes_and_catches_a_flipped_sign(capsys: pytest.CaptureFixture) -> None:
    errors = gradcheck.check_by_name("gla")
    assert "input" in errors and all(e <= gradcheck.LEARNER_TOLERANCE for e in errors.values())
    assert "ok" in capsys.readouterr().out

    class Broken(AttentionFree):
        def key_weights_backward(self, dw):  # type: ignore[no-untyped-def]
            capped, w, _ = self.weight_cache
            return -dw * w * (1.0 - capped * capped)  # the sign flipped

    bad = gradcheck.check_by_name(Broken, log=None)
    assert bad["input"] > 1e-2 and bad["kv.weight"] > 1e-2
    assert main(["gradcheck", "rms", "swh"]) == 0


def test_the_learner_config_agrees_with_the_real_one() -> None:
    from baby.config import Config

    mine, real = gradcheck.learner_config(), Config(gradcheck.LEARNER_CONFIG)
    keys = {s.key for kind in ("mixer", "network") for e in variants.entries(kind) for s in e.settings}
    for key in keys | {"head_width", "hidden", "n_emb", "n_heads", "n_ctx", "c_bias", "c_position", "r_temp"}:
        assert getattr(mine, key) == getattr(real, key), key
