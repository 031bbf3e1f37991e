"""``python -m baby export``: a finished run (or one of its checkpoints) as a directory that
``transformers.AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` load: as GPT2LMHeadModel or
LlamaForCausalLM when the run has that shape (``hf.layout``), else as a remote-code model
(``hf.remote``: load it with ``trust_remote_code=True``).

Everything is built and checked in memory first; then each file is written atomically (a temp name
in the same folder, then a rename), so a refusal or a crash never leaves a half-written export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import backend, device
from baby.config import Config, ConfigError
from baby.generate import sampling_ids
from baby.hf import remote, safetensors_numpy
from baby.hf.layout import family, hf_config, to_hf_tensors
from baby.hf.tokenizer import special_ids, special_tokens_map, to_hf, tokenizer_config
from baby.jsonio import FileFault, probe_writable, temp_path_for, write_json, write_text
from baby.runs import FINETUNED, Run, RunError, RunStore, state_of
from baby.tokenizers import Tokenizer

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "special_tokens_map.json")  # and remote.FILES for a remote-code model


def generation_config(cfg: Any, tokenizer: Tokenizer) -> dict[str, Any]:
    """Our sampling defaults; what is never sampled here (<unk>, <bos>, <pad>) is suppressed."""
    return {**special_ids(tokenizer), "do_sample": cfg.r_sample_temp > 0,
            "temperature": cfg.r_sample_temp or 1.0, "top_k": cfg.n_top_k, "top_p": cfg.r_top_p,
            "suppress_tokens": list(sampling_ids(tokenizer)["banned"]),
            **({"max_new_tokens": cfg.n_sample_tokens} if cfg.n_sample_tokens else {})}  # HF refuses 0


def write_safetensors(path: Path, tensors: dict[str, numpy.ndarray], metadata: dict[str, str]) -> None:
    st = safetensors_numpy()
    fd, tmp = temp_path_for(path)
    os.close(fd)
    try:
        st.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except OSError as err:
        raise FileFault(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def export(guid: str, out: str | Path, root: str | Path = ".", checkpoint: str = "", finetuned: bool = False,
           log: Callable[[str], None] = print) -> Path:
    store, out = RunStore(root), Path(out)
    suffix = FINETUNED if finetuned else ""
    run = Run(store, guid, suffix)
    if not checkpoint and not store.path("model", guid, suffix).exists():
        state = state_of(store, guid).get("state", "?")
        raise RunError(f"run {guid} has no final model to export ({state}); finish it first, or export a "
                       "learning-curve checkpoint with --checkpoint")
    if out.exists() and not out.is_dir():
        raise FileFault(f"{out}: exists and is not a directory")
    cfg = device.select(run.cfg, fallback=True)
    kind = native_family(cfg)
    # refuses what cannot be represented before loading weights
    config = hf_config(cfg, run.tokenizer.n_vocab) if kind else remote.remote_config(cfg, run.tokenizer.n_vocab)
    config.update(special_ids(run.tokenizer))  # the original's vocabularies have none
    tokenizer = to_hf(run.tokenizer)
    safetensors_numpy()
    model = run.model(checkpoint, cfg)
    ours = {name: backend.to_host(p.data).astype(numpy.float32) for name, p in model.named_parameters()}
    # native: the HF class's names and layouts; remote code: ours as they are
    tensors = to_hf_tensors(cfg, ours) if kind else {k: numpy.ascontiguousarray(v) for k, v in ours.items()}
    probe_writable(out)
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt", "baby_guid": guid,
                                                           "baby_checkpoint": checkpoint or "final"})
    if not kind:
        for name, source in remote.module_sources().items():
            write_text(out / name, source)
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", generation_config(cfg, run.tokenizer))
    write_json(out / "tokenizer.json", tokenizer)
    write_json(out / "tokenizer_config.json", tokenizer_config(cfg.n_ctx, run.tokenizer))
    write_json(out / "special_tokens_map.json", special_tokens_map(run.tokenizer))
    how = config["architectures"][0] + ("" if kind else " (remote code: load with trust_remote_code=True)")
    log(f"exported run {guid}{suffix}{f' checkpoint {checkpoint}' if checkpoint else ''} as "
        f"{how} ({model.n_params():,} parameters, {run.tokenizer.kind} tokenizer) to {out}")
    return out


def native_family(cfg: Config) -> str:
    """GPT2LMHeadModel or LlamaForCausalLM for a shape HF has a class for, else "" (remote code)."""
    try:
        return family(cfg)
    except ConfigError:
        return ""
