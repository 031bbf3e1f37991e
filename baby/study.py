"""A study: named configs x seeds trained on one corpus split with one token budget, each evaluated
at its learning-curve checkpoints and at the end, gathered into one table and one plot.

    python -m baby study studies/thesis.json [--parallel 2] [--list]

A study file is JSON (paths relative to the folder the command runs in)::

    {"name": "thesis", "about": "...",
     "inputs": ["../shared/data/babylm_10M/switchboard.train.gz", "../shared/data/babylm_test"],
     "holdout": 0.05,                       # the last 5 % of every file: held out for perplexity
     "config": "configs/babylm-1h.json",    # optional: a preset's settings, under base's
     "base": {settings every cell shares},
     "checkpoints": "500K,1M,2M",           # words seen; "final" is always evaluated too
     "target_params": 5210000, "tolerance": 0.03,
     "eval": {"blimp": DIR, "zorro": DIR, "checkpoint_limit": 100, "final_limit": 0},
     "cells": [{"name": "gpt", "settings": {...}, "seeds": [1, 2], "match": "r_hidden"}, ...]}

``match`` names the setting (``r_hidden``: the feed-forward width) adjusted so that the cell's parameter count
comes within ``tolerance`` of ``target_params``; every cell must land within it. Every cell is
validated (settings, sizes, data folders) before the first one trains: a typo in the last cell
fails in seconds, not hours. The text is split and tokenized once per study (``outputs/
study_<name>/corpus.json``); every cell is a run of its own (a GUID, resumable); a cell that
finished is skipped, an interrupted one resumes. ``--parallel N`` runs N cells at once, one BLAS
thread each unless a cell sets c_device_cpu_cores. Results: ``outputs/study_<name>/cells/<cell>_s<seed>.json`` per cell, and
``outputs/study_<name>.json``, ``.md`` and ``.png`` for the whole study.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import plans
from baby.config import Config, ConfigError, parse_word_counts
from baby.corpus import Corpus, holdout_split, prepare_corpus
from baby.formats import decode_tensor, encode_tensor
from baby.jsonio import read_json, write_json, write_text
from baby.nn.model import GPT
from baby.progress import say
from baby.runs import RunStore, new_guid, state_of
from baby.tokenizers import tokenizer_digest, tokenizer_from_dict
from baby.train import Stopped

Log = Callable[[str], None]
STUDY_KEYS = {"name", "about", "inputs", "holdout", "config", "base", "checkpoints", "target_params", "tolerance",
              "eval", "cells"}
CELL_KEYS = {"name", "about", "settings", "seeds", "match"}
EVAL_KEYS = {"blimp", "zorro", "checkpoint_limit", "final_limit", "batch_size"}
MATCHABLE = ("r_hidden",)


@dataclass
class Cell:
    name: str
    seed: int
    settings: dict[str, Any]  # complete: base, the cell's own, seed, the matched size
    params: int
    about: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}_s{self.seed}"


@dataclass
class Study:
    name: str
    path: Path
    root: Path
    inputs: list[str]
    holdout: float
    checkpoints: list[tuple[str, int]]
    evals: dict[str, Any]
    cells: list[Cell]
    target: int | None
    tolerance: float
    about: str = ""
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / "outputs" / f"study_{self.name}"

    def cell_path(self, cell: Cell) -> Path:
        return self.folder / "cells" / f"{cell.key}.json"

    def cell_record(self, cell: Cell) -> dict[str, Any]:
        path = self.cell_path(cell)
        return read_json(path, "study cell file") if path.exists() else {}

    def labels(self) -> list[str]:
        return [label for label, _ in self.checkpoints] + ["final"]


# ---- loading and validation ----------------------------------------------------------------------

def _fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {message}")


def count_params(settings: dict[str, Any], n_vocab: int) -> int:
    return GPT(Config(settings), n_vocab).n_params()


def match_size(settings: dict[str, Any], key: str, n_vocab: int, target: int) -> dict[str, Any]:
    """``settings`` with the feed-forward hidden width h (``key`` = r_hidden) set so that the parameter
    count comes closest to ``target``: the count is linear in h, so two sizes solve it."""
    width = settings.get("n_emb", Config().n_emb)
    value = lambda h: {**settings, key: h / width}  # noqa: E731 - hidden width h exactly
    low = -(-width // 4)  # r_hidden >= 0.25
    at_low, at_high = count_params(value(low), n_vocab), count_params(value(low + width), n_vocab)
    per_unit = max((at_high - at_low) / width, 1e-9)
    return value(max(low, min(64 * width, round(low + (target - at_low) / per_unit))))


def load_study(path: str | Path, root: str | Path = ".") -> Study:
    """Read and validate a study file and every cell in it; nothing is written."""
    path = Path(path)
    spec = read_json(path, "study file", strict=True)
    unknown = sorted(set(spec) - STUDY_KEYS)
    if unknown:
        raise _fail(path, "top level", f"unknown key {unknown[0]!r}; allowed {', '.join(sorted(STUDY_KEYS))}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise _fail(path, "name", "a name of letters, digits, '-' and '_' is required")
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(p, str) for p in inputs):
        raise _fail(path, "inputs", "a list of text files or folders is required")
    for p in inputs:
        if not Path(p).exists():
            raise _fail(path, "inputs", f"{p}: no such file or directory")
    holdout = spec.get("holdout", 0.05)
    if not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        raise _fail(path, "holdout", "a fraction between 0 and 1 is required")
    base = spec.get("base", {})
    if not isinstance(base, dict):
        raise _fail(path, "base", "a JSON object of settings is required")
    if "config" in spec:  # a preset the study runs as it is: its settings under base's
        preset = spec["config"]
        if not isinstance(preset, str) or not Path(preset).is_file():
            raise _fail(path, "config", f"{preset!r}: no such settings file (a path like configs/babylm-1h.json)")
        try:
            cfg = Config.load(preset)
            base = {**{k: v for k, v in cfg.to_dict().items() if k in cfg.given}, **base}
        except ConfigError as err:
            raise _fail(path, "config", str(err)) from None
    checkpoints = parse_word_counts(str(spec.get("checkpoints", "")))
    evals = spec.get("eval", {})
    if not isinstance(evals, dict) or set(evals) - EVAL_KEYS:
        raise _fail(path, "eval", f"an object with keys among {', '.join(sorted(EVAL_KEYS))} is required")
    for task in ("blimp", "zorro"):
        if task in evals and not Path(evals[task]).is_dir():
            raise _fail(path, f"eval.{task}", f"{evals[task]}: no such data folder")
    for key in ("checkpoint_limit", "final_limit", "batch_size"):
        value, low = evals.get(key, 1), 1 if key == "batch_size" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise _fail(path, f"eval.{key}", f"{value!r}: an integer >= {low} is required")
    target, tolerance = spec.get("target_params"), spec.get("tolerance", 0.03)
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool) or target < 0):
        raise _fail(path, "target_params", f"{target!r}: a parameter count is required")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 < tolerance < 1:
        raise _fail(path, "tolerance", f"{tolerance!r}: a fraction between 0 and 1 is required")
    cells_spec = spec.get("cells")
    if not isinstance(cells_spec, list) or not cells_spec:
        raise _fail(path, "cells", "a non-empty list of cells is required")
    cells: list[Cell] = []
    for i, c in enumerate(cells_spec):
        where = f"cell {i + 1}" + (f" ({c.get('name')!r})" if isinstance(c, dict) and c.get("name") else "")
        if not isinstance(c, dict) or set(c) - CELL_KEYS or not isinstance(c.get("name"), str):
            raise _fail(path, where, f"an object with a name and keys among {', '.join(sorted(CELL_KEYS))}")
        seeds = c.get("seeds", [base.get("seed", Config().seed)])
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise _fail(path, where, "seeds must be a list of integers")
        if not isinstance(c.get("settings", {}), dict):
            raise _fail(path, where, "settings must be a JSON object of settings")
        settings = {**base, **c.get("settings", {}), "s_checkpoint_words": spec.get("checkpoints", "")}
        try:
            for seed in seeds:
                Config({**settings, "seed": seed})
            match = c.get("match")
            n_vocab = settings.get("n_vocab") or 256
            if match:
                if match not in MATCHABLE or not target:
                    raise ConfigError(f"match={match!r}: allowed {', '.join(MATCHABLE)}, with target_params set")
                settings = match_size(settings, match, n_vocab, int(target))
            params = count_params(settings, n_vocab)
        except ConfigError as err:
            raise _fail(path, where, str(err)) from None
        if target and not abs(params - target) <= tolerance * target:
            raise _fail(path, where, f"{params:,} parameters, more than {tolerance:.0%} away from target_params "
                        f"{int(target):,} (set match: r_hidden or adjust the width)")
        for seed in seeds:
            cells.append(Cell(c["name"], seed, {**settings, "seed": seed}, params, c.get("about", "")))
    keys = [cell.key for cell in cells]
    if len(set(keys)) != len(keys):
        raise _fail(path, "cells", "two cells have the same name and seed")
    tokenizing = {(c.settings.get("c_tokenizer", "char"), c.settings.get("n_vocab", 0)) for c in cells}
    if len(tokenizing) > 1:  # the study tokenizes its text once: every cell must read the same ids
        raise _fail(path, "cells", f"every cell must share c_tokenizer and n_vocab (found {sorted(tokenizing)}); "
                    "set them in base")
    return Study(name, path, Path(root), inputs, float(holdout), checkpoints, evals, cells,
                 int(target) if target else None, tolerance, spec.get("about", ""), spec)


# ---- the corpus, split and tokenized once ------------------------------------------------------------

def corpus_of(study: Study, log: Log) -> Corpus:
    """The study's training text, tokenized once and kept in ``corpus.json`` (tokens as a tensor)."""
    path = study.folder / "corpus.json"
    train_dir, held_dir = study.folder / "data" / "train", study.folder / "data" / "heldout"
    first = study.cells[0].settings
    made_from = {"inputs": study.inputs, "holdout": study.holdout, "c_tokenizer": first.get("c_tokenizer", "char"),
                 "n_vocab": first.get("n_vocab", 0)}
    if path.exists():
        data = read_json(path, "study corpus file")
        tokenizer = tokenizer_from_dict(data["tokenizer"])
        if data.get("made_from") == made_from and tokenizer_digest(tokenizer) == data.get("tokenizer_sha256"):
            return Corpus(data["inputs"], data["fingerprint"], data["words"], tokenizer,
                                decode_tensor(data["tokens"], str(path)), data["unknown"])
    log(f"study {study.name}: holding out the last {study.holdout:.0%} of every input file")
    holdout_split(study.inputs, study.holdout, study.folder / "data")
    start = time.perf_counter()
    corpus = prepare_corpus(Config(study.cells[0].settings), [str(train_dir)])
    log(f"study {study.name}: {corpus.words:,} training words, {len(corpus.tokens):,} tokens, "
        f"tokenizer of {corpus.tokenizer.n_vocab} ids ({time.perf_counter() - start:.1f} s); held-out text in {held_dir}")
    write_json(path, {"made_from": made_from, "inputs": corpus.inputs, "fingerprint": corpus.fingerprint, "words": corpus.words,
                      "unknown": corpus.unknown, "tokenizer": corpus.tokenizer.to_dict(),
                      "tokenizer_sha256": tokenizer_digest(corpus.tokenizer), "tokens": encode_tensor(corpus.tokens)},
               indent=None)
    return corpus


# ---- one cell ---------------------------------------------------------------------------------------

def evaluate_cell(study: Study, cell: Cell, guid: str, label: str, log: Log) -> dict[str, Any]:
    """Held-out perplexity, BLiMP and Zorro of one checkpoint ("final": the finished model)."""
    from baby.commands.eval import evaluate  # noqa: PLC0415 - evaluation loads what it needs

    checkpoint = "" if label == "final" else label
    # a sweep may score its final models on a sample too (final_limit); a study of record scores every pair
    limit = int(study.evals.get("final_limit" if label == "final" else "checkpoint_limit", 0))
    options = {"root": study.root, "checkpoint": checkpoint, "log": log,
               "batch_size": int(study.evals.get("batch_size", 64))}
    ppl = evaluate(guid, "perplexity", inputs=[str(study.folder / "data" / "heldout")], **options)
    out: dict[str, Any] = {"words": dict(study.checkpoints).get(label), "ppl_token": ppl["perplexity"],
                           "ppl_word": ppl["word_perplexity"], "limit": limit}
    for task in ("blimp", "zorro"):
        if task in study.evals:
            r = evaluate(guid, task, data=study.evals[task], limit=limit, **options)
            out[task] = r["accuracy"]
            out[f"{task}_phenomena"] = {k: v["accuracy"] for k, v in r["phenomena"].items()}
    return out


def induction_match_share(study: Study, cell: Cell, corpus: Corpus) -> float | None:
    """Share of held-out positions whose token occurred earlier in its window (with a follower before
    it): where induction can copy at all. A property of the text and n_ctx, not of the weights."""
    from baby.corpus import encode_documents, read_documents  # noqa: PLC0415
    from baby.nn.mixers.induction_index import build_index  # noqa: PLC0415

    cfg = Config(cell.settings)
    if "induction" not in cfg.mixers:
        return None
    tokens, _ = encode_documents(corpus.tokenizer, read_documents([str(study.folder / "data" / "heldout")]))
    n = (len(tokens) - 1) // cfg.n_ctx
    windows = tokens[:n * cfg.n_ctx].reshape(n, cfg.n_ctx)
    _, mask = build_index(windows, None, cfg.n_induction_m)
    return float(numpy.asarray(mask).any(axis=2).mean())


def run_cell(study: Study, cell: Cell, log: Log = say) -> dict[str, Any]:
    """Train (or resume) one cell and evaluate what is not evaluated yet; the cell file records each
    stage as it completes, so an interruption anywhere loses at most the stage under way."""
    store = RunStore(study.root)
    record = study.cell_record(cell) or {"cell": cell.name, "seed": cell.seed, "about": cell.about,
                                         "settings": cell.settings, "params": cell.params, "results": {}}
    path = study.cell_path(cell)
    guid = record.get("guid")
    state = state_of(store, guid)["state"] if guid and store.exists(guid) else None
    if state == "interrupted, resumable":
        log(f"{cell.key}: resuming run {guid}")
        plans.resume(guid, root=study.root, log=log)
    elif state != "finished":
        if guid and store.files(guid):
            plans.delete(guid, root=study.root, log=lambda _line: None)  # killed before any checkpoint
        corpus = corpus_of(study, log)
        guid = new_guid()
        record.update(guid=guid, status="training", results={})
        write_json(path, record)
        log(f"{cell.key}: training run {guid} ({cell.params:,} parameters)")
        plans.train(cell.settings, root=study.root, corpus=corpus, guid=guid, log=log)
    report = store.read("report", guid)
    record["training"] = {k: report.get(k) for k in ("steps", "words_seen", "tokens_trained", "train_seconds",
                                                     "tokens_per_second", "final_val_loss", "best_val_loss")}
    record["curves"] = {k: report["curves"][k] for k in ("step", "train_loss", "val_loss")}
    record["words_per_step"] = report["words_seen"] / max(report["steps"], 1)
    record["status"] = "evaluating"
    write_json(path, record)
    for label in study.labels():
        if label not in record["results"]:
            log(f"{cell.key}: evaluating {label}")
            record["results"][label] = evaluate_cell(study, cell, guid, label, log)
            write_json(path, record)
    if "induction_match_share" not in record:
        record["induction_match_share"] = induction_match_share(study, cell, corpus_of(study, log))
    record["status"] = "done"
    write_json(path, record)
    return record


# ---- the whole study ------------------------------------------------------------------------------------

def status(path: str | Path, root: str | Path = ".") -> list[dict[str, Any]]:
    """One row per cell: its key, state (not started, training, evaluating, done) and GUID."""
    study = load_study(path, root)
    rows = []
    for cell in study.cells:
        record = study.cell_record(cell)
        rows.append({"cell": cell.key, "params": cell.params, "state": record.get("status", "not started"),
                     "guid": record.get("guid"), "evaluated": sorted(record.get("results", {}))})
    return rows


def run(path: str | Path, root: str | Path = ".", parallel: int = 1, log: Log = say,
        only: list[str] | None = None) -> Path:
    """Every cell not done yet, ``parallel`` at a time (each in its own process, one BLAS thread);
    then the study's JSON, table and plot. Returns the JSON's path."""
    study = load_study(path, root)
    unknown = [name for name in only or [] if not any(name in (c.name, c.key) for c in study.cells)]
    if unknown:
        names = sorted({c.name for c in study.cells})
        raise ConfigError(f"--only {unknown[0]}: no such cell in {path}; cells are {', '.join(names)} (or name_sSEED)")
    corpus_of(study, log)  # split and tokenize once, before the workers start
    done = [c for c in study.cells if study.cell_record(c).get("status") == "done"]
    todo = [c for c in study.cells if c not in done and (not only or c.name in only or c.key in only)]
    left = len(study.cells) - len(done) - len(todo)
    log(f"study {study.name}: {len(study.cells)} cells, {len(done)} done, {len(todo)} to run, {parallel} at a time"
        + (f" ({left} left for later: not in --only)" if left else ""))
    (study.folder / "logs").mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    failed: list[str] = []

    def stop(_signum: int, _frame: Any) -> None:  # SIGTERM (or SIGINT where a shell ignores it) stops like Ctrl-C
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while todo or running:
            while todo and len(running) < parallel:
                cell = todo.pop(0)
                out = open(study.folder / "logs" / f"{cell.key}.log", "a", encoding="utf-8")
                proc = subprocess.Popen([sys.executable, "-m", "baby", "study", str(study.path), "--worker", cell.key,
                                         "--root", str(study.root)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)  # Ctrl-C reaches the parent alone: one signal each
                running[cell.key] = (proc, out)
                log(f"{cell.key}: started (log: {out.name})")
            time.sleep(1.0)
            for key, (proc, out) in list(running.items()):
                if proc.poll() is not None:
                    out.close()
                    del running[key]
                    stopped = proc.returncode == Stopped.exit_status  # its own SIGTERM: checkpointed, resumable
                    log(f"{key}: " + ("done" if proc.returncode == 0 else "stopped; it resumes on the next run" if stopped
                                      else f"failed (exit {proc.returncode}), see its log"))
                    if proc.returncode and not stopped:
                        failed.append(key)
                    if stopped:
                        raise KeyboardInterrupt
                    write_summary(study)
    except KeyboardInterrupt:
        for proc, _ in running.values():  # each worker checkpoints its current step and stops
            proc.send_signal(signal.SIGTERM)
        for proc, out in running.values():
            proc.wait()
            out.close()
        write_summary(study)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    target = write_summary(study)
    if failed:
        raise ConfigError(f"study {study.name}: {len(failed)} cells failed ({', '.join(failed)}); see their logs in "
                          f"{study.folder / 'logs'}; run the study again to retry them")
    return target


def write_summary(study: Study) -> Path:
    """outputs/study_<name>.json, .md and (with matplotlib) .png from the cell files so far."""
    from baby.study_report import markdown, plot  # noqa: PLC0415

    records = [r for r in (study.cell_record(c) for c in study.cells) if r]
    out = study.root / "outputs" / f"study_{study.name}.json"
    data = {"name": study.name, "about": study.about, "study_file": str(study.path),
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
            "checkpoints": study.labels(), "cells": records}
    write_json(out, data)
    write_text(out.with_suffix(".md"), markdown(data))
    plot(data, out.with_suffix(".png"))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m baby study", description="train and evaluate every cell of a study")
    p.add_argument("study", help="the study file, e.g. studies/thesis.json")
    p.add_argument("--root", default=".", help="folder holding configs/ models/ tokenizers/ outputs/ (default: .)")
    p.add_argument("--parallel", type=int, default=1, help="cells trained at once, one thread each (default: 1)")
    p.add_argument("--list", action="store_true", help="list the cells and their state, train nothing")
    p.add_argument("--only", nargs="+", help="run only these cells (names or name_sSEED)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one cell, in a process of its own
    args = p.parse_args(argv)
    if args.parallel < 1:
        raise ConfigError(f"--parallel={args.parallel}: must be >= 1")
    if args.list:
        for row in status(args.study, args.root):
            print(f"{row['cell']:<32} {row['params']:>12,} {row['state']:<12} {row['guid'] or ''} "
                  f"{','.join(row['evaluated'])}")
        return 0
    if args.worker:
        study = load_study(args.study, args.root)
        (cell,) = [c for c in study.cells if c.key == args.worker]
        run_cell(study, cell)
        return 0
    print(run(args.study, args.root, args.parallel, only=args.only))
    return 0
