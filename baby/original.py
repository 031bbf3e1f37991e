"""The original Little Baby's run files, read as a run of ours (``python -m baby import --from DIR``).

A folder holds the three files one run of the original wrote (``../shared/ORIGINAL_FORMAT.md`` beside
the repository describes them):

    config_<guid>.json      the settings in the original's key names (s_head, s_batch, ...)
    tokenizer_<guid>.json   {"vocab": [...], "vocab_size": N}: the id of a token is its index in vocab
    model_<guid>.json       one flat object of nested lists: wte_weight, wpe_weight, block_{i}_..., lm_head_*

What the original computes, and how our model computes the same:

    x = wte[ids] + wpe[arange(T)]                     our learned positions (c_position=learned)
    pre:  x = x + Att(LN1 x); x = x + Net(LN2 x)      c_sequence=pre  (our Residual)
    post: a = LN1(x + Att x); x = LN2(a + Net a)      c_sequence=post (our PostNormResidual)
    logits = LN_f(x) @ lm_head_weight + lm_head_bias  c_tie=false, c_head_bias=true
    LayerNorm with population variance, eps 1e-5      c_norm=layer (the same eps)

Every linear map is ``x @ W + b`` with W stored (in, out), as ours. The original's q/k/v projections
have no bias and its output projections have one: our c_bias=true model with the q/k/v biases set to
exactly zero computes the same numbers. Per variant:

    mha   [q | k | v] is our fused qkv; c_weight, c_bias our output projection
    gqa   the same with Hkv key/value heads, Hkv read from the shape; query head j reads key/value
          head j // (H / Hkv), as ours does (n_kv_heads = Hkv)
    moh   y = sum_j p_j o_j, out = y @ M + m_bias (M: d x D), p = softmax(x G / r_temp). Ours is
          out = concat_j(H p_j o_j) @ W_o + b: with W_o = [M; M; ...; M] / H (H copies stacked) the
          two are one formula; the gate is ours with a zero bias
    swh   the same with a one-hot p (the argmax head): W_o = [M; ...; M]
    mlp   gelu(x @ up + b) @ dn + b with F = 4 D, GELU in its tanh form: our mlp
    swi   (up(x) * gt(x) * sigmoid(gt(x))) @ dn + b: our swi with [up | gate] = [c_proj_up | c_proj_gt]
    gln   c(x) * sigmoid(g(x)): our gln with [value | gate] = [c | g]
    moe   sum_e softmax(x G)_e expert_e(x), every expert an mlp of F = n_expansion D (dense, no
          temperature): our moe with n_top = n_experts, a zero router bias and G * r_temp as its
          router weight (ours divides the router's logits by r_temp)

Refused, each in one line naming what differs (``REFUSED``): aft, gla, rfa, lor, ggl, nft.

The vocabulary stays the original's (``original=True`` tokenizers: no <unk>/<bos>/<eos>/<pad>), so the
imported run gives every id the probability the original gives it. Everything is read and checked
before a file is written; nothing here unpickles or executes what it reads.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import device
from baby.config import LEGACY_NAMES, Config, ConfigError, from_legacy
from baby.formats import FormatError, encode_tensor, load_weights
from baby.jsonio import read_json
from baby.nn.model import GPT
from baby.runs import RunStore, write_imported_run
from baby.tokenizers import KINDS, Tokenizer

NAME = re.compile(r"(config|tokenizer|model)_([0-9A-Za-z-]+(?:_finetuned)?)\.json")

# The settings the logits depend on, in our names (the original's s_head is our head_size).
ARCHITECTURE = ("c_tokenizer", "c_sequence", "c_attention", "c_network", "d_type", "n_ctx", "n_emb", "head_size",
                "n_heads", "n_layers", "r_temp")
# Training settings of the original that mean the same here: kept, so that a finetune starts from them.
TRAINING = ("r_dropout", "r_learn", "s_warmup", "c_shuffle", "r_split", "batch_size", "n_epochs")

MIXERS = ("mha", "gqa", "moh", "swh")
NETWORKS = ("mlp", "swi", "gln", "moe")
REFUSED = {
    "aft": "c_attention='aft': the original weighs values by exp(clip(k / r_temp)) over n_emb channels with +1e-9 "
           "in the mean's denominator; ours by exp(20 tanh(k / 20)) over head_size channels",
    "gla": "c_attention='gla': the original's gla is LayerNorm, a causal depthwise convolution and ReLU over "
           "(k / r_temp) * v; ours is a gated prefix mean",
    "rfa": "c_attention='rfa': the original attends over the whole causal prefix without its cache and over a "
           "sliding window with it (its training and generation disagree); ours uses one window in both",
    "lor": "c_network='lor': the original's lor is one projection x W + b + (alpha / rank) (x A) B with no hidden "
           "layer; ours adapts both projections of an mlp around its GELU",
    "ggl": "c_network='ggl': ours shuffles channels across the groups after the gated linears; the original "
           "does not",
    "nft": "c_network='nft': the original's newest version cannot build it, so no such model file exists",
}


# ---- the folder ------------------------------------------------------------------------------------

def run_files(folder: Path) -> dict[str, Path] | None:
    """The original's three files of one run in ``folder`` by kind, or None when the folder holds none
    of them (then it is not the original's). Several runs in one folder are refused: which one?"""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = NAME.fullmatch(path.name)
        if match and path.is_file():
            found.setdefault(match.group(2), {})[match.group(1)] = path
    if not found:
        return None
    if len(found) > 1:
        raise FormatError(f"{folder}: holds files of {len(found)} runs of the original ({', '.join(sorted(found))}); "
                          "put the config, tokenizer and model file of one run in a folder of its own")
    (guid, files), = found.items()
    missing = [k for k in ("config", "tokenizer", "model") if k not in files]
    if missing:
        raise FormatError(f"{folder}: run {guid} of the original lacks its {' and '.join(missing)} file "
                          f"({', '.join(f'{k}_{guid}.json' for k in missing)})")
    return files


def is_original(folder: str | Path) -> bool:
    """Whether ``folder`` holds files named as the original names them (config_<guid>.json ...)."""
    folder = Path(folder)
    return folder.is_dir() and any(NAME.fullmatch(p.name) for p in folder.iterdir())


# ---- config and tokenizer ---------------------------------------------------------------------------

def read_settings(path: Path) -> tuple[dict[str, Any], list[str], Any]:
    """The original's settings in our names: those the logits depend on (all required) and the
    training settings that mean the same here; notices for what was left behind; its runtime block."""
    data = read_json(path, "config file of the original", strict=True)
    wanted = set(ARCHITECTURE) | set(TRAINING)  # the rest (devices, its optimizer's name) is not ours to read
    try:
        named, _ = from_legacy({k: v for k, v in data.items() if LEGACY_NAMES.get(k, k) in wanted})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    missing = [k for k in ARCHITECTURE if k not in named]
    if missing:
        spelled = ["s_head" if k == "head_size" else k for k in missing]
        raise ConfigError(f"{path}: {', '.join(spelled)} missing (the original's config holds every setting "
                          "its model depends on)")
    settings = {k: named[k] for k in ARCHITECTURE}
    for key in ("c_attention", "c_network"):
        if not isinstance(settings[key], str):
            raise ConfigError(f"{path}: {key}={settings[key]!r}: expected a variant's name")
    dropped = []
    for key in TRAINING:
        if key in named:
            try:
                Config({key: named[key]})
                settings[key] = named[key]
            except ConfigError:
                dropped.append(f"{key}={named[key]!r}")
    notices = [f"training settings out of our range, left at our defaults: {', '.join(dropped)}"] if dropped else []
    return settings, notices, data.get("runtime")


def read_tokenizer(path: Path, kind: str) -> Tokenizer:
    """The original's vocabulary, ids kept: the char or word tokenizer with ``original=True``."""
    data = read_json(path, "tokenizer file of the original", strict=True)
    vocab, size = data.get("vocab"), data.get("vocab_size")
    if kind not in ("char", "word"):
        raise ConfigError(f"c_tokenizer={kind!r}: the original has char and word tokenizers only")
    if not isinstance(vocab, list) or not vocab or not all(isinstance(p, str) and p for p in vocab):
        raise FormatError(f"{path}: vocab must be a non-empty list of non-empty strings")
    if len(set(vocab)) != len(vocab):
        raise FormatError(f"{path}: vocab repeats a piece (two ids for one symbol)")
    if kind == "char" and any(len(p) != 1 for p in vocab):
        raise FormatError(f"{path}: a char vocabulary holds one character per piece, found "
                          f"{next(p for p in vocab if len(p) != 1)!r}")
    if kind == "word" and any(p != p.strip() or len(p.split()) != 1 for p in vocab):
        raise FormatError(f"{path}: a word vocabulary (text.split()) holds no whitespace, found "
                          f"{next(p for p in vocab if p != p.strip() or len(p.split()) != 1)!r}")
    if size != len(vocab):
        raise FormatError(f"{path}: vocab_size={size!r}, but vocab holds {len(vocab)} pieces")
    return KINDS[kind](vocab, original=True)


# ---- the model file ---------------------------------------------------------------------------------

class Weights:
    """The model file's tensors, each taken once by name with its shape checked (``take``); what is
    left untaken at the end is a key we do not know (``check_all_taken``)."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data, self.where, self.taken = data, where, set()

    def take(self, key: str, shape: tuple[int | None, ...]) -> numpy.ndarray:
        """Tensor ``key`` as float64; None in ``shape`` accepts any length along that axis."""
        if key not in self.data:
            raise FormatError(f"{self.where}: {key} missing (the config's variants need it)")
        self.taken.add(key)
        array = numpy.array(self.data[key])
        if array.dtype.kind == "O" or (array.size and array.dtype.kind not in "fiu"):
            raise FormatError(f"{self.where}: {key} is not a table of numbers (ragged rows, or null where "
                              "NaN/Infinity was written: a diverged model)")
        array = array.astype(numpy.float64)
        if array.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, array.shape)):
            wanted = " x ".join("?" if n is None else str(n) for n in shape)
            raise FormatError(f"{self.where}: {key} has shape {array.shape}, the config needs ({wanted})")
        if not numpy.isfinite(array).all():
            raise FormatError(f"{self.where}: {key} holds non-finite weights (NaN or inf): the model diverged")
        return array

    def count(self, key: str, default: int) -> int:
        """A bare whole number of the file (moe_n_experts ...), ``default`` when the file has none."""
        if key not in self.data:
            return default
        value = self.data[key]
        self.taken.add(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 1:
            raise FormatError(f"{self.where}: {key} must be a positive whole number, found {value!r}")
        return int(value)

    def check_all_taken(self) -> None:
        extra = sorted(set(self.data) - self.taken)
        if extra:
            raise FormatError(f"{self.where}: {len(extra)} keys the config's variants do not have "
                              f"(first: {extra[0]}); a file of another architecture?")


def mixer_tensors(w: Weights, i: int, name: str, s: dict[str, Any]) -> tuple[dict[str, numpy.ndarray], dict[str, Any]]:
    """Our tensors of block i's mixer (names under ``blocks.i.parts.0.inner.``) and the settings the
    file fixes (gqa's n_kv_heads)."""
    d_model, width, heads = s["n_emb"], s["head_size"], s["n_heads"]
    dim = width // heads
    key = f"block_{i}_{name}_"
    q = w.take(key + "q_weight", (d_model, width))
    kv_width = None if name == "gqa" else width
    k = w.take(key + "k_weight", (d_model, kv_width))
    v = w.take(key + "v_weight", (d_model, k.shape[1]))
    extra: dict[str, Any] = {}
    if name == "gqa":  # Hkv from the shape: it must be whole heads that group the query heads evenly
        n_kv, rest = divmod(k.shape[1], dim)
        if rest or not n_kv or heads % n_kv:
            raise ConfigError(f"{w.where}: {key}k_weight is {k.shape[1]} wide: {k.shape[1] / dim:g} key/value heads "
                              f"of width {dim}, which do not group n_heads={heads} query heads evenly (ours needs "
                              "a whole number of key/value heads that divides n_heads)")
        extra["n_kv_heads"] = n_kv
    out = {"qkv.weight": numpy.concatenate([q, k, v], axis=1), "qkv.bias": numpy.zeros(q.shape[1] + 2 * k.shape[1])}
    if name in ("mha", "gqa"):
        out["proj.weight"] = w.take(key + "c_weight", (width, d_model))
        out["proj.bias"] = w.take(key + "c_bias", (d_model,))
    else:  # moh, swh: the head gate, and one (d, D) projection shared by the heads
        out["gate.weight"] = w.take(key + "g_weight", (d_model, heads))
        out["gate.bias"] = numpy.zeros(heads)
        m = w.take(key + "m_weight", (dim, d_model))
        stacked = numpy.tile(m, (heads, 1))  # concat_j(c_j o_j) @ [M; ...; M] = (sum_j c_j o_j) @ M
        out["proj.weight"] = stacked / heads if name == "moh" else stacked  # moh: ours weighs heads by H p_j
        out["proj.bias"] = w.take(key + "m_bias", (d_model,))
    return out, extra


def network_tensors(w: Weights, i: int, name: str, s: dict[str, Any]) -> tuple[dict[str, numpy.ndarray], dict[str, Any]]:
    """Our tensors of block i's network (names under ``blocks.i.parts.1.inner.``) and the settings the
    file fixes (the hidden width as r_hidden, moe's n_experts)."""
    d_model = s["n_emb"]
    key = f"block_{i}_{name}_"
    if name == "mlp":
        hidden = 4 * d_model  # F = 4 D, fixed in the original
        return {"up.weight": w.take(key + "proj_up_weight", (d_model, hidden)),
                "up.bias": w.take(key + "proj_up_bias", (hidden,)),
                "down.weight": w.take(key + "proj_dn_weight", (hidden, d_model)),
                "down.bias": w.take(key + "proj_dn_bias", (d_model,))}, {"r_hidden": 4.0}
    if name == "swi":
        up = w.take(key + "c_proj_up_weight", (d_model, None))  # the value branch
        hidden = up.shape[1]
        gate = w.take(key + "c_proj_gt_weight", (d_model, hidden))  # the gate branch, through swish
        return {"up_gate.weight": numpy.concatenate([up, gate], axis=1),
                "up_gate.bias": numpy.concatenate([w.take(key + "c_proj_up_bias", (hidden,)),
                                                   w.take(key + "c_proj_gt_bias", (hidden,))]),
                "down.weight": w.take(key + "c_proj_dn_weight", (hidden, d_model)),
                "down.bias": w.take(key + "c_proj_dn_bias", (d_model,))}, {"r_hidden": hidden / d_model}
    if name == "gln":
        return {"value_gate.weight": numpy.concatenate([w.take(key + "c_weight", (d_model, d_model)),
                                                        w.take(key + "g_weight", (d_model, d_model))], axis=1),
                "value_gate.bias": numpy.concatenate([w.take(key + "c_bias", (d_model,)),
                                                      w.take(key + "g_bias", (d_model,))])}, {}
    # moe: a dense softmax gate (no bias, no temperature) over E experts, each an mlp of F = n_expansion D
    n_experts = w.count(key + "n_experts", sum(1 for k in w.data if re.fullmatch(rf"{key}expert_\d+_up_weight", k)))
    hidden = w.take(key + "expert_0_up_weight", (d_model, None)).shape[1] if n_experts else 4 * d_model
    expansion = w.count(key + "n_expansion", max(1, hidden // d_model))
    if hidden != expansion * d_model:
        raise FormatError(f"{w.where}: {key}expert_0_up_weight is {hidden} wide, but {key}n_expansion={expansion} "
                          f"makes it {expansion * d_model}")
    experts = [(w.take(f"{key}expert_{e}_up_weight", (d_model, hidden)), w.take(f"{key}expert_{e}_up_bias", (hidden,)),
                w.take(f"{key}expert_{e}_dn_weight", (hidden, d_model)), w.take(f"{key}expert_{e}_dn_bias", (d_model,)))
               for e in range(n_experts)]
    return {"router.weight": w.take(key + "g_weight", (d_model, n_experts)) * s["r_temp"],
            "router.bias": numpy.zeros(n_experts),
            "w_up": numpy.stack([e[0] for e in experts]), "b_up": numpy.stack([e[1] for e in experts]),
            "w_down": numpy.stack([e[2] for e in experts]), "b_down": numpy.stack([e[3] for e in experts])}, \
        {"n_experts": n_experts, "n_top": n_experts, "r_hidden": hidden / d_model}


def read_model(path: Path, s: dict[str, Any], n_vocab: int) -> tuple[dict[str, numpy.ndarray], dict[str, Any]]:
    """Our model's tensors (float64) from the original's model file, and the settings it fixes."""
    data = read_json(path, "model file of the original")
    w = Weights(data, str(path))
    d_model, n_ctx = s["n_emb"], s["n_ctx"]
    ours = {"tok.weight": w.take("wte_weight", (n_vocab, d_model)),
            "pos.weight": w.take("wpe_weight", (n_ctx, d_model)),
            "norm.gain": w.take("ln_f_gamma", (d_model,)), "norm.bias": w.take("ln_f_beta", (d_model,)),
            "head.weight": w.take("lm_head_weight", (d_model, n_vocab)),
            "head_bias": w.take("lm_head_bias", (n_vocab,))}
    fixed: dict[str, Any] = {}
    for i in range(s["n_layers"]):
        for part, norm in ((0, "ln1"), (1, "ln2")):
            ours[f"blocks.{i}.parts.{part}.norm.gain"] = w.take(f"block_{i}_{norm}_gamma", (d_model,))
            ours[f"blocks.{i}.parts.{part}.norm.bias"] = w.take(f"block_{i}_{norm}_beta", (d_model,))
        for part, (make, name) in enumerate(((mixer_tensors, s["c_attention"]), (network_tensors, s["c_network"]))):
            tensors, settings = make(w, i, name, s)
            ours.update({f"blocks.{i}.parts.{part}.inner.{k}": v for k, v in tensors.items()})
            for k, v in settings.items():
                if fixed.setdefault(k, v) != v:
                    raise FormatError(f"{path}: block {i} has {k}={v!r}, an earlier block {fixed[k]!r} (ours shares "
                                      "one value across blocks)")
    w.check_all_taken()
    return ours, fixed


# ---- the import -------------------------------------------------------------------------------------

def check_variants(s: dict[str, Any], where: str) -> None:
    """One line for a variant we cannot honour, naming what differs."""
    for key, known in (("c_attention", MIXERS), ("c_network", NETWORKS)):
        name = s[key]
        if name in REFUSED:
            raise ConfigError(f"{where}: cannot import {REFUSED[name]}")
        if name not in known:
            raise ConfigError(f"{where}: {key}={name!r} is not a variant of the original's format this reads "
                              f"(it reads {', '.join(known)}; refused: "
                              f"{', '.join(n for n in REFUSED if (n in ('aft', 'gla', 'rfa')) == (key == 'c_attention'))})")
    if not isinstance(s["head_size"], int) or not isinstance(s["n_heads"], int) or s["n_heads"] < 1 \
            or s["head_size"] % s["n_heads"]:
        raise ConfigError(f"{where}: s_head={s['head_size']!r} must be divisible by n_heads={s['n_heads']!r}")


def original_config(settings: dict[str, Any], fixed: dict[str, Any], n_vocab: int, where: str) -> Config:
    """Our config for the original's model: its settings, and the shape of its computation in ours."""
    shape = {"c_tie": False, "c_head_bias": True, "c_bias": True, "c_norm": "layer", "c_norm_final": "",
             "c_position": "learned", "r_hidden": 4.0}
    return Config({**settings, **shape, **fixed}, source=where)


def import_original(folder: str | Path, root: str | Path = ".", log: Callable[[str], None] = print) -> str:
    """Read one run of the original from ``folder`` and write it as a new run of ours; returns its GUID."""
    folder = Path(folder)
    files = run_files(folder)
    if files is None:
        raise FormatError(f"{folder}: no config_<guid>.json, tokenizer_<guid>.json and model_<guid>.json of the "
                          "original Little Baby here")
    settings, notices, runtime = read_settings(files["config"])
    check_variants(settings, str(files["config"]))
    tokenizer = read_tokenizer(files["tokenizer"], settings["c_tokenizer"])
    tensors, fixed = read_model(files["model"], settings, tokenizer.n_vocab)
    cfg = original_config(settings, fixed, tokenizer.n_vocab, str(files["config"]))
    cfg = device.select(cfg, fallback=True)
    model = GPT(cfg, tokenizer.n_vocab)
    model_file = {"format": "baby-model/1", "n_vocab": tokenizer.n_vocab,
                  "tensors": {k: encode_tensor(v) for k, v in tensors.items()}}
    load_weights(model, model_file, str(files["model"]))  # every name and shape ours, once more
    original_guid = files["config"].stem.split("_", 1)[1]
    guid = write_imported_run(RunStore(root), cfg, tokenizer, model, {
        "imported_from": str(folder.resolve()), "original_guid": original_guid, "original_runtime": runtime})
    for notice in notices:
        log(f"notice: {notice}")
    log(f"imported the original's run {original_guid} from {folder} as run {guid}: "
        f"{settings['c_attention']} + {settings['c_network']}, {settings['c_sequence']}-norm, "
        f"{model.n_params():,} parameters, the original's {tokenizer.kind} vocabulary of {tokenizer.n_vocab} ids "
        "(no specials)")
    log(guid)
    return guid
