"""What a model is before (or without) its run: ``info --config`` (sizes, FLOPs, memory and a measured
training-time estimate from settings alone) and ``info --model`` (a model file on its own, rebuilt
from the architecture it carries)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend, device
from baby.config import Config, ConfigError
from baby.formats import CHECKPOINT_FORMAT, FormatError, load_weights, model_vocab
from baby.jsonio import read_json
from baby.memory import estimate_training, gib
from baby.nn.model import GPT
from baby.optim import AdamW
from baby.train import train_step

# Vocabulary sizes assumed for tokenizers whose size only the text decides (say so; --set n_vocab=N).
ASSUMED_VOCAB = {"char": 100, "word": 10_000}


def size(n: int) -> str:
    return gib(n) if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def vocab_for(cfg: Config) -> tuple[int, str]:
    """(vocabulary size, how it was chosen)."""
    if cfg.c_tokenizer == "bpe":
        return cfg.n_vocab, "n_vocab of the config (the BPE may learn fewer ids on a small text)"
    if "n_vocab" in cfg.given and cfg.n_vocab:
        return cfg.n_vocab, "given with --set n_vocab"
    n = ASSUMED_VOCAB[cfg.c_tokenizer]
    return n, (f"a {cfg.c_tokenizer} vocabulary is what the text has: assumed {n:,} "
               "(say --set n_vocab=N for your text)")


def probe_step_seconds(cfg: Config, model: GPT, n_vocab: int) -> float:
    """Seconds per optimizer step, extrapolated from steps on one and on two random windows (a full
    batch could take minutes and gigabytes just to measure): a step costs a fixed part (the optimizer
    update) plus a part per window, and the two sizes separate them. One step warms up first."""
    rng = numpy.random.default_rng(0)
    opt = AdamW(model.parameters(), cfg.r_learn)

    def step(windows: int) -> float:
        ids = rng.integers(0, n_vocab, (windows, cfg.n_ctx + 1))
        x, y = backend.asarray(ids[:, :-1].astype(numpy.int32)), backend.asarray(ids[:, 1:].astype(numpy.int64))
        start = time.perf_counter()
        float(train_step(model, opt, [(x, y, None)], cfg.r_learn, cfg.r_clip).loss)  # float(): wait for the device
        return time.perf_counter() - start

    first = step(1)
    one = step(1) if first < 1.0 else first  # a slow step needs no warm-up to be measured well
    two = step(2)
    per_window = max(two - one, 0.1 * one)  # a noisy machine can make the difference tiny or negative
    return one + per_window * (cfg.batch_size * cfg.n_accumulate - 1)
def config_info(cfg: Config, probe: bool = True) -> dict[str, Any]:
    cfg = device.select(cfg, fallback=True)
    n_vocab, vocab_note = vocab_for(cfg)
    model = GPT(cfg, n_vocab)
    flops = model.flops_per_token()
    memory = estimate_training(cfg, n_vocab)
    out: dict[str, Any] = {
        "n_params": model.n_params(), "n_bytes": model.n_bytes(), "n_vocab": n_vocab, "vocab_note": vocab_note,
        "flops_per_token": {"training": flops["training"], "inference": flops["forward"]},
        "memory_per_step": {"total_bytes": memory.total_bytes, "parameter_bytes": memory.parameter_bytes,
                            "activation_bytes": memory.activation_bytes},
        "tokens_per_step": cfg.batch_size * cfg.n_accumulate * cfg.n_ctx, "device": backend.device_name,
        "notices": [n for n in cfg.notices() if not n.startswith("n_vocab=")]}  # here n_vocab sizes char/word
    if probe:
        seconds = probe_step_seconds(cfg, model, n_vocab)
        out["seconds_per_step"] = seconds
        out["train_seconds"] = seconds * cfg.n_steps if cfg.n_steps else None
    return out


def size_lines(data: dict[str, Any], vocab_note: str = "") -> list[str]:
    """The parameters, vocabulary and FLOPs lines every description starts with."""
    fl = data["flops_per_token"]
    return [f"  parameters        {data['n_params']:,} ({data['n_bytes'] / 2**20:.2f} MiB)",
            f"  vocabulary        {data['n_vocab']:,}" + (f": {vocab_note}" if vocab_note else ""),
            f"  FLOPs per token   training {fl['training']:,.0f}, inference {fl['inference']:,.0f}"]


def format_config_info(data: dict[str, Any], source: str) -> str:
    m = data["memory_per_step"]
    lines = [f"config {source}", *size_lines(data, data["vocab_note"]),
             f"  memory per step   about {size(m['total_bytes'])} ({size(m['parameter_bytes'])} parameters and "
             f"AdamW state, {size(m['activation_bytes'])} activations for {data['tokens_per_step']:,} tokens)"]
    if "seconds_per_step" in data:
        per = data["seconds_per_step"]
        total = data["train_seconds"]
        lines.append(f"  time per step     about {per:.3f} s on {data['device']} ({data['tokens_per_step'] / per:,.0f} "
                     "tokens/s), extrapolated from steps on 1 and 2 windows")
        lines.append(f"  training time     {total / 60:,.1f} min for n_steps" if total is not None else
                     "  training time     n_steps=0: steps per epoch depend on the text (tokens / tokens per step)")
    lines += [f"  notice: {line}" for line in data.get("notices", [])]
    return "\n".join(lines)


def model_file_info(path: str | Path) -> dict[str, Any]:
    """A model (or checkpoint) file described on its own: rebuilt from its architecture, weights checked."""
    where = str(path)
    data = read_json(Path(path), "model file")
    if data.get("format") == CHECKPOINT_FORMAT:
        data = data.get("model")
    n_vocab = model_vocab(data, where)
    arch = data.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("settings"), dict):
        raise FormatError(f"{where}: written before model files described their architecture; "
                          "use info --guid with its run")
    try:
        cfg = Config({**arch["settings"], **arch.get("variant_settings", {}), "c_device": "cpu", "d_type": "fp32"},
                     source=f"{where}: architecture")
    except ConfigError as err:
        raise FormatError(str(err)) from None
    backend.use("cpu", d_type="fp32")
    model = GPT(cfg, n_vocab)
    load_weights(model, data, where)
    flops = model.flops_per_token()
    return {"model": where, "n_params": model.n_params(), "n_bytes": model.n_bytes(), "n_vocab": n_vocab,
            "flops_per_token": {"training": flops["training"], "inference": flops["forward"]}, "architecture": arch}


def format_model_info(data: dict[str, Any]) -> str:
    a = data["architecture"]
    lines = [f"model {data['model']}", *size_lines(data),
             f"  blocks            {a['n_layers']} x [{' + '.join(a['mixers'])}{' + ' + a['network'] if a['network'] else ''}], "
             f"width {a['n_emb']}, {a['n_heads']} heads ({a['n_kv_heads']} key/value) of {a['head_dim']}, hidden {a['hidden']}",
             f"  norm              {a['norm']} (eps {a['norm_eps']:g}), final {a['norm_final']}; positions {a['position']}"
             f"{' (base %g)' % a['rope_base'] if a['position'] == 'rope' else ''}; bias {a['bias']}; tied {a['tie']}",
             f"  context           {a['n_ctx']} tokens"]
    return "\n".join(lines)
