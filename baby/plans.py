"""The plans - train, resume, finetune, inference, eval, delete, info, inspect, plot - shared by the CLI
and the notebook.

Each plan validates everything it was given (config, GUID, files) before it writes anything, and
writes every file atomically, so a bad request never damages an existing run.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import backend, distributed
from baby.charts import plot as plot_runs, save_run_chart
from baby.config import Config, ConfigError
from baby.distributed import Communicator
from baby.corpus import count_words, encode_documents, fingerprint, read_documents
from baby.data import Batches, split_stream
from baby.formats import FormatError, checkpoint_to_dict, load_weights, model_to_dict, model_vocab, read_checkpoint
from baby.generate import generate
from baby.jsonio import FileFault
from baby.memory import check_fits
from baby.nn.model import GPT
from baby.nn.network.lor import freeze_base
from baby.progress import ProgressLog
from baby.replicas import replica_count
from baby.runs import RunError, RunStore, check_guid, new_guid
from baby.tokenizers import Tokenizer, tokenizer_digest, tokenizer_from_dict, train_tokenizer
from baby.train import Diverged, Trainer, schedule, unigram_entropy

Log = Callable[[str], None]

__all__ = ["train", "resume", "finetune", "inference", "delete", "info", "evaluate", "inspect", "plot_runs", "PLANS",
           "run_plan", "model_to_dict", "load_weights", "Run", "RESUME_SETTINGS", "format_info", "export", "import_hf"]


def say(line: str) -> None:
    """Default log: print and flush, so progress shows through pipes and in notebooks."""
    print(line, flush=True)


DEFAULT_INPUT = "inputs/shakespeare.txt"
FINETUNED = "_finetuned"
# Settings that may change when a run is resumed: they steer the rest of the schedule and the
# bookkeeping, never the model or the data, so the checkpoint stays valid.
RESUME_SETTINGS = ("r_learn", "r_learn_min", "s_warmup", "r_clip", "n_steps", "n_epochs", "n_eval_every",
                   "n_log_every", "n_checkpoint_every", "c_device_cpu_cores", "c_device_cpu_parallel",
                   "n_sample_tokens")


# ---- building blocks --------------------------------------------------------------------------------

def as_config(config: Config | dict[str, Any] | str | Path, overrides: dict[str, Any] | None = None) -> Config:
    if isinstance(config, Config):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, dict):
        return Config({**config, **(overrides or {})}, source="settings")
    return Config.load(config, overrides)


def select_backend(cfg: Config, threads: int = 0) -> None:
    """The device, dtype and CPU threads of ``cfg``; ``threads`` (when given) replaces c_device_cpu_cores."""
    backend.use(cfg.c_device, threads or cfg.c_device_cpu_cores, cfg.c_device_gpu_core, cfg.c_device_gpu_tensor,
                cfg.d_type)


def cpu_threads(cfg: Config) -> tuple[int, str]:
    """The CPU threads a run starting now uses, and a notice when it yields busy cores: with
    c_device_cpu_yield, only the cores other processes leave free (at least 1). Beside a process that
    keeps one of 2 cores busy, 2 threads trained the CPU preset at 5,096 tokens/s, 1 at 10,796."""
    asked = cfg.c_device_cpu_cores or backend.cpu_count()
    if cfg.c_device != "cpu" or asked == 1 or not cfg.c_device_cpu_yield:
        return asked, ""
    cores = backend.cpu_count()
    busy = backend.busy_cores()
    free = max(1, min(asked, cores - busy))
    if free == asked:
        return asked, ""
    return free, (f"c_device_cpu_cores={cfg.c_device_cpu_cores}: other processes keep {busy} of the {cores} cores "
                  f"busy, so this runs on {free} thread{'s' if free > 1 else ''} (threads waiting for a busy core "
                  "are several times slower); c_device_cpu_yield=0 keeps them all")


def single_process_threads(cfg: Config) -> tuple[int, str]:
    """cpu_threads for a run of one process; ranks of a data-parallel job keep their settings (on
    one machine they are each other's busy cores, by design)."""
    return cpu_threads(cfg) if distributed.launched_size() in (None, 1) else (0, "")


def data_parallel(cfg: Config, threads: int = 0) -> Communicator:
    """Select the backend and return this process's communicator (one rank: the no-op one). Ranks
    sharing a machine take GPUs c_device_gpu_core + local rank; a batch that cannot be split evenly
    is refused before anything is written. ``threads`` replaces c_device_cpu_cores when given."""
    comm = distributed.mpi_world()
    distributed.check_split(cfg.batch_size, comm.size)
    if comm.size > 1 and cfg.c_device == "gpu":
        cfg = cfg.replace(c_device_gpu_core=cfg.c_device_gpu_core + distributed.local_rank())
    select_backend(cfg, threads)
    return distributed.world()


def quiet(_line: str) -> None:
    """The log of ranks other than 0: rank 0 alone prints."""


def sampling_ids(tokenizer: Tokenizer) -> dict[str, tuple[int, ...]]:
    """Never sample <unk>, <bos> or <pad>; <eos> ends a completion."""
    return {"banned": (tokenizer.unk_id, tokenizer.bos_id, tokenizer.pad_id), "stop": (tokenizer.eos_id,)}


def empty_prompt(tokenizer: Tokenizer) -> list[int]:
    """Training streams start every document with <bos>, so <bos> is the natural empty prompt."""
    return [tokenizer.bos_id]


def completion_record(tokenizer: Tokenizer, prompt: str, gen: Any, max_tokens: int,
                      settings: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, "completion": tokenizer.decode(gen.tokens), "tokens": gen.tokens,
            "max_tokens": max_tokens, "seconds": gen.seconds, "tokens_per_second": gen.tokens_per_second,
            "kv_cache": gen.used_cache, "prefills": gen.prefills, "notices": gen.notices, **settings,
            "created": _dt.datetime.now().isoformat(timespec="seconds")}


def token_split(cfg: Config, tokens: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    try:
        return split_stream(tokens, cfg.r_split, cfg.n_ctx)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def schedule_notices(cfg: Config, train_tokens: numpy.ndarray) -> list[str]:
    """A warmup that does not end before the run does never reaches r_learn: say so before any work."""
    plan = schedule(cfg, Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle, cfg.c_sequence))
    if plan.warmup and plan.warmup >= plan.total_steps:
        return [f"s_warmup={cfg.s_warmup!r} gives {plan.warmup} warmup steps for a run of {plan.total_steps}: "
                f"the learning rate never reaches r_learn={cfg.r_learn:g} (use s_warmup=auto or a fraction)"]
    return []


def check_memory(cfg: Config, n_vocab: int) -> list[str]:
    """Refuse a step the machine cannot hold; a warning line when it exceeds what is free now."""
    warning = check_fits(cfg, n_vocab, *backend.device_memory())
    return [warning] if warning else []


def resume_command(guid: str, root: str | Path) -> str:
    where = "" if Path(root) == Path(".") else f" --root {root}"
    return f"python -m baby train --resume {guid}{where}"


class Run:
    """A GUID's saved files, loaded and checked: config, tokenizer and (lazily) the model. Every
    damaged file is refused with one line naming it."""

    def __init__(self, store: RunStore, guid: str, suffix: str = "") -> None:
        self.store, self.guid, self.suffix = store, guid, suffix
        if not store.exists(guid, suffix):
            what = "finetuned run" if suffix == FINETUNED else "run"
            raise RunError(f"no {what} {guid} under {store.root.resolve()} "
                           f"(missing {store.path('config', guid, suffix).name})")
        store.clean_orphans(guid)
        config_path = store.path("config", guid, suffix)
        self.record = store.read("config", guid, suffix)
        settings, runtime = self.record.get("settings"), self.record.get("runtime")
        if not isinstance(settings, dict) or not isinstance(runtime, dict):
            raise RunError(f"{config_path}: not a run config (needs 'settings' and 'runtime' objects)")
        self.cfg = Config(settings, source=str(config_path))
        token_path = store.path("tokenizer", guid, suffix)
        try:
            self.tokenizer = tokenizer_from_dict(store.read("tokenizer", guid, suffix))
        except (ValueError, TypeError, KeyError, IndexError) as err:
            if isinstance(err, (FileFault, RunError)):
                raise
            raise RunError(f"{token_path}: not a usable tokenizer ({err})") from None
        if self.tokenizer.kind != self.cfg.c_tokenizer:
            raise RunError(f"{token_path}: a {self.tokenizer.kind} tokenizer, but the config says "
                           f"c_tokenizer={self.cfg.c_tokenizer!r}")
        digest = runtime.get("tokenizer_sha256")
        if digest and digest != tokenizer_digest(self.tokenizer):
            raise RunError(f"{token_path}: edited since the run was trained (its sha256 differs from "
                           f"{config_path.name}); its ids would decode to wrong text")
        n_vocab = runtime.get("n_vocab")
        if isinstance(n_vocab, int) and n_vocab != self.tokenizer.n_vocab:
            raise RunError(f"{token_path}: {self.tokenizer.n_vocab} ids, but {config_path.name} records "
                           f"n_vocab {n_vocab}")

    def model(self, checkpoint: str = "", cfg: Config | None = None) -> GPT:
        """The saved weights in a model built from ``cfg`` (default: the run's own settings; finetune
        passes its overrides, e.g. c_freeze_base)."""
        cfg = cfg or self.cfg
        select_backend(cfg)
        suffix = f"_chck_{checkpoint}" if checkpoint else self.suffix
        path = self.store.path("model", self.guid, suffix)
        if checkpoint and not path.exists():
            found = sorted(p.stem.split("_chck_")[1] for p in self.store.files(self.guid) if "_chck_" in p.name)
            raise RunError(f"run {self.guid} has no learning-curve checkpoint {checkpoint!r} "
                           f"(it has: {', '.join(found) or 'none'})")
        return self.model_from(self.store.read("model", self.guid, suffix), str(path), cfg)

    def model_from(self, data: Any, where: str, cfg: Config | None = None) -> GPT:
        """A model built from ``cfg`` with the weights of a model file's content, all of it checked."""
        n_vocab = model_vocab(data, where)
        if n_vocab != self.tokenizer.n_vocab:
            raise RunError(f"{where}: a model of {n_vocab} ids, but the tokenizer "
                           f"{self.store.path('tokenizer', self.guid, self.suffix).name} has {self.tokenizer.n_vocab}")
        model = GPT(cfg or self.cfg, n_vocab)
        load_weights(model, data, where)
        return model


# ---- train / resume ---------------------------------------------------------------------------------

@dataclass
class Corpus:
    """Training text read and tokenized: what ``train`` needs before it builds a model. A study makes
    it once and trains every cell on it (``prepare_corpus`` is the only way to make one)."""

    inputs: list[str]
    fingerprint: str
    words: int
    tokenizer: Tokenizer
    tokens: numpy.ndarray
    unknown: int


def prepare_corpus(cfg: Config, inputs: list[str] | None = None, log: Log = say) -> Corpus:
    """Read ``inputs`` (default: the shakespeare text), train cfg's tokenizer on them and encode them
    (long phases log progress with an ETA)."""
    inputs = [str(p) for p in (inputs or [DEFAULT_INPUT])]
    docs = read_documents(inputs)
    tokenizer = train_tokenizer(cfg.c_tokenizer, "\n".join(docs), n_vocab=cfg.n_vocab,
                                progress=ProgressLog(log, "BPE merges learned"))
    tokens, unknown = encode_documents(tokenizer, docs, ProgressLog(log, "characters tokenized"))
    return Corpus(inputs, fingerprint(docs), count_words(docs), tokenizer, tokens, unknown)


def train(config: Config | dict[str, Any] | str | Path, inputs: list[str] | None = None,
          root: str | Path = ".", overrides: dict[str, Any] | None = None, log: Log = say,
          stop_at: int | None = None, corpus: Corpus | None = None, guid: str | None = None) -> str:
    """Train a new model; returns its GUID. ``stop_at`` interrupts after that step (tests); ``corpus``
    is text already tokenized (by ``prepare_corpus``, for the same tokenizer settings); ``guid``
    names the new run (a study records it before training starts). Everything that can be refused
    is refused before the first file is written."""
    cfg = as_config(config, overrides)
    store = RunStore(root)
    threads, thread_notice = single_process_threads(cfg)
    comm = data_parallel(cfg, threads)
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
    return _train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, stop_at, comm=comm)


def resume(guid: str, root: str | Path = ".", log: Log = say, stop_at: int | None = None,
           overrides: dict[str, Any] | None = None) -> str:
    """Continue a run from its last checkpoint, on the same text. ``overrides`` may change only
    RESUME_SETTINGS (e.g. a lower r_learn after a divergence, or n_steps to extend a finished run)."""
    store = RunStore(root)
    run = Run(store, guid)
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - set(RESUME_SETTINGS))
    if refused:
        raise ConfigError(f"--set {refused[0]}: cannot change when resuming; allowed: {', '.join(RESUME_SETTINGS)}")
    cfg = run.cfg.replace(**overrides) if overrides else run.cfg
    # the threads the run started on (their count changes the rounding of BLAS and of block sums:
    # a resume on as many threads continues bit for bit), unless the resume sets them anew
    recorded = run.record["runtime"].get("cpu_threads")
    keep = isinstance(recorded, int) and recorded > 0 and "c_device_cpu_cores" not in overrides
    threads, thread_notice = (recorded, "") if keep else single_process_threads(cfg)
    comm = data_parallel(cfg, threads)
    log = log if comm.rank == 0 else quiet
    if thread_notice:
        log(f"notice: {thread_notice}")
    path = store.path("checkpoint", guid)
    if not path.exists():
        done = store.path("model", guid).exists()
        raise RunError(f"run {guid} has no checkpoint to resume" + (
            " (it finished before runs kept their final checkpoint)" if done else "; it is not resumable: delete it"))
    runtime = run.record["runtime"]
    model_data, state = read_checkpoint(store.read("checkpoint", guid), str(path))
    docs = read_documents(runtime["inputs"])
    if fingerprint(docs) != runtime["input_sha256"]:
        raise RunError(f"the input {runtime['inputs']} changed since run {guid} started; cannot resume exactly")
    tokens, _ = encode_documents(run.tokenizer, docs)
    train_tokens, val_tokens = token_split(cfg, tokens)
    total = schedule(cfg, Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle,
                                  cfg.c_sequence)).total_steps
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
    if overrides and comm.rank == 0:
        history = list(runtime.get("resumed", [])) + [{"step": step, "set": overrides}]
        store.write("config", guid, {**run.record, "settings": cfg.to_dict(), "runtime": {**runtime, "resumed": history}})
    if overrides:
        log(f"resuming with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}")
    log(f"resuming run {guid} at step {step} of {total}")
    return _train_and_finish(store, guid, cfg, run.tokenizer, model, train_tokens, val_tokens, log,
                             stop_at, state, comm=comm)


def _train_and_finish(store: RunStore, guid: str, cfg: Config, tokenizer: Tokenizer, model: GPT,
                      train_tokens: numpy.ndarray, val_tokens: numpy.ndarray, log: Log,
                      stop_at: int | None, state: dict[str, Any] | None = None, suffix: str = "",
                      comm: Communicator | None = None) -> str:
    comm = comm or Communicator()
    writer = comm.rank == 0  # every rank trains the same weights: rank 0 alone writes them

    def save_checkpoint(trainer_state: dict[str, Any]) -> None:
        if writer:
            store.write("checkpoint", guid, checkpoint_to_dict(model, trainer_state))

    def save_word_checkpoint(label: str) -> None:
        if writer:
            store.write("model", guid, model_to_dict(model), f"{suffix}_chck_{label}" if suffix else f"_chck_{label}")

    words = len(tokenizer.decode(train_tokens).split())
    trainer = Trainer(cfg, model, train_tokens, val_tokens, log=log,
                      checkpoint=save_checkpoint if not suffix else None,
                      words_per_token=words / max(len(train_tokens), 1),
                      on_words=save_word_checkpoint if not suffix else None,
                      resume_hint=resume_command(guid, store.root) if not suffix else "", comm=comm)
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
            runtime = {**record.get("runtime", {}), "diverged": {"step": trainer.step, "message": str(err)}}
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


# ---- finetune ---------------------------------------------------------------------------------------

def finetune(guid: str, inputs: list[str], root: str | Path = ".", overrides: dict[str, Any] | None = None,
             log: Log = say) -> str:
    """Train a run further on new text; writes the ``_finetuned`` files. New symbols grow the
    vocabulary (new embedding/head rows; old weights unchanged)."""
    store = RunStore(root)
    run = Run(store, guid)
    cfg = run.cfg.replace(**overrides) if overrides else run.cfg
    threads, thread_notice = single_process_threads(cfg)
    comm = data_parallel(cfg, threads)
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
    return _train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, None,
                             suffix=FINETUNED, comm=comm)


# ---- inference ----------------------------------------------------------------------------------------

def check_sampling(temperature: float, top_k: int, top_p: float, seed: int | None, max_tokens: int) -> None:
    checks = [
        (isinstance(max_tokens, int) and max_tokens >= 0, f"--max-tokens={max_tokens!r}: must be an integer >= 0"),
        (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0,
         f"--temperature={temperature!r}: must be a finite number >= 0 (0: greedy)"),
        (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1,
         f"--top-p={top_p!r}: allowed 0 < top-p <= 1 (1: off)"),
        (isinstance(top_k, int) and top_k >= 0, f"--top-k={top_k!r}: must be an integer >= 0 (0: off)"),
        (seed is None or (isinstance(seed, int) and 0 <= seed < 2 ** 63), f"--seed={seed!r}: must be an integer >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_text(text: str, what: str) -> None:
    """Text must be encodable: lone surrogates (from undecodable command-line bytes) are not characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(f"{what}: not valid Unicode at character {err.start} (a lone surrogate; "
                          "was it typed in a non-UTF-8 terminal?)") from None


class TextStream:
    """Writes the text of the tokens generated so far as it grows. A byte-level token can end inside
    a character: a trailing U+FFFD is held back until the next token completes it (or the end)."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None]) -> None:
        self.tokenizer, self.write, self.shown = tokenizer, write, 0

    def __call__(self, tokens: list[int], final: bool = False) -> None:
        text = self.tokenizer.decode(tokens)
        ready = text if final else text.rstrip("\ufffd")
        if len(ready) > self.shown:
            self.write(ready[self.shown:])
            self.shown = len(ready)


def inference(guid: str, prompt: str = "", max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
              top_p: float = 1.0, seed: int | None = None, use_cache: bool = True, root: str | Path = ".",
              finetuned: bool = False, checkpoint: str = "", log: Log = say, num_samples: int = 1,
              stream: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate ``num_samples`` completions (seeds seed, seed+1, ...), each saved to its own file.
    ``stream`` receives the text as it is generated (the CLI writes it to the terminal); without it
    the whole text is logged at the end. Returns the last record; with several samples, ``samples``
    holds them all."""
    store = RunStore(root)
    check_sampling(temperature, top_k, top_p, seed, max_tokens)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"--num-samples={num_samples!r}: must be an integer >= 1")
    check_text(prompt, "--prompt")
    run = Run(store, guid, FINETUNED if finetuned else "")
    model = run.model(checkpoint)
    ids = list(run.tokenizer.encode(prompt)) if prompt else empty_prompt(run.tokenizer)
    if run.tokenizer.unknown_count:
        log(f"notice: {run.tokenizer.unknown_count} prompt symbols are not in the vocabulary (<unk>)")
    seed = run.cfg.seed if seed is None else seed
    records = []
    for sample in range(num_samples):
        if num_samples > 1:
            log(f"sample {sample + 1} of {num_samples} (seed {seed + sample})")
        shown = TextStream(run.tokenizer, stream) if stream is not None else None
        if stream is not None:
            stream(prompt)
        gen = generate(model, ids, max_tokens, temperature, top_k, top_p, seed + sample, use_cache,
                       **sampling_ids(run.tokenizer), on_token=shown)
        if shown is not None:
            shown(gen.tokens, final=True)
            stream("\n")
        for notice in gen.notices:
            log(f"notice: {notice}")
        record = completion_record(run.tokenizer, prompt, gen, max_tokens, {
            "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed + sample,
            "finetuned": finetuned, "checkpoint": checkpoint or None})
        if stream is None:
            log(prompt + record["completion"])
        records.append(record)
        try:
            path = save_completion(store, guid, record, finetuned)
        except (FileFault, OSError) as err:  # the text was printed; say that it was not kept
            log(f"notice: the completion was not saved ({err})")
            record["path"] = None
            continue
        log(f"{len(gen.tokens)} tokens in {gen.seconds:.2f} s ({gen.tokens_per_second:,.1f} tokens/s, "
            f"cache {'on' if use_cache else 'off'}) -> {path}")
        record["path"] = str(path)
    if num_samples > 1:
        return {**records[-1], "samples": records}
    return records[-1]


def save_completion(store: RunStore, guid: str, record: dict[str, Any], finetuned: bool) -> Path:
    """outputs/completion_<guid>[_finetuned]_<stamp>.json, created exclusively: inferences started in
    the same second each keep their own file (the stamp moves on by a second per collision)."""
    stamp = _dt.datetime.now()
    base = FINETUNED if finetuned else ""
    for _ in range(10_000):
        suffix = f"{base}_{stamp.strftime('%Y%m%d%H%M%S')}"
        if store.create("completion", guid, record, suffix):
            return store.path("completion", guid, suffix)
        stamp += _dt.timedelta(seconds=1)
    raise RunError(f"no free completion file name for run {guid}")


# ---- delete / info ------------------------------------------------------------------------------------

def delete(guid: str, root: str | Path = ".", log: Log = say) -> list[Path]:
    """Remove every file of a run (and the temp files of killed writes); checks first that each can
    be removed, so a failure never leaves a half-deleted run."""
    store = RunStore(root)
    files = store.files(guid) + store.orphans(guid, live_too=True)
    if not files:
        raise RunError(f"no files of run {guid} under {store.root.resolve()}")
    store.check_removable(files)
    for p in files:
        try:
            p.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (a concurrent delete)
        log(f"removed {p}")
    return files


def state_of(store: RunStore, guid: str, cfg: Config | None = None) -> dict[str, Any]:
    """Where a run stands: finished (extendable), interrupted (resumable) or not resumable."""
    checkpoint, model = store.path("checkpoint", guid), store.path("model", guid)
    step = None
    if checkpoint.exists():
        try:
            _, trainer = read_checkpoint(store.read("checkpoint", guid), str(checkpoint))
            step = trainer["step"]
        except (RunError, FormatError, FileFault) as err:
            return {"state": "checkpoint damaged", "detail": str(err)}
    resume = resume_command(guid, store.root)
    if model.exists():
        out = {"state": "finished", "steps": step}
        if step is not None:
            out["extend"] = f"{resume} --set n_steps=N (N > {step})"
        return out
    if step is not None:
        return {"state": "interrupted, resumable", "steps": step, "resume": resume}
    return {"state": "not resumable; delete it", "detail": "killed before its first checkpoint"}


def info(guid: str, root: str | Path = ".") -> dict[str, Any]:
    store = RunStore(root)
    run = Run(store, guid)
    select_backend(run.cfg.replace(c_device="cpu") if run.cfg.c_device == "gpu" and not backend.gpu_available()
                   else run.cfg)
    model = GPT(run.cfg, run.tokenizer.n_vocab)  # sizes and FLOPs need only the shapes
    flops = model.flops_per_token()
    out: dict[str, Any] = {
        "guid": guid, "settings": run.cfg.to_dict(), "runtime": run.record.get("runtime", {}),
        "n_params": model.n_params(), "n_bytes": model.n_bytes(), "n_vocab": run.tokenizer.n_vocab,
        "flops_per_token": {"training": flops["training"], "inference": flops["forward"]},
        "files": {p.name: p.stat().st_size for p in store.files(guid)},
        "status": state_of(store, guid),
    }
    report_path = store.path("report", guid)
    if report_path.exists():
        r = store.read("report", guid)
        out["training"] = {k: r.get(k) for k in ("steps", "epochs", "tokens_trained", "train_seconds",
                                                 "tokens_per_second", "achieved_gflops", "final_train_loss",
                                                 "final_val_loss", "best_val_loss", "unigram_entropy")}
    out["checkpoints"] = sorted(p.stem.split("_chck_")[1] for p in store.files(guid) if "_chck_" in p.name)
    return out


def format_info(data: dict[str, Any]) -> str:
    status = data.get("status", {})
    lines = [f"run {data['guid']}",
             f"  status            {status.get('state', '?')}"
             + "".join(f"; {k} {v}" for k, v in status.items() if k != "state" and v is not None),
             f"  parameters        {data['n_params']:,} ({data['n_bytes'] / 2**20:.2f} MiB)",
             f"  vocabulary        {data['n_vocab']}",
             f"  FLOPs per token   training {data['flops_per_token']['training']:,.0f}, "
             f"inference {data['flops_per_token']['inference']:,.0f}"]
    for key, value in (data.get("training") or {}).items():
        if value is not None:
            lines.append(f"  {key:<17} {value:,.4f}" if isinstance(value, float) else f"  {key:<17} {value}")
    lines.append("  settings")
    lines += [f"    {k:<20} {v!r}" for k, v in data["settings"].items()]
    lines.append("  files")
    lines += [f"    {name:<60} {size:,} bytes" for name, size in data["files"].items()]
    if data.get("checkpoints"):
        lines.append("  learning-curve checkpoints: " + ", ".join(data["checkpoints"]))
    return "\n".join(lines)


# ---- the table of plans: the CLI and the notebook both dispatch through it ----------------------------

def evaluate(guid: str, task: str, **options: Any) -> dict[str, Any]:
    """Score a run (BLiMP minimal pairs or held-out perplexity); see ``baby.evaluate.run.evaluate``."""
    from baby.evaluate.run import evaluate as run_evaluation  # noqa: PLC0415 - it builds on this module

    return run_evaluation(guid, task, **options)


def info_plan(guid: str | None = None, root: str | Path = ".", as_json: bool = False, log: Log = say,
              model: str | None = None, config: str | None = None, overrides: dict[str, Any] | None = None,
              probe: bool = True) -> dict[str, Any]:
    """Describe a run (``guid``), a model file alone (``model``) or a config before training (``config``)."""
    from baby import describe  # noqa: PLC0415 - it builds on this module

    if sum(x is not None for x in (guid, model, config)) != 1:
        raise ConfigError("info needs exactly one of --guid, --model or --config")
    if model is not None:
        data = describe.model_file_info(model)
        text = describe.format_model_info(data)
    elif config is not None:
        data = describe.config_info(as_config(config, overrides), probe=probe)
        text = describe.format_config_info(data, str(config))
    else:
        data = info(guid, root=root)
        text = format_info(data)
    log(json.dumps(data, indent=1) if as_json else text)
    return data


def export(guid: str, out: str | Path, **options: Any) -> Path:
    """A run as a Hugging Face directory (GPT2LMHeadModel or LlamaForCausalLM); see ``baby.hf.export``."""
    from baby.hf.export import export as export_run  # noqa: PLC0415 - it builds on this module

    return export_run(guid, out, **options)


def import_hf(source: str | Path, **options: Any) -> str:
    """A Hugging Face GPT-2 or LLaMA directory as a new run; see ``baby.hf.import_``."""
    from baby.hf.import_ import import_run  # noqa: PLC0415

    return import_run(source, **options)


def runs_plan(root: str | Path = ".", as_json: bool = False, log: Log = say) -> list[dict[str, Any]]:
    """One line per run under ``root`` (finetuned runs and checkpoints beneath); see ``baby.table``."""
    from baby.table import format_runs, runs  # noqa: PLC0415 - it builds on this module

    rows = runs(root)
    log(json.dumps(rows, indent=1) if as_json else format_runs(rows, root))
    return rows


def inspect(guid: str, prompt: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """The inside views of a run on a prompt (attention, induction, conv, next tokens); see ``baby.inside``."""
    from baby.inside import inspect_run  # noqa: PLC0415 - it builds on this module

    return inspect_run(guid, prompt, out, **options)


PLANS: dict[str, Callable[..., Any]] = {
    "train": train, "resume": resume, "finetune": finetune, "inference": inference,
    "eval": evaluate, "delete": delete, "info": info_plan, "export": export, "import": import_hf,
    "runs": runs_plan, "inspect": inspect, "plot": plot_runs,
}


def run_plan(plan: str, **arguments: Any) -> Any:
    """Run one plan by name with its keyword arguments: ``run_plan("inference", guid=g, prompt="A")``."""
    if plan not in PLANS:
        raise ConfigError(f"plan={plan!r}: allowed {', '.join(PLANS)}")
    return PLANS[plan](**arguments)
