"""Hostile input: every bad setting, damaged file and file-system fault ends in one line (exit 2) and
leaves every file as it was; divergence, signals and kills leave a run that can be resumed."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import plans
from baby.__main__ import main
from baby.config import Config, ConfigError, all_settings
from baby.jsonio import read_json, write_json
from baby.runs import RunError, RunStore
from baby.train import Diverged, Interrupted
from tests.conftest import ROOT, TINY_RUN, digest, quiet, weights


def run_main(*argv: str) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def assert_one_line(status: int, err: str, *words: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


# ---- 1. non-finite settings, divergence, signals, extension ------------------------------------------

FLOATS = [key for key, s in all_settings().items() if s.type is float]


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_setting_refuses_non_finite_values(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        Config({key: value})


def test_cli_refuses_nan_learning_rate_before_any_file(tmp_path: Path, corpus: Path) -> None:
    for raw in ("NaN", "Infinity", "-Infinity"):
        status, _, err = run_main("train", "--config", str(ROOT / "configs" / "cpu.json"), "--input", str(corpus),
                                  "--set", f"r_learn={raw}", "--root", str(tmp_path / "r"))
        assert_one_line(status, err, "r_learn")
    assert not (tmp_path / "r").exists()


def poison_step(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    """Make the loss and its gradient NaN from the at_call-th training step on (every slice of it,
    whether one model or the CPU replicas compute it)."""
    import baby.replicas as replicas_module
    import baby.train as train_module

    real_loss, real_step, steps = train_module.cross_entropy, train_module.train_step, [0]

    def poisoned(logits: Any, targets: Any, ignore: int = -1, **options: Any) -> Any:
        loss, dlogits = real_loss(logits, targets, ignore, **options)
        if steps[0] >= at_call:
            return loss * math.nan, dlogits * math.nan
        return loss, dlogits

    def counted(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "cross_entropy", poisoned)
    monkeypatch.setattr(replicas_module, "cross_entropy", poisoned)
    monkeypatch.setattr(train_module, "train_step", counted)


def test_divergence_stops_keeps_the_last_good_checkpoint_and_resumes(tmp_path: Path, corpus: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {**TINY_RUN, "n_log_every": 1, "n_eval_every": 100, "n_checkpoint_every": 4}
    poison_step(monkeypatch, at_call=7)  # no evaluation before step 12
    with pytest.raises(Diverged, match="step 7") as caught:
        plans.train(settings, [str(corpus)], root=tmp_path, log=quiet)
    assert "--resume" in str(caught.value) and "r_learn" in str(caught.value)
    store = RunStore(tmp_path)
    (guid,) = store.guids()
    assert not store.path("model", guid).exists() and not store.path("report", guid).exists()
    checkpoint = store.read("checkpoint", guid)
    assert checkpoint["trainer"]["step"] == 4  # the evaluation/checkpoint before the divergence
    (row,) = plans.runs_plan(root=tmp_path, log=quiet)
    assert row["state"].startswith("diverged") and row["steps"] == 4  # told apart from a kill
    monkeypatch.undo()
    status, _, err = run_main("train", "--resume", guid, "--set", "r_learn=0.0005", "--root", str(tmp_path))
    assert status == 0, err
    report = store.read("report", guid)
    assert report["steps"] == 12 and math.isfinite(report["final_val_loss"])
    assert store.read("config", guid)["settings"]["r_learn"] == 0.0005
    assert store.read("config", guid)["runtime"]["resumed"] == [{"step": 4, "set": {"r_learn": 0.0005}}]
    assert plans.runs_plan(root=tmp_path, log=quiet)[0]["state"] == "finished"


def test_cli_divergence_is_one_line_with_the_step(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poison_step(monkeypatch, at_call=3)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    status, _, err = run_main("train", "--config", str(config), "--input", str(corpus), "--root", str(tmp_path))
    assert_one_line(status, err, "diverged at step 3", "--resume")


def test_resume_refuses_settings_that_would_change_the_model(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(Interrupted):
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet, stop_at=4)
    (guid,) = RunStore(tmp_path).guids()
    before = digest(tmp_path)
    status, _, err = run_main("train", "--resume", guid, "--set", "n_emb=32", "--root", str(tmp_path))
    assert_one_line(status, err, "n_emb", "r_learn")
    assert digest(tmp_path) == before


def test_a_run_killed_before_its_first_interval_resumes_from_step_0(tmp_path: Path, corpus: Path) -> None:
    whole = plans.train(TINY_RUN, [str(corpus)], root=tmp_path / "a", log=quiet)
    with pytest.raises(Interrupted):  # step 1: no interval checkpoint yet, only the one of step 0
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path / "b", log=quiet, stop_at=1)
    store = RunStore(tmp_path / "b")
    (guid,) = store.guids()
    assert store.read("checkpoint", guid)["trainer"]["step"] == 0
    assert plans.info(guid, root=tmp_path / "b")["status"]["state"] == "interrupted, resumable"
    plans.resume(guid, root=tmp_path / "b", log=quiet)
    assert weights(tmp_path / "b", guid) == weights(tmp_path / "a", whole)


def test_a_run_without_any_checkpoint_is_reported_not_resumable(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    for kind in ("checkpoint", "model", "report", "completion"):
        store.path(kind, guid).unlink()
    assert plans.info(guid, root=tmp_path)["status"]["state"] == "not resumable; delete it"
    status, _, err = run_main("train", "--resume", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "delete it")


def test_a_finished_run_can_be_extended_and_equals_a_longer_run(tmp_path: Path, corpus: Path) -> None:
    settings = {**TINY_RUN, "s_warmup": "none"}
    guid = plans.train({**settings, "n_steps": 8}, [str(corpus)], root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    assert "extend" in plans.info(guid, root=tmp_path)["status"]
    status, _, err = run_main("train", "--resume", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "finished", "n_steps")
    plans.resume(guid, root=tmp_path, log=quiet, overrides={"n_steps": 12})
    assert store.read("report", guid)["steps"] == 12
    assert store.read("checkpoint", guid)["trainer"]["step"] == 12


def test_a_checkpoint_past_the_runs_end_is_refused_and_kept(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(Interrupted):
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet, stop_at=8)
    store = RunStore(tmp_path)
    (guid,) = store.guids()
    path = store.path("checkpoint", guid)
    data = store.read("checkpoint", guid)
    data["trainer"]["step"] = 40  # a run of 12 steps
    write_json(path, data)
    before = digest(tmp_path)
    status, _, err = run_main("train", "--resume", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "past the run's end", "n_steps")
    assert digest(tmp_path) == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_a_checkpoint_of_the_current_step_and_says_how_to_resume(
        tmp_path: Path, corpus: Path, signum: int) -> None:
    config = tmp_path / "long.json"
    config.write_text(json.dumps({**TINY_RUN, "n_steps": 3000, "n_log_every": 1, "n_eval_every": 1000}))
    proc = subprocess.Popen([sys.executable, "-m", "baby", "train", "--config", str(config), "--input", str(corpus),
                             "--root", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step 5/"):
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "resume with: python -m baby train --resume" in lines[0], err
    (guid,) = RunStore(tmp_path).guids()
    step = RunStore(tmp_path).read("checkpoint", guid)["trainer"]["step"]
    assert 5 <= step < 3000 and f"at step {step}/3000" in lines[0]


# ---- 2. validated means it runs -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, words", [
    ({"r_top_p": 0}, ["r_top_p"]),
    ({"n_ctx": 2000}, ["n_ctx"]),  # the 6,000-character corpus cannot fill a validation window
    ({"n_emb": 65536, "n_layers": 1024, "n_heads": 1}, ["batch_size", "n_emb", "GiB"]),
])
def test_combinations_that_cannot_run_are_refused_before_any_file(tmp_path: Path, corpus: Path,
                                                                   overrides: dict[str, Any], words: list[str]) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    status, _, err = run_main("train", "--config", str(config), "--input", str(corpus), *sets,
                              "--root", str(tmp_path / "r"))
    assert_one_line(status, err, *words)
    assert not list((tmp_path / "r").rglob("*.json")) if (tmp_path / "r").exists() else True


def test_ignored_settings_are_noticed(tmp_path: Path, corpus: Path) -> None:
    lines: list[str] = []
    plans.train({**TINY_RUN, "n_steps": 2, "n_vocab": 500, "n_experts": 8}, [str(corpus)], root=tmp_path,
                log=lines.append)
    notices = [line for line in lines if line.startswith("notice:")]
    assert any("n_vocab" in n and "char" in n for n in notices)
    assert any("n_experts" in n and "moe" in n for n in notices)


def test_a_warmup_as_long_as_the_run_is_noticed(tmp_path: Path, corpus: Path) -> None:
    lines: list[str] = []
    plans.train({**TINY_RUN, "n_steps": 5, "s_warmup": 100}, [str(corpus)], root=tmp_path, log=lines.append)
    assert any(line.startswith("notice: s_warmup=100") and "never reaches" in line for line in lines)


def test_a_bpe_vocabulary_smaller_than_asked_is_noticed(tmp_path: Path, corpus: Path) -> None:
    lines: list[str] = []
    plans.train({**TINY_RUN, "n_steps": 2, "c_tokenizer": "bpe", "n_vocab": 50000}, [str(corpus)],
                root=tmp_path, log=lines.append)
    assert any(line.startswith("notice: n_vocab=50000") for line in lines)


def test_duplicate_keys_in_a_config_file_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"n_emb": 32, "n_emb": 64}')
    with pytest.raises(ConfigError, match="n_emb.*twice"):
        Config.load(path)


# ---- 3. every damaged file named ---------------------------------------------------------------------------

DAMAGES = {
    "truncated": lambda text: text[:len(text) // 2],
    "empty": lambda text: "",
    "array": lambda text: "[]",
    "null": lambda text: "null",
    "deep": lambda text: "[" * 100000 + "]" * 100000,
    "utf16": lambda text: text.encode("utf-16"),
    "wrong kind": lambda text: json.dumps({"kind": "bpe", "format": "baby-model/1", "settings": {}}),
    "missing fields": lambda text: json.dumps({k: v for k, v in list(json.loads(text).items())[:1]}),
}
COMMANDS = {
    "info": ["info", "--guid", "G"],
    "inference": ["inference", "--guid", "G", "--max-tokens", "3"],
    "finetune": ["finetune", "--guid", "G", "--input", "CORPUS", "--set", "n_steps=2"],
    "eval": ["eval", "--guid", "G", "--task", "perplexity", "--input", "CORPUS"],
    "resume": ["train", "--resume", "G"],
}
READS = {"config": COMMANDS, "tokenizer": COMMANDS,
         "model": {k: COMMANDS[k] for k in ("inference", "finetune", "eval")},
         "checkpoint": {k: COMMANDS[k] for k in ("resume", "info")}}


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A run with every file: model (finished, 12 steps) and a mid-run checkpoint (step 8)."""
    root = tmp_path_factory.mktemp("damage")
    corpus = root / "corpus.txt"
    corpus.write_text((ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    guid = plans.train(TINY_RUN, [str(corpus)], root=root / "run", log=quiet)
    data = RunStore(root / "run").read("checkpoint", guid)
    data["trainer"]["step"] = 8
    write_json(RunStore(root / "run").path("checkpoint", guid), data)
    return root / "run", guid, corpus


@pytest.mark.parametrize("kind, command", [(k, c) for k, cmds in READS.items() for c in cmds])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_every_damaged_file_is_named_in_one_line(tmp_path: Path, interrupted_run: tuple[Path, str, Path],
                                                 kind: str, command: str, damage: str) -> None:
    source, guid, corpus = interrupted_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    store = RunStore(root)
    path = store.path(kind, guid)
    damaged = DAMAGES[damage](path.read_text(encoding="utf-8"))
    path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode("utf-8"))
    before = digest(root)
    argv = [guid if a == "G" else str(corpus) if a == "CORPUS" else a for a in COMMANDS[command]]
    status, out, err = run_main(*argv, "--root", str(root))
    if (kind, command) == ("checkpoint", "info"):  # info describes the damage instead of failing
        assert status == 0 and "checkpoint damaged" in out and path.name in out, err
    else:
        assert_one_line(status, err, path.name)
    assert digest(root) == before
    status, _, err = run_main("delete", "--guid", guid, "--root", str(root))  # delete still works
    assert status == 0, err and not store.files(guid)


@pytest.mark.parametrize("edit", ["swap pieces", "drop a piece", "duplicate piece", "no specials"])
def test_an_edited_tokenizer_is_refused_not_decoded_wrongly(tmp_path: Path, interrupted_run: tuple[Path, str, Path],
                                                            edit: str) -> None:
    source, guid, _ = interrupted_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    path = RunStore(root).path("tokenizer", guid)
    data = read_json(path)
    pieces = data["pieces"]
    if edit == "swap pieces":
        pieces[10], pieces[11] = pieces[11], pieces[10]
    elif edit == "drop a piece":
        pieces.pop()
    elif edit == "duplicate piece":
        pieces[-1] = pieces[-2]
    else:
        del pieces[:4]
    write_json(path, data)
    status, _, err = run_main("inference", "--guid", guid, "--max-tokens", "3", "--root", str(root))
    assert_one_line(status, err, path.name)


def test_non_finite_weights_are_refused_by_inference_and_eval(tmp_path: Path, interrupted_run: tuple[Path, str, Path]) -> None:
    source, guid, corpus = interrupted_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    store = RunStore(root)
    data = store.read("model", guid)
    from baby.formats import decode_tensor, encode_tensor
    w = decode_tensor(data["tensors"]["tok.weight"])
    w[3, 2] = numpy.nan
    data["tensors"]["tok.weight"] = encode_tensor(w)
    write_json(store.path("model", guid), data)
    for argv in (COMMANDS["inference"], COMMANDS["eval"]):
        argv = [guid if a == "G" else str(corpus) if a == "CORPUS" else a for a in argv]
        status, _, err = run_main(*argv, "--root", str(root))
        assert_one_line(status, err, "non-finite", store.path("model", guid).name)


@pytest.mark.parametrize("edit", ["short adam_v", "short moments", "clipped_steps text", "curves not lists"])
def test_a_checkpoint_with_fields_of_the_wrong_size_or_type_is_named(tmp_path: Path,
                                                                       interrupted_run: tuple[Path, str, Path],
                                                                       edit: str) -> None:
    from baby.formats import decode_tensor, encode_tensor
    source, guid, _ = interrupted_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    store = RunStore(root)
    data = store.read("checkpoint", guid)
    trainer = data["trainer"]
    if edit.startswith("short"):
        for key in ("adam_v",) if edit == "short adam_v" else ("adam_m", "adam_v"):
            trainer[key] = encode_tensor(decode_tensor(trainer[key])[:-1])
    elif edit == "clipped_steps text":
        trainer["clipped_steps"] = "many"
    else:
        trainer["curves"] = {"step": 3}
    write_json(store.path("checkpoint", guid), data)
    status, _, err = run_main("train", "--resume", guid, "--root", str(root))
    assert_one_line(status, err, store.path("checkpoint", guid).name)


def test_an_unknown_format_version_is_refused(tmp_path: Path, interrupted_run: tuple[Path, str, Path]) -> None:
    source, guid, _ = interrupted_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    store = RunStore(root)
    for kind, command in (("model", "inference"), ("checkpoint", "resume")):
        data = store.read(kind, guid)
        data["format"] = f"baby-{kind}/9"
        write_json(store.path(kind, guid), data)
        status, _, err = run_main(*[guid if a == "G" else a for a in COMMANDS[command]], "--root", str(root))
        assert_one_line(status, err, f"baby-{kind}/9", "not supported")


def test_a_tokenizer_pattern_must_be_one_the_code_knows(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train({**TINY_RUN, "n_steps": 2, "c_tokenizer": "bpe", "n_vocab": 300}, [str(corpus)],
                       root=tmp_path, log=quiet)
    path = RunStore(tmp_path).path("tokenizer", guid)
    data = read_json(path)
    data["pattern"] = "(a+)+$"  # catastrophic backtracking on "aaaa...b"
    write_json(path, data)
    status, _, err = run_main("inference", "--guid", guid, "--prompt", "a" * 40 + "b", "--root", str(tmp_path))
    assert_one_line(status, err, path.name, "pattern")


# ---- 4. file-system faults ---------------------------------------------------------------------------------

def test_config_paths_that_are_not_regular_utf8_files(tmp_path: Path, corpus: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes(json.dumps(TINY_RUN).encode("utf-16"))
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"c_attention": "mh\xe9"}')
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    for path, words in ((tmp_path, "directory"), (fifo, "FIFO"), (utf16, "UTF-16"), (latin, "UTF-8"),
                        (loop, "loop.json")):
        status, _, err = run_main("train", "--config", str(path), "--input", str(corpus), "--root", str(tmp_path / "r"))
        assert_one_line(status, err, str(path), words)


def test_inputs_that_cannot_be_read(tmp_path: Path) -> None:
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 " * 100)
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for path in (bad_gz, latin, loop, fifo):
        status, _, err = run_main("train", "--config", str(ROOT / "configs" / "cpu.json"), "--input", str(path),
                                  "--root", str(tmp_path / "r"))
        assert_one_line(status, err, path.name)


def test_an_unwritable_folder_fails_before_the_first_step(tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "outputs").write_text("a file where the folder should be")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    status, _, err = run_main("train", "--config", str(config), "--input", str(corpus), "--root", str(root))
    assert_one_line(status, err, "outputs")
    assert not list(root.rglob("*.json"))


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"ok": 1})

    def full(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunError, match="No space left"):
        write_json(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 1} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_delete_checks_every_file_before_removing_any(tmp_path: Path, corpus: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    before = digest(tmp_path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).name == "outputs" else real(p, mode))
    status, _, err = run_main("delete", "--guid", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "outputs", "nothing was removed")
    assert digest(tmp_path) == before


def test_inference_that_cannot_save_prints_the_text_and_exits_2(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    shutil.rmtree(tmp_path / "outputs")
    (tmp_path / "outputs").write_text("not a folder")
    status, out, err = run_main("inference", "--guid", guid, "--prompt", "KING", "--max-tokens", "5",
                                "--root", str(tmp_path))
    assert status == 2 and out.startswith("KING")  # the text first, then the failure: a script can tell
    assert len(err.strip().splitlines()) == 1 and "printed but not saved" in err


def test_orphan_temp_files_are_cleaned_by_the_next_command_and_by_delete(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from baby.jsonio import HOST
    orphan = tmp_path / "models" / f".model_{guid}.json.{HOST}-{int(dead.stdout)}.abc123.tmp"
    live = tmp_path / "outputs" / f".report_{guid}.json.{HOST}-{os.getpid()}.def456.tmp"
    elsewhere = tmp_path / "outputs" / f".report_{guid}.json.othernode-{int(dead.stdout)}.ghi789.tmp"
    for path in (orphan, live, elsewhere):
        path.write_text("half")
    plans.info(guid, root=tmp_path)
    assert not orphan.exists() and live.exists()  # a live writer's temp file is left alone
    assert elsewhere.exists()  # another host's writer cannot be judged from here
    plans.delete(guid, root=tmp_path, log=quiet)
    assert not list(tmp_path.rglob(f"*{guid}*"))


# ---- 5. concurrency ----------------------------------------------------------------------------------

def test_eight_inferences_in_one_second_keep_eight_files(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    barrier = threading.Barrier(8)
    paths: list[str] = []

    def one(seed: int) -> None:
        barrier.wait()
        paths.append(plans.inference(guid, "A", 3, seed=seed, root=tmp_path, log=quiet)["path"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8
    assert len(list((tmp_path / "outputs").glob(f"completion_{guid}_*.json"))) == 8


def test_two_trainings_in_one_root_do_not_collide(tmp_path: Path, corpus: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    procs = [subprocess.Popen([sys.executable, "-m", "baby", "train", "--config", str(config), "--input", str(corpus),
                               "--root", str(tmp_path / "r")], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    guids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        guids.append(out.strip().splitlines()[-1])
    assert guids[0] != guids[1]
    for guid in guids:
        assert RunStore(tmp_path / "r").read("report", guid)["steps"] == 12


# ---- 6. files people can share --------------------------------------------------------------------------

def test_run_files_follow_the_umask_and_are_standard_json(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    import baby.jsonio as jsonio
    expected = 0o666 & ~jsonio._UMASK

    def strict(name: str) -> None:
        raise AssertionError(f"non-standard JSON literal {name}")

    for path in RunStore(tmp_path).files(guid):
        assert path.stat().st_mode & 0o777 == expected, path
        if path.suffix == ".json":  # charts are PNG
            json.loads(path.read_text(encoding="utf-8"), parse_constant=strict)


def test_a_guid_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    status, _, err = run_main("info", "--guid", "0123456789abcdef0123456789abcdef\n", "--root", str(tmp_path))
    assert_one_line(status, err, "GUID")


# ---- 7. inference arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, word", [
    (["--temperature", "nan"], "temperature"), (["--temperature", "inf"], "temperature"),
    (["--temperature", "-1"], "temperature"), (["--seed", "-1"], "seed"), (["--top-p", "nan"], "top-p"),
    (["--prompt", "bad \udcff byte"], "prompt"), (["--max-tokens", "-2"], "max-tokens"),
])
def test_bad_inference_arguments_are_one_line(tmp_path: Path, interrupted_run: tuple[Path, str, Path],
                                              args: list[str], word: str) -> None:
    source, guid, _ = interrupted_run
    status, _, err = run_main("inference", "--guid", guid, *args, "--root", str(source))
    assert_one_line(status, err, word)


def test_a_non_utf8_blimp_file_is_one_line(tmp_path: Path, interrupted_run: tuple[Path, str, Path]) -> None:
    source, guid, _ = interrupted_run
    data = tmp_path / "blimp"
    data.mkdir()
    (data / "x.jsonl").write_bytes(b'{"sentence_good": "caf\xe9", "sentence_bad": "x"}\n')
    status, _, err = run_main("eval", "--guid", guid, "--task", "blimp", "--data", str(data), "--root", str(source))
    assert_one_line(status, err, "x.jsonl", "UTF-8")


# ---- 8. the last cases: bigram models, malformed lists, huge numbers, limits, warnings -----------------

def test_a_model_of_no_blocks_is_a_bigram_model_that_trains_generates_and_exports(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train({**TINY_RUN, "n_layers": 0}, [str(corpus)], root=tmp_path, log=quiet)
    out = plans.inference(guid, prompt="KING", max_tokens=5, root=tmp_path, log=quiet)
    assert out["path"] and len(out["tokens"]) <= 5
    pytest.importorskip("safetensors")
    plans.export(guid, tmp_path / "hf", root=tmp_path, log=quiet)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["n_layer"] == 0


@pytest.mark.parametrize("setting, words", [
    ("c_attention=+", ["c_attention='+'", "empty item"]),
    ("c_attention=mha+", ["c_attention='mha+'", "empty item"]),
    ("s_checkpoint_words=,,,", ["s_checkpoint_words=',,,'", "empty item"]),
    ("s_checkpoint_words=1M,", ["s_checkpoint_words='1M,'", "empty item"]),
    ("n_emb=" + "9" * 5000, ["n_emb", "5000 characters"]),
])
def test_malformed_lists_and_huge_numbers_are_one_line(tmp_path: Path, corpus: Path, setting: str, words: list) -> None:
    status, _, err = run_main("train", "--config", str(ROOT / "configs" / "tiny.json"), "--input", str(corpus),
                              "--set", setting, "--root", str(tmp_path))
    assert_one_line(status, err, *words)
    assert not (tmp_path / "configs").exists()


def test_an_empty_mixer_list_is_said_not_silent() -> None:
    assert any("no sequence mixer" in n for n in Config({"c_attention": ""}).notices())


def test_resume_of_a_config_without_its_inputs_is_one_line(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(Interrupted):
        plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet, stop_at=4)
    (guid,) = RunStore(tmp_path).guids()
    path = RunStore(tmp_path).path("config", guid)
    record = read_json(path)
    del record["runtime"]["inputs"]
    write_json(path, record)
    before = digest(tmp_path)
    status, _, err = run_main("train", "--resume", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "runtime.inputs", "cannot be resumed")
    assert digest(tmp_path) == before


def test_info_refuses_a_config_that_contradicts_its_model_file(tmp_path: Path, corpus: Path) -> None:
    guid = plans.train(TINY_RUN, [str(corpus)], root=tmp_path, log=quiet)
    path = RunStore(tmp_path).path("config", guid)
    record = read_json(path)
    record["settings"]["n_emb"] = 48
    write_json(path, record)
    status, _, err = run_main("info", "--guid", guid, "--root", str(tmp_path))
    assert_one_line(status, err, "n_emb=16", "n_emb=48")


def test_a_step_that_reads_the_text_many_times_over_is_noticed(tmp_path: Path, corpus: Path) -> None:
    lines: list[str] = []
    plans.train({**TINY_RUN, "batch_size": 200, "n_accumulate": 4, "n_steps": 1, "n_eval_batches": 1},
                [str(corpus)], root=tmp_path, log=lines.append)
    assert any("windows per step" in line and "times over" in line for line in lines)


def test_the_memory_check_respects_the_address_space_limit(tmp_path: Path, corpus: Path) -> None:
    limit = 3 << 30  # 3 GiB: more than the interpreter needs, less than 65,536 windows of activations
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from baby.__main__ import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "train", "--config", str(ROOT / "configs" / "tiny.json"),
                           "--input", str(corpus), "--set", "batch_size=65536", "--root", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_one_line(done.returncode, done.stderr, "address-space limit", "batch_size=65536")


def test_running_out_of_memory_anywhere_in_a_plan_is_one_line() -> None:
    from baby.guard import OutOfMemory, guarded

    def greedy(**_: object) -> None:
        raise MemoryError("Unable to allocate 9.1 TiB for an array with shape (1000000, 2500000)")

    with pytest.raises(OutOfMemory) as err:
        guarded(greedy)(log=quiet)
    assert "9.1 TiB" in str(err.value) and "batch_size" in str(err.value) and "n_emb" in str(err.value)


def test_numpy_warnings_never_reach_the_terminal_and_join_the_divergence_line(tmp_path: Path, corpus: Path) -> None:
    settings = {**TINY_RUN, "r_learn": 1.0, "r_clip": 0.0, "r_beta2": 0.0, "r_dropout": 0.0, "n_log_every": 1,
                "n_steps": 60, "n_eval_every": 60, "r_spike_loss": 0.0, "r_spike_norm": 0.0}  # on to inf and NaN
    config = tmp_path / "hot.json"
    config.write_text(json.dumps(settings), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "baby", "train", "--config", str(config), "--input", str(corpus),
                           "--root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "Warning" not in done.stderr + done.stdout
    assert_one_line(done.returncode, done.stderr, "diverged at step", "(NumPy reported: overflow encountered")


def test_harmless_numpy_warnings_are_one_notice(capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    from baby.guard import guarded

    def overflowing(log: object) -> bool:
        big = np.full(4, 1e38, dtype=np.float32)
        return bool(np.isinf(big * big).all() and np.isinf(big * np.float32(4)).all())  # two overflows

    lines: list[str] = []
    assert guarded(overflowing)(log=lines.append)
    assert lines == ["notice: NumPy reported overflow encountered in multiply (2x) (every value saved is finite)"]
    assert capsys.readouterr().err == ""


def test_under_mpi_only_rank_0_says_the_numpy_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from baby.guard import guarded

    def overflowing(log: object) -> None:
        np.full(2, 1e38, dtype=np.float32) * np.float32(10)

    for rank, expected in (("1", 0), ("0", 1)):
        monkeypatch.setenv("PMI_RANK", rank)
        lines: list[str] = []
        guarded(overflowing)(log=lines.append)
        assert len(lines) == expected
