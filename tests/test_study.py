"""The study runner on a tiny study: validation of every cell first, one corpus, parallel cells,
evaluation at learning-curve checkpoints, skipping finished cells, resuming interrupted ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from baby import plans, study
from baby.config import ConfigError
from baby.runs import RunStore
from baby.study_report import checkpoint_curve, loss_curve
from baby.train import Interrupted
from tests.conftest import ROOT, quiet

BASE = {"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "batch_size": 4, "n_steps": 8, "n_eval_every": 4,
        "n_eval_batches": 2, "n_sample_tokens": 4, "c_tokenizer": "bpe", "n_vocab": 300, "c_device_cpu_cores": 1}


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    text = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")
    data = tmp_path / "text"
    data.mkdir()
    (data / "a.txt").write_text(text[:8000], encoding="utf-8")
    (data / "b.txt").write_text(text[8000:14000], encoding="utf-8")
    blimp = tmp_path / "blimp"
    blimp.mkdir()
    (blimp / "p1.jsonl").write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, "UID": "p1",
                                                         "linguistics_term": "binding"}) + "\n"
                                            for g, b in [("The king is here.", "The king are here."),
                                                         ("I love thee.", "I loves thee.")]), encoding="utf-8")
    zorro = tmp_path / "zorro"
    zorro.mkdir()
    (zorro / "agreement-x.txt").write_text("the king is .\nthe king are .\nwe go .\nwe goes .", encoding="utf-8")
    spec = {"name": "tiny", "about": "a test", "inputs": [str(data)], "holdout": 0.1, "base": BASE,
            "checkpoints": "100", "target_params": 0, "tolerance": 0.5,
            "eval": {"blimp": str(blimp), "zorro": str(zorro), "checkpoint_limit": 1, "final_limit": 2},
            "cells": [{"name": "gpt", "settings": {"c_attention": "mha"}, "seeds": [1, 2]},
                      {"name": "ci", "settings": {"c_attention": "conv+induction", "c_network": "swi",
                                                  "n_conv_groups": 4}}]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def test_a_typo_in_the_last_cell_fails_before_anything_is_written(tiny_study: Path, tmp_path: Path) -> None:
    spec = json.loads(tiny_study.read_text())
    spec["cells"].append({"name": "bad", "settings": {"n_embd": 32}})
    tiny_study.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="cell 3 .'bad'.*n_embd"):
        study.run(tiny_study, root=tmp_path / "root", log=quiet)
    assert not (tmp_path / "root").exists()


def test_an_unknown_only_cell_is_named_before_anything_is_written(tiny_study: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--only gtp: no such cell.*cells are ci, gpt"):
        study.run(tiny_study, root=tmp_path / "root", log=quiet, only=["gpt_s1", "gtp"])
    assert not (tmp_path / "root").exists()


def test_match_brings_every_cell_within_the_parameter_tolerance(tiny_study: Path, tmp_path: Path) -> None:
    spec = json.loads(tiny_study.read_text())
    target = study.count_params({**BASE, "c_attention": "mha"}, 300)
    spec.update(target_params=target, tolerance=0.03)
    spec["cells"][1]["match"] = "r_hidden"
    tiny_study.write_text(json.dumps(spec))
    loaded = study.load_study(tiny_study, tmp_path)
    assert all(abs(c.params - target) <= 0.03 * target for c in loaded.cells)
    assert loaded.cells[-1].settings["r_hidden"] != 4.0
    spec["cells"][1].pop("match")
    tiny_study.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="ci.*away from target_params"):
        study.load_study(tiny_study, tmp_path)


def test_a_study_trains_evaluates_summarises_and_skips_what_is_done(tiny_study: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    lines: list[str] = []
    study.run(tiny_study, root=root, parallel=2, log=lines.append, only=["gpt"])
    assert any("0 done, 2 to run, 2 at a time (1 left for later: not in --only)" in line for line in lines)
    assert [r["state"] for r in study.status(tiny_study, root)] == ["done", "done", "not started"]
    lines.clear()
    out = study.run(tiny_study, root=root, parallel=2, log=lines.append)
    assert any("2 done, 1 to run, 2 at a time" in line for line in lines)
    data = json.loads(out.read_text())
    assert [c["status"] for c in data["cells"]] == ["done"] * 3
    for record in data["cells"]:
        assert set(record["results"]) == {"100", "final"}
        final, early = record["results"]["final"], record["results"]["100"]
        assert final["ppl_token"] > 1 and 0 <= final["blimp"] <= 1 and 0 <= final["zorro"] <= 1
        assert early["limit"] == 1 and early["words"] == 100 and final["limit"] == 2
    ci = [c for c in data["cells"] if c["cell"] == "ci"][0]
    assert 0 < ci["induction_match_share"] < 1
    assert all(c.get("induction_match_share") is None for c in data["cells"] if c["cell"] == "gpt")
    table = out.with_suffix(".md").read_text()
    assert "the end scores the first 2 pairs too" in table  # eval.final_limit: said, not hidden
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gpt | 2/2 |" in table and "| ci | 1/1 |" in table
    corpus = json.loads((root / "outputs" / "study_tiny" / "corpus.json").read_text())
    guids = [c["guid"] for c in data["cells"]]
    for guid in guids:  # every cell trained on the one tokenized corpus
        assert RunStore(root).read("config", guid)["runtime"]["tokenizer_sha256"] == corpus["tokenizer_sha256"]
    lines.clear()
    study.run(tiny_study, root=root, parallel=2, log=lines.append)
    assert any("3 done, 0 to run" in line for line in lines)
    assert [r["state"] for r in study.status(tiny_study, root)] == ["done"] * 3


def test_an_interrupted_cell_resumes(tiny_study: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    loaded = study.load_study(tiny_study, root)
    cell = loaded.cells[0]
    corpus = study.corpus_of(loaded, quiet)
    guid = "0123456789abcdef0123456789abcdef"
    path = loaded.cell_path(cell)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"cell": cell.name, "seed": cell.seed, "settings": cell.settings, "params": cell.params,
                                "results": {}, "guid": guid, "status": "training"}))
    with pytest.raises(Interrupted):
        plans.train(cell.settings, root=root, corpus=corpus, guid=guid, log=quiet, stop_at=4)
    lines: list[str] = []
    record = study.run_cell(loaded, cell, log=lines.append)
    assert record["guid"] == guid and record["status"] == "done" and record["training"]["steps"] == 8
    assert any(f"resuming run {guid}" in line for line in lines)


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.update(tolerance="abc"), ["tolerance"]),
    (lambda s: s["cells"][0].update(settings=[1]), ["cell 1", "settings"]),
    (lambda s: s["cells"][0].update(seeds=[-1]), ["cell 1", "seed"]),
    (lambda s: s["eval"].update(checkpoint_limit="lots"), ["checkpoint_limit"]),
    (lambda s: s["eval"].update(final_limit=-1), ["final_limit"]),
    (lambda s: s["cells"][1]["settings"].update(c_tokenizer="char"), ["c_tokenizer", "n_vocab"]),
])
def test_every_mistake_in_a_study_file_is_named_before_training(tiny_study: Path, tmp_path: Path, edit, words) -> None:
    spec = json.loads(tiny_study.read_text())
    edit(spec)
    tiny_study.write_text(json.dumps(spec))
    with pytest.raises(ConfigError) as err:
        study.load_study(tiny_study, tmp_path / "root")
    for word in words:
        assert word in str(err.value)
    assert not (tmp_path / "root").exists()


def test_the_plotted_curves_are_the_mean_over_seeds() -> None:
    seed_a = {"curves": {"step": [10, 20, 30], "val_loss": [4.0, 3.0, None]}, "words_per_step": 5,
              "results": {"1M": {"words": 1000, "blimp": 0.5}, "final": {"words": 3000, "blimp": 0.6}}}
    seed_b = {"curves": {"step": [10, 20, 30], "val_loss": [5.0, 2.0, 1.0]}, "words_per_step": 5,
              "results": {"1M": {"words": 1000, "blimp": 0.7}}}  # not finished yet
    # step 30 has no loss for seed a: only the steps every seed logged are averaged
    assert loss_curve([seed_a, seed_b]) == [(50, 4.5), (100, 2.5)]
    expected = [(1000, pytest.approx(60.0)), (3000, pytest.approx(60.0))]
    assert checkpoint_curve([seed_a, seed_b], ["1M", "final"], "blimp") == expected
    assert checkpoint_curve([seed_a, seed_b], ["1M"], "zorro") == []


def test_a_study_runs_a_preset_under_its_base(tiny_study: Path, tmp_path: Path) -> None:
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"r_dropout": 0.1, "n_layers": 2, "r_learn": 0.01}))
    spec = json.loads(tiny_study.read_text())
    spec.update(config=str(preset), base={**BASE, "n_layers": 1})
    tiny_study.write_text(json.dumps(spec))
    loaded = study.load_study(tiny_study, tmp_path / "root")
    settings = loaded.cells[0].settings
    assert (settings["r_dropout"], settings["r_learn"], settings["n_layers"]) == (0.1, 0.01, 1)  # base wins
    assert "c_device" not in settings  # only what the preset sets, not every default


@pytest.mark.parametrize("preset_text, words", [(None, ["config", "no such settings file"]),
                                                ('{"n_embd": 32}', ["config", "n_embd"])])
def test_a_missing_or_wrong_preset_is_named(tiny_study: Path, tmp_path: Path, preset_text, words) -> None:
    preset = tmp_path / "preset.json"
    if preset_text is not None:
        preset.write_text(preset_text)
    spec = json.loads(tiny_study.read_text())
    spec["config"] = str(preset)
    tiny_study.write_text(json.dumps(spec))
    with pytest.raises(ConfigError) as err:
        study.load_study(tiny_study, tmp_path / "root")
    assert all(word in str(err.value) for word in words)


def test_the_plot_title_says_how_many_pairs_the_checkpoints_and_the_end_score() -> None:
    from baby.study_report import plot_title

    cell = {"results": {"1M": {"limit": 100}, "final": {"limit": 0}}}
    assert plot_title({"name": "s", "cells": [cell]}).endswith("first 100 pairs of each paradigm, the end every pair")
    cell["results"]["final"]["limit"] = 100
    assert plot_title({"name": "s", "cells": [cell]}).endswith("paradigm, the end the first 100")
    assert plot_title({"name": "s", "cells": [{"results": {"final": {"limit": 0}}}]}) == "study s: mean over seeds"
