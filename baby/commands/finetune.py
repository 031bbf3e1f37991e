"""finetune: train a run further on new text, into its ``_finetuned`` files."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from baby import device, distributed
from baby.commands.train import check_memory, schedule_notices, token_split, train_and_finish
from baby.config import ConfigError
from baby.corpus import count_words, encode_documents, read_documents
from baby.nn.network.lor import freeze_base
from baby.progress import Log, quiet, say
from baby.runs import FINETUNED, Run, RunStore
from baby.tokenizers import tokenizer_digest


def finetune(guid: str, inputs: list[str], root: str | Path = ".", overrides: dict[str, Any] | None = None,
             log: Log = say) -> str:
    """Train a run further on new text; writes the ``_finetuned`` files. New symbols grow the
    vocabulary (new embedding/head rows; old weights unchanged)."""
    store = RunStore(root)
    run = Run(store, guid)
    cfg = run.cfg.replace(**overrides) if overrides else run.cfg
    threads, thread_notice = device.single_process_threads(cfg)
    comm = device.data_parallel(cfg, threads)
    log = log if comm.rank == 0 else quiet
    if thread_notice:
        log(f"notice: {thread_notice}")
    docs = read_documents(inputs)
    model = run.model(cfg=cfg)
    tokenizer = run.tokenizer
    added = tokenizer.extend("\n".join(docs))
    tokens, unknown = encode_documents(tokenizer, docs)
    train_tokens, val_tokens = token_split(cfg, tokens)
    for line in schedule_notices(cfg, train_tokens) + check_memory(cfg, tokenizer.n_vocab):
        log(f"notice: {line}")
    if getattr(cfg, "c_freeze_base", False):  # LoRA finetuning: only the low-rank matrices train
        trainable = freeze_base(model)
        if not trainable:
            raise ConfigError("c_freeze_base=true leaves nothing to train: the model has no lor network")
        log(f"frozen base: {trainable:,} of {model.n_params():,} parameters train")
    distributed.ranks_may_part()
    if comm.rank == 0:
        store.check_writable()
    comm.barrier()
    if added:
        model.grow_vocab(tokenizer.n_vocab, seed=cfg.seed + 1)
        log(f"vocabulary grew by {added} to {tokenizer.n_vocab}")
    record = {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        **run.record.get("runtime", {}), "finetuned_from": str(store.path("model", guid)),
        "finetune_inputs": [str(p) for p in inputs], "finetune_words": count_words(docs),
        "n_vocab": tokenizer.n_vocab, "tokenizer_sha256": tokenizer_digest(tokenizer),
        "n_params": model.n_params(), "n_bytes": model.n_bytes(),
        "unknown_tokens": unknown, "created": _dt.datetime.now().isoformat(timespec="seconds")}}
    if comm.rank == 0:
        store.write("tokenizer", guid, tokenizer.to_dict(), FINETUNED)
        store.write("config", guid, record, FINETUNED)
    return train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, None,
                             suffix=FINETUNED, comm=comm)
