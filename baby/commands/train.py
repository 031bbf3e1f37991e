"""train and resume: a new run from text, or a run continued from its last checkpoint.

Everything that can be refused (settings, GUID, text, memory, writable folders) is refused before
the first file is written; every file is written atomically.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy

from baby import backend, device, distributed
from baby.charts import save_run_chart
from baby.config import Config, ConfigError, as_config, resumable_keys
from baby.corpus import Corpus, encode_documents, fingerprint, prepare_corpus, read_documents
from baby.data import Batches, split_stream, window_starts
from baby.distributed import Communicator
from baby.formats import FormatError, checkpoint_to_dict, model_to_dict, read_checkpoint
from baby.generate import completion_record, empty_prompt, generate, sampling_ids
from baby.jsonio import read_json, write_json
from baby.memory import check_fits
from baby.nn.model import GPT
from baby.progress import Log, quiet, say
from baby.replicas import replica_count
from baby.runs import Run, RunError, RunStore, check_guid, new_guid, resume_command
from baby.tokenizers import Tokenizer, tokenizer_digest
from baby.train import Diverged, Trainer, schedule, unigram_entropy


def token_split(cfg: Config, tokens: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    try:
        return split_stream(tokens, cfg.r_split, cfg.n_ctx)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def schedule_notices(cfg: Config, train_tokens: numpy.ndarray) -> list[str]:
    """What the schedule will do that nobody would ask for, said before any work: a warmup that never
    ends before the run does, and a step that reads the training text more than once."""
    out = []
    plan = schedule(cfg, Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle, cfg.c_window_offset))
    if plan.warmup and plan.warmup >= plan.total_steps:
        out.append(f"s_warmup={cfg.s_warmup!r} gives {plan.warmup} warmup steps for a run of {plan.total_steps}: "
                   f"the learning rate never reaches r_learn={cfg.r_learn:g} (use s_warmup=auto or a fraction)")
    windows = max(1, len(window_starts(len(train_tokens), cfg.n_ctx)))
    per_step = cfg.batch_size * cfg.n_accumulate
    if per_step > windows:
        out.append(f"batch_size={cfg.batch_size} x n_accumulate={cfg.n_accumulate} = {per_step:,} windows per step, "
                   f"but the training text holds {windows:,}: each step reads it about {per_step / windows:,.0f} "
                   "times over (lower batch_size or n_accumulate, or give more text)")
    return out


def check_memory(cfg: Config, n_vocab: int) -> list[str]:
    """Refuse a step the machine cannot hold; a warning line when it exceeds what is free now."""
    warning = check_fits(cfg, n_vocab, *backend.device_memory())
    return [warning] if warning else []


def train(config: Config | dict[str, Any] | str | Path, inputs: list[str] | None = None,
          root: str | Path = ".", overrides: dict[str, Any] | None = None, log: Log = say,
          stop_at: int | None = None, corpus: Corpus | None = None, guid: str | None = None) -> str:
    """Train a new model; returns its GUID. ``stop_at`` interrupts after that step (tests); ``corpus``
    is text already tokenized (by ``prepare_corpus``, for the same tokenizer settings); ``guid``
    names the new run (a study records it before training starts). Everything that can be refused
    is refused before the first file is written."""
    cfg = as_config(config, overrides)
    store = RunStore(root)
    threads, thread_notice = device.single_process_threads(cfg)
    comm = device.data_parallel(cfg, threads)
    log = log if comm.rank == 0 else quiet
    guid = comm.broadcast(check_guid(guid) if guid else new_guid())  # rank 0's GUID names the run everywhere
    distributed.ranks_may_part()
    if store.files(guid):
        raise RunError(f"run {guid} already exists under {store.root.resolve()}")
    corpus = corpus or prepare_corpus(cfg, inputs, log)
    tokenizer, tokens = corpus.tokenizer, corpus.tokens
    if tokenizer.kind != cfg.c_tokenizer or (cfg.c_tokenizer == "bpe" and tokenizer.n_vocab > cfg.n_vocab):
        raise ConfigError(f"the corpus given was tokenized by a {tokenizer.kind} tokenizer of {tokenizer.n_vocab} ids; "
                          f"this config asks for c_tokenizer={cfg.c_tokenizer!r}, n_vocab={cfg.n_vocab}")
    train_tokens, val_tokens = token_split(cfg, tokens)
    notices = cfg.notices() + schedule_notices(cfg, train_tokens) + check_memory(cfg, tokenizer.n_vocab)
    notices += [thread_notice] if thread_notice else []
    if comm.rank == 0:
        store.check_writable()
    comm.barrier()  # every rank has checked that the GUID is new before rank 0 writes its files
    if cfg.c_tokenizer == "bpe" and tokenizer.n_vocab < cfg.n_vocab:
        notices.append(f"n_vocab={cfg.n_vocab}: the text allows only {tokenizer.n_vocab} ids "
                       "(no pair is left to merge); the model uses that many")
    for line in notices:
        log(f"notice: {line}")
    model = GPT(cfg, tokenizer.n_vocab)
    record = {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        "inputs": corpus.inputs, "input_sha256": corpus.fingerprint, "words": corpus.words,
        "tokens": int(len(tokens)), "train_tokens": int(len(train_tokens)), "val_tokens": int(len(val_tokens)),
        "unknown_tokens": corpus.unknown, "n_vocab": tokenizer.n_vocab, "tokenizer_sha256": tokenizer_digest(tokenizer),
        "n_params": model.n_params(), "n_bytes": model.n_bytes(), "device": backend.device_name,
        "cpu_threads": backend.pool.threads(),
        "cpu_replicas": replica_count(cfg, cfg.batch_size // comm.size),
        "versions": backend.versions(), "notices": notices,
        "created": _dt.datetime.now().isoformat(timespec="seconds")}}
    if comm.rank == 0:
        store.write("tokenizer", guid, tokenizer.to_dict())
        store.write("config", guid, record)
    log(f"run {guid}: {model.n_params():,} parameters, vocabulary {tokenizer.n_vocab}, "
        f"{len(train_tokens):,} train / {len(val_tokens):,} validation tokens on {backend.device_name}")
    return train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, stop_at, comm=comm)


def resume(guid: str, root: str | Path = ".", log: Log = say, stop_at: int | None = None,
           overrides: dict[str, Any] | None = None, from_step: int | None = None, skip_batches: bool = False) -> str:
    """Continue a run from its last checkpoint, on the same text. ``overrides`` may change only
    resumable_keys() (e.g. a lower r_learn after a divergence, or n_steps to extend a finished run).

    ``from_step`` rolls back instead: training continues from that rollback point (an earlier
    checkpoint kept beside the latest); the points after it are removed, as the trajectory they
    belong to is abandoned. ``skip_batches`` also skips the batches between that point and the step
    where the run diverged (PaLM's recipe for loss spikes)."""
    store = RunStore(root)
    run = Run(store, guid)
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - set(resumable_keys()))
    if refused:
        raise ConfigError(f"--set {refused[0]}: cannot change when resuming; allowed: {', '.join(resumable_keys())}")
    cfg = run.cfg.replace(**overrides) if overrides else run.cfg
    # the threads the run started on (their count changes the rounding of BLAS and of block sums:
    # a resume on as many threads continues bit for bit), unless the resume sets them anew
    recorded = run.record["runtime"].get("cpu_threads")
    keep = isinstance(recorded, int) and recorded > 0 and "c_device_cpu_cores" not in overrides
    threads, thread_notice = (recorded, "") if keep else device.single_process_threads(cfg)
    comm = device.data_parallel(cfg, threads)
    log = log if comm.rank == 0 else quiet
    for notice in (thread_notice, run.cfg.migration_notice):
        if notice:
            log(f"notice: {notice}")
    path = store.path("checkpoint", guid)
    if from_step is not None:
        path = rollback_path(store, guid, from_step)
    if not path.exists():
        done = store.path("model", guid).exists()
        raise RunError(f"run {guid} has no checkpoint to resume" + (
            " (it finished before runs kept their final checkpoint)" if done else "; it is not resumable: delete it"))
    runtime = run.record["runtime"]
    inputs, digest = runtime.get("inputs"), runtime.get("input_sha256")
    if not (isinstance(inputs, list) and inputs and all(isinstance(p, str) for p in inputs) and isinstance(digest, str)):
        raise RunError(f"{store.path('config', guid)}: runtime.inputs and runtime.input_sha256 (the text the run "
                       "trains on) are missing or damaged; the run cannot be resumed without them")
    model_data, state = read_checkpoint(read_json(path, "checkpoint file"), str(path))
    rollback = None
    if from_step is not None:
        diverged = runtime.get("diverged") if isinstance(runtime.get("diverged"), dict) else {}
        at = diverged.get("step")
        skip = max(at - from_step, 0) if skip_batches and isinstance(at, int) else 0
        if skip_batches and not diverged:
            raise ConfigError(f"--skip-batches skips the batches between the rollback point and the divergence, "
                              f"but run {guid} did not stop on a divergence")
        state["batch_offset"] = int(state.get("batch_offset", 0)) + skip
        rollback = {"from_step": from_step, "skipped_batches": skip, "set": overrides,
                    **({"diverged": diverged} if diverged else {})}
    elif skip_batches:
        raise ConfigError("--skip-batches goes with --from-step S (a rollback point)")
    docs = read_documents(runtime["inputs"])
    if fingerprint(docs) != runtime["input_sha256"]:
        raise RunError(f"the input {runtime['inputs']} changed since run {guid} started; cannot resume exactly")
    tokens, _ = encode_documents(run.tokenizer, docs)
    train_tokens, val_tokens = token_split(cfg, tokens)
    total = schedule(cfg, Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle,
                                  cfg.c_window_offset)).total_steps
    step = state["step"]
    finished = store.path("model", guid).exists()
    if step > total or (step == total and finished):
        what = (f"run {guid} finished training at step {step} (its final checkpoint is kept)" if finished and step == total
                else f"the checkpoint {path.name} is at step {step}, past the run's end at step {total}")
        raise RunError(f"{what}: extend it with --set n_steps=N (N > {step}); nothing was changed")
    model = run.model_from(model_data, str(path), cfg)
    distributed.ranks_may_part()
    if comm.rank == 0:
        store.check_writable()
    comm.barrier()  # every rank has read the checkpoint before rank 0 may write
    if rollback is not None and comm.rank == 0:  # the rollback point becomes the latest checkpoint
        point = read_json(path, "checkpoint file")
        point["trainer"]["batch_offset"] = state["batch_offset"]  # a kill before the next checkpoint keeps the skip
        write_json(store.path("checkpoint", guid), point)
        for gone in store.prune_rollback_points(guid, cfg.n_rollback, after=from_step):
            log(f"removed rollback point {gone} (after step {from_step}: the trajectory left behind)")
        rest = {k: v for k, v in runtime.items() if k != "diverged"}  # the divergence moves into the history
        history = list(runtime.get("rollbacks", [])) + [rollback]
        store.write("config", guid, {**run.record, "settings": cfg.to_dict(), "runtime": {**rest, "rollbacks": history}})
        runtime = rest
        log(f"rolling back to step {from_step}" + (f", skipping {rollback['skipped_batches']} batches"
                                                   if rollback["skipped_batches"] else ""))
    elif overrides and comm.rank == 0:
        history = list(runtime.get("resumed", [])) + [{"step": step, "set": overrides}]
        store.write("config", guid, {**run.record, "settings": cfg.to_dict(), "runtime": {**runtime, "resumed": history}})
    if overrides:
        log(f"resuming with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}")
    log(f"resuming run {guid} at step {step} of {total}")
    return train_and_finish(store, guid, cfg, run.tokenizer, model, train_tokens, val_tokens, log,
                             stop_at, state, comm=comm)


def rollback_path(store: RunStore, guid: str, step: int) -> Path:
    """The checkpoint of a rollback point: a kept earlier one, or the latest when it is at ``step``."""
    if step in store.rollback_points(guid):
        return store.path("checkpoint", guid, f"_step_{step}")
    latest = store.path("checkpoint", guid)
    if latest.exists() and read_checkpoint(read_json(latest, "checkpoint file"), str(latest))[1]["step"] == step:
        return latest
    points = store.rollback_points(guid)
    raise RunError(f"--from-step {step}: run {guid} has no rollback point there (it has: "
                   f"{', '.join(map(str, points)) or 'none'}, and its latest checkpoint)")


def train_and_finish(store: RunStore, guid: str, cfg: Config, tokenizer: Tokenizer, model: GPT,
                      train_tokens: numpy.ndarray, val_tokens: numpy.ndarray, log: Log,
                      stop_at: int | None, state: dict[str, Any] | None = None, suffix: str = "",
                      comm: Communicator | None = None) -> str:
    comm = comm or Communicator()
    writer = comm.rank == 0  # every rank trains the same weights: rank 0 alone writes them

    saved = {"step": state["step"] if state is not None else None}  # the step of the latest checkpoint

    def save_checkpoint(trainer_state: dict[str, Any]) -> None:
        """The latest checkpoint; the one it replaces stays as a rollback point (cfg.n_rollback kept)."""
        if writer:
            if saved["step"] is not None and saved["step"] != trainer_state["step"]:
                store.keep_rollback_point(guid, saved["step"])
            store.write("checkpoint", guid, checkpoint_to_dict(model, trainer_state))
            saved["step"] = trainer_state["step"]
            store.prune_rollback_points(guid, cfg.n_rollback)

    def rollback_points() -> list[int]:
        return store.rollback_points(guid) + ([saved["step"]] if saved["step"] is not None else [])

    def save_word_checkpoint(label: str) -> None:
        if writer:
            store.write("model", guid, model_to_dict(model), f"{suffix}_chck_{label}" if suffix else f"_chck_{label}")

    words = len(tokenizer.decode(train_tokens).split())
    trainer = Trainer(cfg, model, train_tokens, val_tokens, log=log,
                      checkpoint=save_checkpoint if not suffix else None,
                      words_per_token=words / max(len(train_tokens), 1),
                      on_words=save_word_checkpoint if not suffix else None,
                      resume_hint=resume_command(guid, store.root) if not suffix else "", comm=comm,
                      rollback_points=rollback_points if not suffix else None)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (ValueError, TypeError, KeyError) as err:  # e.g. moments of another model's size
            raise FormatError(f"{store.path('checkpoint', guid)}: does not fit this run ({err})") from None
    try:
        summary = trainer.run(stop_at=stop_at)
    except Diverged as err:
        if not suffix and writer:  # said in the run's config, so that `runs` can tell a divergence from a kill
            record = store.read("config", guid)
            runtime = {**record.get("runtime", {}), "diverged": {"step": err.step, "message": str(err)}}
            store.write("config", guid, {**record, "runtime": runtime})
        raise
    if not writer:
        return guid
    # The model file is written last: a run is "finished" when it exists, so a kill anywhere before
    # leaves the final checkpoint, from which `train --resume` only redoes these writes.
    if not suffix:  # kept, so that the run can be extended: train --resume G --set n_steps=N
        save_checkpoint(trainer.state_dict())
    flops = model.flops_per_token()
    report = {"guid": guid, "n_params": model.n_params(), "n_bytes": model.n_bytes(),
              "flops_per_token": flops, "unigram_entropy": unigram_entropy(train_tokens),
              "device": backend.device_name, **summary}
    store.write("report", guid, report, suffix)
    save_run_chart(store, guid, suffix, report, log)
    gen = generate(model, empty_prompt(tokenizer), cfg.n_sample_tokens, cfg.r_sample_temp, cfg.n_top_k,
                   cfg.r_top_p, seed=cfg.seed, **sampling_ids(tokenizer))
    store.write("completion", guid, completion_record(tokenizer, "", gen, cfg.n_sample_tokens, {
        "temperature": cfg.r_sample_temp, "top_k": cfg.n_top_k, "top_p": cfg.r_top_p, "seed": cfg.seed}), suffix)
    store.write("model", guid, model_to_dict(model), suffix)
    log(f"validation loss {summary['final_val_loss']:.4f} (unigram entropy {report['unigram_entropy']:.4f}); "
        f"{summary['tokens_per_second']:,.0f} tokens/s; {summary['train_seconds']:.1f} s training")
    log("completion: " + tokenizer.decode(gen.tokens)[:300].replace("\n", "\n  "))
    log(guid)
    return guid
