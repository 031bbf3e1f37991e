"""eval: load a run, run one evaluation task, keep the result in outputs/eval_<guid>.json.

One eval file per GUID holds every evaluation of that run under ``results``, keyed by what makes
two evaluations different - task, data set, checkpoint, finetuned, limit - e.g.
``blimp:blimp_filtered_babylm:final`` or ``perplexity:valid.txt:1M:finetuned``. Evaluating again
with the same key replaces that entry; other entries stay (read, add, atomic write).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable

from baby import backend, device
from baby.config import ConfigError
from baby.corpus import read_documents
from baby.evaluate.blimp import evaluate_blimp, format_blimp, load_blimp
from baby.evaluate.perplexity import evaluate_perplexity, format_perplexity
from baby.evaluate.zorro import load_zorro
from baby.runs import FINETUNED, Run, RunError, RunStore

TASKS = ("blimp", "zorro", "perplexity")
PAIR_TASKS = {"blimp": (load_blimp, "BLiMP *.jsonl"), "zorro": (load_zorro, "Zorro *.txt")}
Log = Callable[[str], None]


def result_key(task: str, dataset: str, checkpoint: str, finetuned: bool, limit: int) -> str:
    parts = [task, dataset, checkpoint or "final"]
    if finetuned:
        parts.append("finetuned")
    if limit:
        parts.append(f"limit{limit}")
    return ":".join(parts)


def evaluate(guid: str, task: str, data: str | None = None, inputs: list[str] | None = None,
             checkpoint: str = "", root: str | Path = ".", finetuned: bool = False, batch_size: int = 64,
             limit: int = 0, log: Log = print, stride: int = 0) -> dict[str, Any]:
    """Evaluate run ``guid`` on ``task`` ("blimp" with ``data`` = a folder of BLiMP *.jsonl files,
    "zorro" with ``data`` = a folder of Zorro *.txt files, or "perplexity" with ``inputs`` = text
    files / folders / .gz); returns the result and adds it to outputs/eval_<guid>.json. ``limit``
    keeps the first N pairs of each BLiMP/Zorro paradigm; ``stride``
    is perplexity's window step (0: n_ctx, non-overlapping windows)."""
    # Everything the user can get wrong is checked before the (slow) model load.
    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: allowed {', '.join(TASKS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size={batch_size}: must be >= 1")
    if limit < 0:
        raise ConfigError(f"--limit={limit}: must be >= 0 (0: every pair)")
    if stride < 0:
        raise ConfigError(f"--stride={stride}: must be >= 0 (0: n_ctx)")
    store = RunStore(root)
    run = Run(store, guid, FINETUNED if finetuned else "")
    if task in PAIR_TASKS:
        load, files = PAIR_TASKS[task]
        if not data:
            raise ConfigError(f"--task {task} needs --data DIR (a folder of {files} files)")
        if inputs:
            raise ConfigError(f"--task {task} reads --data DIR, not --input")
        pairs = load(data, limit)
        dataset = Path(data).resolve().name
    else:
        if not inputs:
            raise ConfigError("--task perplexity needs --input FILE... (text files, folders or .gz)")
        if data or limit:
            raise ConfigError("--task perplexity reads --input FILE...; --data and --limit are for blimp and zorro")
        docs = read_documents(inputs)
        dataset = Path(inputs[0]).name + (f"+{len(inputs) - 1}" if len(inputs) > 1 else "")
    if stride > run.cfg.n_ctx:
        raise ConfigError(f"--stride={stride}: must be at most the run's n_ctx={run.cfg.n_ctx}")

    cfg = device.select(run.cfg, log=log, fallback=True)
    model = run.model(checkpoint, cfg=cfg)
    head = {"task": task, "guid": guid, "checkpoint": checkpoint or None, "finetuned": finetuned,
            "n_params": model.n_params(), "tokenizer": run.tokenizer.kind, "n_vocab": run.tokenizer.n_vocab,
            "device": backend.device_name, "batch_size": batch_size}
    if task in PAIR_TASKS:
        result = {**head, "data": str(data), "limit": limit,
                  **evaluate_blimp(model, run.tokenizer, pairs, batch_size, log=log)}
    else:
        result = {**head, "inputs": [str(p) for p in inputs or []],
                  **evaluate_perplexity(model, run.tokenizer, docs, batch_size, stride)}
    result["created"] = _dt.datetime.now().isoformat(timespec="seconds")

    key = result_key(task, dataset, checkpoint, finetuned, limit)
    path = store.path("eval", guid)
    saved = store.read("eval", guid) if path.exists() else {}
    results = saved.get("results") if isinstance(saved.get("results"), dict) else None
    if saved and results is None:
        raise RunError(f"{path}: not an eval file (no 'results' object); move it away to start a new one")
    store.write("eval", guid, {"guid": guid, "results": {**(results or {}), key: result}})
    log(format_table(result))
    log(f"-> {path} [{key}]")
    return {**result, "key": key, "path": str(path)}


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable table of one evaluation result."""
    if result.get("task") in PAIR_TASKS:
        return format_blimp(result, title="Zorro" if result["task"] == "zorro" else "BLiMP")
    if result.get("task") == "perplexity":
        return format_perplexity(result)
    raise ValueError(f"unknown task {result.get('task')!r}")


__all__ = ["evaluate", "format_table", "result_key", "TASKS"]
