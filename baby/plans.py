"""The plans - train, resume, finetune, inference, delete, info - shared by the CLI and the notebook.

Each plan validates everything it was given (config, GUID, files) before it writes anything, and
writes every file atomically, so a bad request never damages an existing run.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import backend
from baby.config import Config, ConfigError
from baby.corpus import count_words, encode_documents, fingerprint, read_documents
from baby.data import split_stream
from baby.generate import generate
from baby.nn.model import GPT
from baby.nn.network.lor import freeze_base
from baby.runs import RunError, RunStore, decode_tensor, encode_tensor, new_guid
from baby.tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from baby.train import Trainer, unigram_entropy

Log = Callable[[str], None]


def say(line: str) -> None:
    """Default log: print and flush, so progress shows through pipes and in notebooks."""
    print(line, flush=True)


DEFAULT_INPUT = "inputs/shakespeare.txt"
FINETUNED = "_finetuned"


# ---- building blocks --------------------------------------------------------------------------------

def as_config(config: Config | dict[str, Any] | str | Path, overrides: dict[str, Any] | None = None) -> Config:
    if isinstance(config, Config):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, dict):
        return Config({**config, **(overrides or {})}, source="settings")
    return Config.load(config, overrides)


def select_backend(cfg: Config) -> None:
    backend.use(cfg.c_device, cfg.c_device_cpu_cores, cfg.c_device_gpu_core, cfg.c_device_gpu_tensor, cfg.d_type)


def model_to_dict(model: GPT) -> dict[str, Any]:
    return {"format": "baby-model/1", "n_vocab": model.n_vocab,
            "tensors": {name: encode_tensor(backend.to_host(p.data)) for name, p in model.named_parameters()}}


def load_weights(model: GPT, data: dict[str, Any], where: str) -> None:
    tensors = data.get("tensors")
    if data.get("format") != "baby-model/1" or not isinstance(tensors, dict):
        raise RunError(f"{where}: not a baby model file")
    params = dict(model.named_parameters())
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise RunError(f"{where}: tensors do not match the config (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, p in params.items():
        array = decode_tensor(tensors[name], f"{where}: {name}")
        if tuple(array.shape) != p.shape:
            raise RunError(f"{where}: {name} has shape {array.shape}, the config needs {p.shape}")
        p.data[...] = backend.asarray(array.astype(p.data.dtype))


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


class Run:
    """A GUID's saved files, loaded: config, tokenizer and (lazily) the model."""

    def __init__(self, store: RunStore, guid: str, suffix: str = "") -> None:
        self.store, self.guid, self.suffix = store, guid, suffix
        if not store.exists(guid, suffix):
            what = "finetuned run" if suffix == FINETUNED else "run"
            raise RunError(f"no {what} {guid} under {store.root.resolve()} "
                           f"(missing {store.path('config', guid, suffix).name})")
        self.record = store.read("config", guid, suffix)
        self.cfg = Config(self.record.get("settings", {}), source=str(store.path("config", guid, suffix)))
        self.tokenizer = tokenizer_from_dict(store.read("tokenizer", guid, suffix))

    def model(self, checkpoint: str = "", cfg: Config | None = None) -> GPT:
        """The saved weights in a model built from ``cfg`` (default: the run's own settings; finetune
        passes its overrides, e.g. c_freeze_base)."""
        cfg = cfg or self.cfg
        select_backend(cfg)
        suffix = f"_chck_{checkpoint}" if checkpoint else self.suffix
        path = self.store.path("model", self.guid, suffix)
        data = self.store.read("model", self.guid, suffix)
        model = GPT(cfg, int(data.get("n_vocab", self.tokenizer.n_vocab)))
        load_weights(model, data, str(path))
        return model


# ---- train / resume ---------------------------------------------------------------------------------

def train(config: Config | dict[str, Any] | str | Path, inputs: list[str] | None = None,
          root: str | Path = ".", overrides: dict[str, Any] | None = None, log: Log = say,
          stop_at: int | None = None) -> str:
    """Train a new model; returns its GUID. ``stop_at`` interrupts after that step (tests)."""
    cfg = as_config(config, overrides)
    store = RunStore(root)
    inputs = [str(p) for p in (inputs or [DEFAULT_INPUT])]
    docs = read_documents(inputs)
    select_backend(cfg)
    tokenizer = train_tokenizer(cfg.c_tokenizer, "\n".join(docs), n_vocab=cfg.n_vocab)
    tokens, unknown = encode_documents(tokenizer, docs)
    train_tokens, val_tokens = split_stream(tokens, cfg.r_split, cfg.n_ctx)
    guid = new_guid()
    model = GPT(cfg, tokenizer.n_vocab)
    record = {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        "inputs": inputs, "input_sha256": fingerprint(docs), "words": count_words(docs),
        "tokens": int(len(tokens)), "train_tokens": int(len(train_tokens)), "val_tokens": int(len(val_tokens)),
        "unknown_tokens": unknown, "n_vocab": tokenizer.n_vocab, "n_params": model.n_params(),
        "n_bytes": model.n_bytes(), "device": backend.device_name, "versions": backend.versions(),
        "created": _dt.datetime.now().isoformat(timespec="seconds")}}
    store.write("tokenizer", guid, tokenizer.to_dict())
    store.write("config", guid, record)
    log(f"run {guid}: {model.n_params():,} parameters, vocabulary {tokenizer.n_vocab}, "
        f"{len(train_tokens):,} train / {len(val_tokens):,} validation tokens on {backend.device_name}")
    return _train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, stop_at)


def resume(guid: str, root: str | Path = ".", log: Log = say, stop_at: int | None = None) -> str:
    """Continue an interrupted run from its last checkpoint, on the same text."""
    store = RunStore(root)
    run = Run(store, guid)
    path = store.path("checkpoint", guid)
    if not path.exists():
        done = store.path("model", guid).exists()
        raise RunError(f"run {guid} has no checkpoint to resume" + (" (it finished training)" if done else ""))
    runtime = run.record["runtime"]
    docs = read_documents(runtime["inputs"])
    if fingerprint(docs) != runtime["input_sha256"]:
        raise RunError(f"the input {runtime['inputs']} changed since run {guid} started; cannot resume exactly")
    select_backend(run.cfg)
    tokens, _ = encode_documents(run.tokenizer, docs)
    train_tokens, val_tokens = split_stream(tokens, run.cfg.r_split, run.cfg.n_ctx)
    checkpoint = store.read("checkpoint", guid)
    model = GPT(run.cfg, run.tokenizer.n_vocab)
    load_weights(model, checkpoint["model"], str(path))
    log(f"resuming run {guid} at step {checkpoint['trainer']['step']}")
    return _train_and_finish(store, guid, run.cfg, run.tokenizer, model, train_tokens, val_tokens, log,
                             stop_at, checkpoint["trainer"])


def _train_and_finish(store: RunStore, guid: str, cfg: Config, tokenizer: Tokenizer, model: GPT,
                      train_tokens: numpy.ndarray, val_tokens: numpy.ndarray, log: Log,
                      stop_at: int | None, state: dict[str, Any] | None = None, suffix: str = "") -> str:
    def save_checkpoint(trainer_state: dict[str, Any]) -> None:
        for key in ("adam_m", "adam_v"):
            trainer_state[key] = encode_tensor(trainer_state[key])
        store.write("checkpoint", guid, {"format": "baby-checkpoint/1", "model": model_to_dict(model),
                                         "trainer": trainer_state})

    def save_word_checkpoint(label: str) -> None:
        store.write("model", guid, model_to_dict(model), f"{suffix}_chck_{label}" if suffix else f"_chck_{label}")

    words = len(tokenizer.decode(train_tokens).split())
    trainer = Trainer(cfg, model, train_tokens, val_tokens, log=log,
                      checkpoint=save_checkpoint if not suffix else None,
                      words_per_token=words / max(len(train_tokens), 1),
                      on_words=save_word_checkpoint if not suffix else None)
    if state is not None:
        state = dict(state)
        for key in ("adam_m", "adam_v"):
            state[key] = decode_tensor(state[key], f"checkpoint {key}")
        trainer.load_state_dict(state)
    summary = trainer.run(stop_at=stop_at)
    store.write("model", guid, model_to_dict(model), suffix)
    flops = model.flops_per_token()
    report = {"guid": guid, "n_params": model.n_params(), "n_bytes": model.n_bytes(),
              "flops_per_token": flops, "unigram_entropy": unigram_entropy(train_tokens),
              "device": backend.device_name, **summary}
    store.write("report", guid, report, suffix)
    gen = generate(model, empty_prompt(tokenizer), cfg.n_sample_tokens, cfg.r_sample_temp, cfg.n_top_k,
                   cfg.r_top_p, seed=cfg.seed, **sampling_ids(tokenizer))
    store.write("completion", guid, completion_record(tokenizer, "", gen, cfg.n_sample_tokens, {
        "temperature": cfg.r_sample_temp, "top_k": cfg.n_top_k, "top_p": cfg.r_top_p, "seed": cfg.seed}), suffix)
    if not suffix:
        store.path("checkpoint", guid).unlink(missing_ok=True)
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
    docs = read_documents(inputs)
    model = run.model(cfg=cfg)
    tokenizer = run.tokenizer
    added = tokenizer.extend("\n".join(docs))
    if added:
        model.grow_vocab(tokenizer.n_vocab, seed=cfg.seed + 1)
        log(f"vocabulary grew by {added} to {tokenizer.n_vocab}")
    if getattr(cfg, "c_freeze_base", False):  # LoRA finetuning: only the low-rank matrices train
        trainable = freeze_base(model)
        if not trainable:
            raise ConfigError("c_freeze_base=true leaves nothing to train: the model has no lor network")
        log(f"frozen base: {trainable:,} of {model.n_params():,} parameters train")
    tokens, unknown = encode_documents(tokenizer, docs)
    train_tokens, val_tokens = split_stream(tokens, cfg.r_split, cfg.n_ctx)
    record = {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        **run.record.get("runtime", {}), "finetuned_from": str(store.path("model", guid)),
        "finetune_inputs": [str(p) for p in inputs], "finetune_words": count_words(docs),
        "n_vocab": tokenizer.n_vocab, "n_params": model.n_params(), "n_bytes": model.n_bytes(),
        "unknown_tokens": unknown, "created": _dt.datetime.now().isoformat(timespec="seconds")}}
    store.write("tokenizer", guid, tokenizer.to_dict(), FINETUNED)
    store.write("config", guid, record, FINETUNED)
    return _train_and_finish(store, guid, cfg, tokenizer, model, train_tokens, val_tokens, log, None,
                             suffix=FINETUNED)


# ---- inference ----------------------------------------------------------------------------------------

def inference(guid: str, prompt: str = "", max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
              top_p: float = 1.0, seed: int | None = None, use_cache: bool = True, root: str | Path = ".",
              finetuned: bool = False, checkpoint: str = "", log: Log = say) -> dict[str, Any]:
    store = RunStore(root)
    if max_tokens < 0:
        raise ConfigError(f"--max-tokens={max_tokens}: must be >= 0")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ConfigError("sampling: temperature >= 0, 0 < top-p <= 1 and top-k >= 0 are allowed")
    run = Run(store, guid, FINETUNED if finetuned else "")
    model = run.model(checkpoint)
    ids = list(run.tokenizer.encode(prompt)) if prompt else empty_prompt(run.tokenizer)
    if run.tokenizer.unknown_count:
        log(f"notice: {run.tokenizer.unknown_count} prompt symbols are not in the vocabulary (<unk>)")
    seed = run.cfg.seed if seed is None else seed
    gen = generate(model, ids, max_tokens, temperature, top_k, top_p, seed, use_cache,
                   **sampling_ids(run.tokenizer))
    for notice in gen.notices:
        log(f"notice: {notice}")
    record = completion_record(run.tokenizer, prompt, gen, max_tokens, {
        "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
        "finetuned": finetuned, "checkpoint": checkpoint or None})
    stamp = _dt.datetime.now()
    while (path := store.path("completion", guid, "_" + stamp.strftime("%Y%m%d%H%M%S"))).exists():
        stamp += _dt.timedelta(seconds=1)  # two completions in one second keep both files
    store.write("completion", guid, record, path.stem[len(f"completion_{guid}"):])
    log(prompt + record["completion"])
    log(f"{len(gen.tokens)} tokens in {gen.seconds:.2f} s ({gen.tokens_per_second:,.1f} tokens/s, "
        f"cache {'on' if use_cache else 'off'}) -> {path}")
    record["path"] = str(path)
    return record


# ---- delete / info ------------------------------------------------------------------------------------

def delete(guid: str, root: str | Path = ".", log: Log = say) -> list[Path]:
    store = RunStore(root)
    files = store.files(guid)
    if not files:
        raise RunError(f"no files of run {guid} under {store.root.resolve()}")
    for p in files:
        p.unlink()
        log(f"removed {p}")
    return files


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
    }
    report_path = store.path("report", guid)
    if report_path.exists():
        r = store.read("report", guid)
        out["training"] = {k: r.get(k) for k in ("steps", "epochs", "tokens_trained", "train_seconds",
                                                 "tokens_per_second", "achieved_gflops", "final_train_loss",
                                                 "final_val_loss", "best_val_loss", "unigram_entropy")}
    elif store.path("checkpoint", guid).exists():
        out["training"] = {"status": "interrupted; resume with: python -m baby train --resume " + guid}
    out["checkpoints"] = sorted(p.stem.split("_chck_")[1] for p in store.files(guid) if "_chck_" in p.name)
    return out


def format_info(data: dict[str, Any]) -> str:
    lines = [f"run {data['guid']}",
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
