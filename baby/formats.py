"""The file formats of models and checkpoints: the one place that writes and reads them.

A model file is ``{"format": "baby-model/1", "n_vocab", "architecture", "tensors": {name: tensor}}``
(``architecture``: what rebuilding the model needs without its run's config, see ``architecture``;
files written before it existed load as well); a checkpoint
is ``{"format": "baby-checkpoint/1", "model": <a model file>, "trainer": {...}}``. A tensor is
``{"dtype", "shape", "data": base64 of the raw little-endian bytes}``: lossless and fast. Everything
read is checked before it is used (format version, fields, names, shapes, finiteness), and every
complaint is one line naming the file.
"""
from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

import numpy

from baby import backend
from baby.jsonio import FileFault

if TYPE_CHECKING:
    from baby.nn.model import GPT

MODEL_FORMAT = "baby-model/1"
CHECKPOINT_FORMAT = "baby-checkpoint/1"


class FormatError(FileFault):
    """A model or checkpoint file whose content cannot be used; the message names it."""


# ---- tensors ------------------------------------------------------------------------------------

def encode_tensor(array: numpy.ndarray) -> dict[str, Any]:
    a = numpy.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_tensor(entry: Any, where: str = "tensor") -> numpy.ndarray:
    try:
        if not isinstance(entry, dict):
            raise ValueError("expected an object with dtype, shape and data")
        dtype = numpy.dtype(entry["dtype"])
        if dtype.kind not in "fiub":
            raise ValueError(f"dtype {dtype} is not numeric")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise ValueError("shape must be a list of non-negative integers")
        if not isinstance(entry["data"], str):
            raise ValueError("data must be a base64 string")
        raw = base64.b64decode(entry["data"], validate=True)
        if len(raw) != dtype.itemsize * math.prod(shape):
            raise ValueError(f"{len(raw)} bytes do not hold shape {shape} of {dtype}")
        return numpy.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as err:
        raise FormatError(f"{where}: malformed tensor ({err})") from None


def _check_format(data: Any, expected: str, where: str) -> None:
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected a JSON object")
    found = data.get("format")
    if found != expected:
        kind = expected.split("/")[0]
        if isinstance(found, str) and found.startswith(kind + "/"):
            raise FormatError(f"{where}: format {found!r} is not supported (this version reads {expected})")
        raise FormatError(f"{where}: not a {kind.replace('baby-', 'baby ')} file (format {found!r}, expected {expected!r})")


# ---- models -------------------------------------------------------------------------------------

# How the weights are laid out, for a reader outside this package (an exporter, another framework).
LAYOUTS = {
    "linear": "weight (in, out): y = x @ W + b",
    "qkv": "fused (n_emb, (n_heads + 2 n_kv_heads) head_dim): columns [q heads | k heads | v heads], "
           "each head's head_dim channels contiguous; query head i uses key/value head i // (n_heads / n_kv_heads)",
    "swi.up_gate": "fused (n_emb, 2 hidden): columns [up | gate], h = up * silu(gate)",
    "rope": "rotate-half: channels (i, i + head_dim/2) rotate by position * base^(-2i/head_dim)",
    "tied": "with tie, the head is tok.weight transposed (no head tensor)",
}


def architecture(cfg: Any) -> dict[str, Any]:
    """Everything that fixes a model's computation, resolved (defaults and derived widths filled in,
    variant names canonical): the model file carries it so that it can be rebuilt on its own."""
    from baby.config import architecture_keys  # noqa: PLC0415 - formats is imported by the nn-free tools too
    from baby.nn import variants  # noqa: PLC0415
    from baby.nn.layers import GELU_FORM  # noqa: PLC0415
    from baby.nn.mixers.kit import ROPE_BASE  # noqa: PLC0415
    from baby.nn.model import build_norm  # noqa: PLC0415

    mixers = [variants.lookup("mixer", m) for m in cfg.mixers]
    network = variants.lookup("network", cfg.c_network) if cfg.c_network else None
    chosen = mixers + ([network] if network else [])
    variant_settings = {s.key: getattr(cfg, s.key) for e in chosen for s in e.settings}
    n_kv = min((e.cls.kv_heads(cfg) for e in mixers), default=cfg.n_heads)
    return {"mixers": [e.name for e in mixers], "network": network.name if network else "",
            "norm": cfg.c_norm, "norm_final": cfg.c_norm_final or cfg.c_norm,
            "norm_eps": build_norm(cfg).eps, "norm_final_eps": build_norm(cfg, cfg.c_norm_final).eps,
            "position": cfg.c_position, "rope_base": ROPE_BASE, "bias": cfg.c_bias, "tie": cfg.c_tie,
            "n_ctx": cfg.n_ctx, "n_emb": cfg.n_emb, "n_heads": cfg.n_heads, "n_kv_heads": n_kv,
            "head_dim": cfg.head_width // cfg.n_heads, "hidden": cfg.hidden, "n_layers": cfg.n_layers,
            "attention_scale": f"1 / (sqrt(head_dim) * {cfg.r_temp!r})", "r_temp": cfg.r_temp,
            "gelu": GELU_FORM, "layouts": LAYOUTS, "variant_settings": variant_settings,
            "settings": {k: getattr(cfg, k) for k in architecture_keys()}}


def model_to_dict(model: GPT) -> dict[str, Any]:
    return {"format": MODEL_FORMAT, "n_vocab": model.n_vocab, "architecture": architecture(model.cfg),
            "tensors": {name: encode_tensor(backend.to_host(p.data)) for name, p in model.named_parameters()}}


def model_vocab(data: Any, where: str) -> int:
    """The vocabulary size a model file declares (checked against its embedding on load)."""
    _check_format(data, MODEL_FORMAT, where)
    n = data.get("n_vocab")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise FormatError(f"{where}: n_vocab must be a positive integer, found {n!r}")
    return n


def load_weights(model: GPT, data: Any, where: str) -> None:
    """Copy a model file's tensors into ``model``; refuses wrong names, shapes, dtypes and non-finite
    values (a diverged model must never be used as if it were trained)."""
    n_vocab = model_vocab(data, where)
    if n_vocab != model.n_vocab:
        raise FormatError(f"{where}: n_vocab {n_vocab} does not match the model's {model.n_vocab}")
    tensors = data.get("tensors")
    if not isinstance(tensors, dict):
        raise FormatError(f"{where}: no tensors object")
    params = dict(model.named_parameters())
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise FormatError(f"{where}: tensors do not match the config (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, p in params.items():
        array = decode_tensor(tensors[name], f"{where}: {name}")
        if tuple(array.shape) != p.shape:
            raise FormatError(f"{where}: {name} has shape {array.shape}, the config needs {p.shape}")
        if array.dtype.kind != "f":
            raise FormatError(f"{where}: {name} has dtype {array.dtype}, expected floating point")
        if not numpy.isfinite(array).all():
            raise FormatError(f"{where}: {name} holds non-finite weights (NaN or inf): the model diverged")
        p.data[...] = backend.asarray(array.astype(p.data.dtype))


# ---- checkpoints --------------------------------------------------------------------------------

OPTIMIZER_TENSORS = ("adam_m", "adam_v")
MASTER_TENSOR = "adam_master"  # fp16 runs: the fp32 master weights


def checkpoint_to_dict(model: GPT, trainer_state: dict[str, Any]) -> dict[str, Any]:
    state = dict(trainer_state)
    for key in OPTIMIZER_TENSORS + ((MASTER_TENSOR,) if MASTER_TENSOR in state else ()):
        state[key] = encode_tensor(backend.to_host(state[key]))
    return {"format": CHECKPOINT_FORMAT, "model": model_to_dict(model), "trainer": state}


def read_checkpoint(data: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model file part, trainer state with decoded optimizer moments) of a checkpoint, checked."""
    _check_format(data, CHECKPOINT_FORMAT, where)
    trainer = data.get("trainer")
    if not isinstance(trainer, dict):
        raise FormatError(f"{where}: no trainer state")
    state = dict(trainer)
    for key, kind in (("step", int), ("adam_t", int), ("seconds", (int, float)), ("curves", dict), ("lines", list)):
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FormatError(f"{where}: trainer.{key} is missing or not {getattr(kind, '__name__', 'a number')}")
    if state["step"] < 0 or state["adam_t"] < 0:
        raise FormatError(f"{where}: trainer.step and trainer.adam_t must be >= 0")
    tensors = OPTIMIZER_TENSORS + ((MASTER_TENSOR,) if MASTER_TENSOR in state else ())
    for key in tensors:
        state[key] = decode_tensor(state.get(key), f"{where}: trainer.{key}")
        if state[key].ndim != 1 or not numpy.isfinite(state[key]).all():
            raise FormatError(f"{where}: trainer.{key} must be a finite flat vector")
    if len({state[key].size for key in tensors}) != 1:
        raise FormatError(f"{where}: trainer.{', '.join(tensors)} must have one length, found "
                          f"{', '.join(str(state[key].size) for key in tensors)}")
    if "batch_offset" in state and (not isinstance(state["batch_offset"], int) or isinstance(state["batch_offset"], bool)
                                    or state["batch_offset"] < 0):
        raise FormatError(f"{where}: trainer.batch_offset must be an integer >= 0")
    for key, kind in (("clipped_steps", int), ("adam_applied", (int, float)), ("loss_scale", dict)):
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool)):
            raise FormatError(f"{where}: trainer.{key} has the wrong type ({type(state[key]).__name__})")
    scale = state.get("loss_scale")
    if scale is not None and not all(isinstance(scale.get(k), (int, float)) for k in ("scale", "clean", "skipped")):
        raise FormatError(f"{where}: trainer.loss_scale needs numbers scale, clean and skipped")
    if not all(isinstance(v, list) for v in state["curves"].values()):
        raise FormatError(f"{where}: trainer.curves must hold lists")
    model_vocab(data.get("model"), f"{where}: model")
    return data["model"], state
