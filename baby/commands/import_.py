"""``python -m baby import --from DIR``: a GPT2LMHeadModel or LlamaForCausalLM directory, or a remote-code
directory exported by us (config.json, model.safetensors, tokenizer.json) as a new run: config,
tokenizer and model files under a new GUID, usable by info, inference, finetune and eval. Everything
is read and checked before a file is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy

from baby import device, original
from baby.config import Config, ConfigError
from baby.formats import architecture, encode_tensor, load_weights
from baby.hf import remote, safetensors_numpy
from baby.hf.layout import from_hf_tensors, settings_from_hf
from baby.hf.tokenizer import from_hf
from baby.jsonio import FileFault, read_json
from baby.nn.model import GPT
from baby.runs import RunStore, write_imported_run


def read_safetensors(path: Path) -> dict[str, numpy.ndarray]:
    st = safetensors_numpy()
    if not path.is_file():
        raise FileFault(f"{path}: no such file (sharded or .bin checkpoints are not read; save with safe_serialization)")
    try:
        return st.load_file(str(path))
    except Exception as err:  # noqa: BLE001 - the library raises its own kinds for damaged files
        raise FileFault(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None


def settings_for(data: dict[str, Any], n_vocab: int, kind: str) -> Config:
    """Our settings for an HF config: its architecture fields; the rest from the ``baby`` block of an
    export of ours (training settings), else our defaults. Both must describe the same model."""
    family, derived = settings_from_hf(data)
    saved = (data.get("baby") or {}).get("settings") if isinstance(data.get("baby"), dict) else None
    shape = {**derived, "c_tokenizer": kind, "n_vocab": n_vocab if kind == "bpe" else 0}
    if isinstance(saved, dict):
        cfg = Config(saved, source="config.json: baby.settings")
        if architecture(cfg) == architecture(Config({**saved, **shape}, source="config.json")):
            return cfg
    return Config(shape, source="config.json")


def import_run(source: str | Path, root: str | Path = ".", log: Callable[[str], None] = print) -> str:
    folder = Path(source)
    if not folder.is_dir():
        raise FileFault(f"{folder}: no such directory (expected config.json, model.safetensors, tokenizer.json)")
    hf = (folder / "config.json").is_file()  # an HF directory (its tokenizer_config.json is no file of the original's)
    if not hf and original.is_original(folder):  # config_<guid>.json, tokenizer_<guid>.json, model_<guid>.json
        return original.import_original(folder, root, log)
    data = read_json(folder / "config.json", "HF config file")
    tokenizer = from_hf(read_json(folder / "tokenizer.json", "HF tokenizer file"), str(folder / "tokenizer.json"))
    vocab = data.get("vocab_size")
    if vocab != tokenizer.n_vocab:
        raise ConfigError(f"{folder / 'config.json'}: vocab_size={vocab!r}, but tokenizer.json has {tokenizer.n_vocab} ids")
    where = str(folder / "model.safetensors")
    if data.get("model_type") == remote.MODEL_TYPE:  # remote code: our settings and our tensors as they are
        cfg = device.select(remote.settings_from_remote(data, tokenizer.n_vocab, tokenizer.kind,
                                                        str(folder / "config.json")), fallback=True)
        ours = read_safetensors(folder / "model.safetensors")
    else:
        cfg = device.select(settings_for(data, tokenizer.n_vocab, tokenizer.kind), fallback=True)
        ours = from_hf_tensors(cfg, read_safetensors(folder / "model.safetensors"), where)
    model = GPT(cfg, tokenizer.n_vocab)
    model_file = {"format": "baby-model/1", "n_vocab": tokenizer.n_vocab,
                  "tensors": {k: encode_tensor(v) for k, v in ours.items()}}
    load_weights(model, model_file, where)  # names, shapes, finiteness: checked before writing
    guid = write_imported_run(RunStore(root), cfg, tokenizer, model, {
        "imported_from": str(folder.resolve()), "hf_architecture": (data.get("architectures") or [None])[0]})
    log(f"imported {folder} as run {guid}: {model.n_params():,} parameters, {tokenizer.kind} tokenizer of "
        f"{tokenizer.n_vocab} ids")
    log(guid)
    return guid
