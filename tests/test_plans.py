"""Every plan end to end on a tiny config in a temporary root, through the Python API and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from baby import config, plans
from baby.runs import RunError, RunStore
from baby.train import Interrupted
from tests.conftest import ROOT, TINY_RUN, digest, quiet, weights


def cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baby", *args, "--root", str(root)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_train_writes_the_five_files_and_a_full_report(tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "runs"
    lines: list[str] = []
    guid = plans.train(TINY_RUN, [str(corpus)], root=root, log=lines.append)
    assert lines[-1] == guid
    assert any("tok/s" in line and "ETA" in line for line in lines)
    store = RunStore(root)
    for kind in ("config", "tokenizer", "model", "report", "completion"):
        assert store.path(kind, guid).exists(), kind
    assert store.read("checkpoint", guid)["trainer"]["step"] == 12  # kept: the run can be extended
    report = store.read("report", guid)
    curves = report["curves"]
    assert curves["step"][-1] == 12 and len(curves["train_loss"]) == len(curves["step"])
    assert all(numpy.isfinite(curves["train_loss"])) and numpy.isfinite(report["final_val_loss"])
    assert report["n_params"] > 0 and report["flops_per_token"]["training"] > 0
    assert report["tokens_per_second"] > 0
    config = store.read("config", guid)
    assert config["settings"]["n_emb"] == 16 and config["runtime"]["n_params"] == report["n_params"]
    assert isinstance(store.read("completion", guid)["completion"], str)


def test_cli_train_prints_the_guid_last(tmp_path: Path, corpus: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    out = cli("train", "--config", str(config), "--input", str(corpus), "--set", "n_steps=4", root=tmp_path)
    assert out.returncode == 0, out.stderr
    guid = out.stdout.strip().splitlines()[-1]
    assert RunStore(tmp_path).read("report", guid)["steps"] == 4


def test_resume_ends_where_an_uninterrupted_run_would(tmp_path: Path, corpus: Path) -> None:
    whole = plans.train(TINY_RUN, [str(corpus)], root=tmp_path / "a", log=quiet)
    with pytest.raises(Interrupted):
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path / "b", log=quiet, stop_at=8)
    store = RunStore(tmp_path / "b")
    (guid,) = store.guids()
    assert store.path("checkpoint", guid).exists() and not store.path("model", guid).exists()
    out = cli("train", "--resume", guid, root=tmp_path / "b")
    assert out.returncode == 0, out.stderr
    assert weights(tmp_path / "b", guid) == weights(tmp_path / "a", whole)
    a, b = RunStore(tmp_path / "a").read("report", whole), store.read("report", guid)
    assert a["curves"]["train_loss"] == b["curves"]["train_loss"]
    assert a["curves"]["val_loss"] == b["curves"]["val_loss"]


def test_a_run_written_when_c_sequence_meant_window_offsets_resumes_as_it_was_trained(tmp_path: Path,
                                                                                      corpus: Path) -> None:
    settings = {**TINY_RUN, "c_window_offset": "random"}
    whole = plans.train(settings, [str(corpus)], root=tmp_path / "a", log=quiet)
    with pytest.raises(Interrupted):
        plans.train(settings, [str(corpus)], root=tmp_path / "b", log=quiet, stop_at=8)
    store = RunStore(tmp_path / "b")
    (guid,) = store.guids()
    record = store.read("config", guid)  # as the version before the change wrote it
    old = {k: v for k, v in record["settings"].items() if k != "c_window_offset"}
    store.write("config", guid, {**record, "settings": {**old, "c_sequence": "post"}})
    lines: list[str] = []
    plans.resume(guid, root=tmp_path / "b", log=lines.append)
    assert any("read as c_window_offset='random' with pre-norm blocks" in line for line in lines)
    assert weights(tmp_path / "b", guid) == weights(tmp_path / "a", whole)


def test_finetune_grows_the_vocabulary_and_writes_finetuned_files(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    new_text = tmp_path / "new.txt"
    new_text.write_text("Zebras quietly jump over {lazy} dogs ~ 12345 times!\n" * 30, encoding="utf-8")
    before = RunStore(tmp_path).read("tokenizer", guid)
    plans.finetune(guid, [str(new_text)], root=tmp_path, overrides={"n_steps": 3}, log=quiet)
    store = RunStore(tmp_path)
    for kind in ("config", "tokenizer", "model", "report", "completion"):
        assert store.path(kind, guid, "_finetuned").exists(), kind
    after = store.read("tokenizer", guid, "_finetuned")
    assert len(after["pieces"]) > len(before["pieces"]) and after["pieces"][:len(before["pieces"])] == before["pieces"]
    assert store.read("tokenizer", guid) == before  # the original run is untouched
    tok = weights(tmp_path, guid, "_finetuned")["tok.weight"]["shape"]
    assert tok[0] == len(after["pieces"])
    record = plans.inference(guid, "Zebras", 5, temperature=0, root=tmp_path, finetuned=True, log=quiet)
    assert record["finetuned"] is True


def test_inference_writes_a_timestamped_completion_and_handles_long_prompts(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    lines: list[str] = []
    long_prompt = corpus.read_text()[:100]  # far longer than n_ctx = 16
    a = plans.inference(guid, long_prompt, 40, temperature=0, root=tmp_path, log=lines.append)
    b = plans.inference(guid, long_prompt, 40, temperature=0, use_cache=False, root=tmp_path, log=quiet)
    assert a["completion"] == b["completion"] and a["kv_cache"] and not b["kv_cache"]
    assert any("cut" in line for line in lines)
    assert a["path"] != b["path"]
    names = [p.name for p in (tmp_path / "outputs").glob(f"completion_{guid}_*.json")]
    assert len(names) == 2 and all(len(n.split("_")[2].split(".")[0]) == 14 for n in names)
    out = cli("inference", "--guid", guid, "--prompt", "KING", "--max-tokens", "5", "--top-k", "3", root=tmp_path)
    assert out.returncode == 0, out.stderr


def test_delete_removes_exactly_that_runs_files(tmp_path: Path, corpus: Path) -> None:
    keep = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    drop = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    plans.inference(drop, "A", 3, root=tmp_path, log=quiet)
    (tmp_path / "outputs" / "notes.json").write_text("{}")
    kept_before = digest(tmp_path)
    out = cli("delete", "--guid", drop, root=tmp_path)
    assert out.returncode == 0, out.stderr
    remaining = digest(tmp_path)
    assert not any(drop in name for name in remaining)
    assert remaining == {k: v for k, v in kept_before.items() if drop not in k}
    assert any(keep in name for name in remaining)
    assert cli("delete", "--guid", drop, root=tmp_path).returncode == 2


def test_info_reports_sizes_flops_and_training(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    out = cli("info", "--guid", guid, "--json", root=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    report = RunStore(tmp_path).read("report", guid)
    assert data["n_params"] == report["n_params"]
    assert data["flops_per_token"]["training"] == 3 * data["flops_per_token"]["inference"]
    assert data["training"]["final_val_loss"] == report["final_val_loss"]
    text = cli("info", "--guid", guid, root=tmp_path).stdout
    assert "parameters" in text and "FLOPs per token" in text


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "CONFIG", "--set", "n_emb=-3"], "n_emb"),
    (["train", "--config", "CONFIG", "--set", "c_attention=xyz"], "c_attention"),
    (["train", "--config", "CONFIG", "--set", "colour=blue"], "colour"),
    (["train", "--config", "CONFIG", "--set", "r_learn=fast"], "r_learn"),
    (["train", "--config", "CONFIG", "--set", "n_heads=3"], "n_heads"),
    (["train", "--config", "missing.json"], "missing.json"),
    (["train", "--config", "CONFIG", "--input", "nowhere.txt"], "nowhere.txt"),
    (["train", "--resume", "GUID"], "checkpoint"),
    (["inference", "--guid", "../../etc/passwd"], "GUID"),
    (["inference", "--guid", "0123456789abcdef0123456789abcdef"], "no run"),
    (["info", "--guid", "ABC"], "GUID"),
    (["delete", "--guid", "*"], "GUID"),
    (["inference", "--guid", "GUID", "--top-p", "0"], "top-p"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_files_alone(tmp_path: Path, corpus: Path, args: list[str],
                                                                 message: str) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    before = digest(tmp_path)
    args = [str(config) if a == "CONFIG" else guid if a == "GUID" else a for a in args]
    out = cli(*args, "--input", str(corpus), root=tmp_path) if args[0] == "train" and "--input" not in args \
        and "--resume" not in args else cli(*args, root=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr
    assert digest(tmp_path) == before


def test_a_corrupt_model_file_is_reported_not_crashed_on(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    path = RunStore(tmp_path).path("model", guid)
    path.write_text(path.read_text()[:1000])
    before = digest(tmp_path)
    out = cli("inference", "--guid", guid, root=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and path.name in out.stderr
    assert digest(tmp_path) == before
    with pytest.raises(RunError):
        plans.inference(guid, root=tmp_path, log=quiet)


def test_frozen_base_finetune_of_lor_changes_only_the_low_rank_weights(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train({**TINY_RUN, "c_network": "lor", "n_rank": 2}, [str(corpus)], root=tmp_path, log=quiet)
    plans.finetune(guid, [str(corpus)], root=tmp_path, overrides={"n_steps": 3, "c_freeze_base": True}, log=quiet)
    before, after = weights(tmp_path, guid), weights(tmp_path, guid, "_finetuned")
    low_rank = [name for name in before if "lora_" in name]
    assert low_rank and all(before[n] != after[n] for n in low_rank)
    assert all(before[n] == after[n] for n in before if n not in low_rank)


def test_freezing_without_a_low_rank_network_is_refused(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    out = cli("finetune", "--guid", guid, "--input", str(corpus), "--set", "c_freeze_base=true", root=tmp_path)
    assert out.returncode == 2 and "c_freeze_base" in out.stderr


def test_learning_curve_checkpoints_by_words_seen(tmp_path: Path, corpus: Path) -> None:
    # 12 steps x 64 tokens; the corpus has ~0.18 words per char token -> ~140 words seen in all
    guid = plans.train({**TINY_RUN, "s_checkpoint_words": "50,0.1K"}, [str(corpus)], root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    assert store.path("model", guid, "_chck_50").exists() and store.path("model", guid, "_chck_0.1K").exists()
    assert store.read("model", guid, "_chck_50") != store.read("model", guid, "_chck_0.1K")
    assert plans.info(guid, root=tmp_path)["checkpoints"] == ["0.1K", "50"]
    record = plans.inference(guid, "A", 3, root=tmp_path, checkpoint="50", log=quiet)
    assert record["checkpoint"] == "50"
    assert store.read("report", guid)["words_seen"] > 100
    plans.delete(guid, root=tmp_path, log=quiet)
    assert not list(tmp_path.rglob(f"*{guid}*"))


def test_runs_lists_every_run_with_state_results_finetuned_and_checkpoints(tmp_path: Path, corpus: Path) -> None:
    done = plans.train({**TINY_RUN, "s_checkpoint_words": "50"}, [str(corpus)], root=tmp_path, log=quiet)
    plans.finetune(done, [str(corpus)], root=tmp_path, overrides={"n_steps": 2}, log=quiet)
    RunStore(tmp_path).write("eval", done, {"guid": done, "results": {"blimp:blimp:final": {"accuracy": 0.625}}})
    with pytest.raises(Interrupted):
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet, stop_at=4)
    broken = "0123456789abcdef0123456789abcdef"  # a bare-hex run whose config is damaged
    (tmp_path / "configs" / f"config_{broken}.json").write_text("{")
    rows = {r["guid"]: r for r in plans.runs_plan(root=tmp_path, log=quiet)}
    assert len(rows) == 3
    row = rows[done]
    assert row["state"] == "finished" and row["steps"] == row["total_steps"] == 12
    assert row["results"] == {"blimp:blimp:final": 0.625} and row["checkpoints"] == ["50"]
    assert row["finetuned"]["state"] == "finished" and row["model"] == "mha + mlp"
    assert isinstance(row["best_val_loss"], float) and row["n_params"] > 0
    interrupted = next(r for g, r in rows.items() if g not in (done, broken))
    assert interrupted["state"].startswith("interrupted") and interrupted["steps"] == 4
    assert rows[broken]["state"].startswith("damaged")
    out = cli("runs", root=tmp_path)
    assert out.returncode == 0 and done in out.stdout and "finetuned" in out.stdout and "blimp:blimp:final 0.625" in out.stdout
    assert json.loads(cli("runs", "--json", root=tmp_path).stdout)[0]["guid"]


def test_inference_streams_the_text_and_takes_several_samples(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    pieces: list[str] = []
    record = plans.inference(guid, "The", 8, root=tmp_path, seed=1, log=quiet, stream=pieces.append)
    assert len(pieces) > 2 and "".join(pieces) == "The" + record["completion"] + "\n"
    plain = plans.inference(guid, "The", 8, root=tmp_path, seed=1, log=quiet)
    assert plain["tokens"] == record["tokens"]  # streaming changes nothing of the record
    many = plans.inference(guid, "The", 8, root=tmp_path, seed=1, log=quiet, num_samples=3)
    assert [r["seed"] for r in many["samples"]] == [1, 2, 3] and many["samples"][0]["tokens"] == record["tokens"]
    assert len({r["path"] for r in many["samples"]}) == 3
    with pytest.raises(config.ConfigError, match="--num-samples"):
        plans.inference(guid, "The", 8, root=tmp_path, log=quiet, num_samples=0)


def test_every_option_says_what_it_does_and_its_default() -> None:
    import argparse

    from baby.__main__ import Help, parser
    top = parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    formatter = Help("x")
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                text = formatter._get_help_string(action)
                assert action.help and ("default" in text or "(required)" in text), (name, action.dest)
    done = subprocess.run([sys.executable, "-m", "baby", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("baby ")
