"""Which of our shapes Hugging Face has a class for, and the translation of settings and weights
both ways. GPT-2: LayerNorm, learned positions, mha with a fused qkv, mlp with tanh GELU, biases.
LLaMA: RMSNorm, rotate-half RoPE (the convention of HF's Llama too, so no q/k permutation), SwiGLU,
mha or gqa. Both keep our head grouping: HF's ``repeat_kv`` gives query head i the key/value head
i // (heads / kv_heads), as ours does.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby.config import Config, ConfigError
from baby.formats import architecture
from baby.nn import variants
from baby.tokenizers import BOS, EOS, PAD

GPT2, LLAMA = "GPT2LMHeadModel", "LlamaForCausalLM"
EXPORTABLE = ("exportable: GPT-2 (c_attention=mha, c_network=mlp, c_norm=layer, c_position=learned, "
              "c_bias=true, head_size=n_emb, r_temp=1) or LLaMA (c_attention=mha or gqa, c_network=swi, "
              "c_norm=rms, c_position=rope, r_temp=1)")


def family(cfg: Config) -> str:
    """GPT2 or LLAMA for a shape HF has a class for; else one line naming the setting in the way."""
    a = architecture(cfg)
    if cfg.c_sequence != "pre":
        raise ConfigError(f"c_sequence={cfg.c_sequence!r}: GPT-2 and LLaMA blocks are pre-norm; {EXPORTABLE}")
    if cfg.c_head_bias:
        raise ConfigError(f"c_head_bias=true: the heads of GPT-2 and LLaMA have no bias; {EXPORTABLE}")
    if a["r_temp"] != 1.0:
        raise ConfigError(f"r_temp={cfg.r_temp}: HF attention has no temperature; {EXPORTABLE}")
    # each variant declares the HF layers it is (``hf_families`` on its class)
    mixers = [variants.lookup("mixer", m).cls for m in a["mixers"]]
    if len(mixers) != 1 or not mixers[0].hf_families:
        raise ConfigError(f"c_attention={cfg.c_attention!r}: HF has no class for it; {EXPORTABLE}")
    network = variants.lookup("network", a["network"]).cls if a["network"] else None
    families = set(mixers[0].hf_families) & set(network.hf_families if network else ())
    if "gpt2" in families and a["position"] == "learned":
        wanted = {"norm": "layer", "norm_final": "layer", "bias": True}
        for key, value in wanted.items():
            if a[key] != value:
                raise ConfigError(f"{key}={a[key]!r}: the GPT-2 shape needs {value!r}; {EXPORTABLE}")
        if a["head_dim"] * a["n_heads"] != a["n_emb"]:
            raise ConfigError(f"head_size={cfg.head_size}: GPT-2 needs head_size = n_emb; {EXPORTABLE}")
        return GPT2
    if "llama" in families and a["position"] == "rope":
        for key, value in {"norm": "rms", "norm_final": "rms"}.items():
            if a[key] != value:
                raise ConfigError(f"{key}={a[key]!r}: the LLaMA shape needs {value!r}; {EXPORTABLE}")
        return LLAMA
    raise ConfigError(f"c_network={cfg.c_network!r} with c_position={cfg.c_position!r}: HF has no class "
                      f"for it; {EXPORTABLE}")


def hf_config(cfg: Config, n_vocab: int) -> dict[str, Any]:
    """config.json of the HF class for ``cfg`` (``baby``: our own settings, for the way back)."""
    a, kind = architecture(cfg), family(cfg)
    common = {"architectures": [kind], "vocab_size": n_vocab, "bos_token_id": BOS, "eos_token_id": EOS,
              "pad_token_id": PAD, "tie_word_embeddings": a["tie"], "initializer_range": 0.02,
              "torch_dtype": "float32", "dtype": "float32", "use_cache": True,
              "baby": {"settings": cfg.to_dict(), "architecture": a}}
    if kind == GPT2:
        return {"model_type": "gpt2", "n_positions": a["n_ctx"], "n_embd": a["n_emb"], "n_layer": a["n_layers"],
                "n_head": a["n_heads"], "n_inner": a["hidden"], "activation_function": "gelu_new",
                "layer_norm_epsilon": a["norm_eps"], "resid_pdrop": cfg.r_dropout, "embd_pdrop": cfg.r_dropout,
                "attn_pdrop": 0.0, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, **common}
    return {"model_type": "llama", "hidden_size": a["n_emb"], "intermediate_size": a["hidden"],
            "num_hidden_layers": a["n_layers"], "num_attention_heads": a["n_heads"],
            "num_key_value_heads": a["n_kv_heads"], "head_dim": a["head_dim"], "hidden_act": "silu",
            "max_position_embeddings": a["n_ctx"], "rms_norm_eps": a["norm_eps"], "rope_theta": a["rope_base"],
            "rope_scaling": None, "attention_bias": a["bias"], "mlp_bias": a["bias"], "attention_dropout": 0.0,
            "pretraining_tp": 1, **common}


# ---- back: config.json -> our settings ------------------------------------------------------------

def _field(data: dict[str, Any], key: str, default: Any = None, allowed: tuple[Any, ...] | None = None) -> Any:
    value = data.get(key, default)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"config.json: {key}={value!r} has no equivalent here (allowed {', '.join(map(repr, allowed))})")
    return value


def _positive(data: dict[str, Any], key: str, default: Any = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"config.json: {key}={value!r} must be a positive integer")
    return value


def settings_from_hf(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(HF class, our architecture settings) of a config.json; refuses a field we cannot honour."""
    kinds = data.get("architectures") or []
    model_type = data.get("model_type")
    kind = GPT2 if model_type == "gpt2" else LLAMA if model_type == "llama" else None
    if kind is None or (kinds and kinds != [kind]):
        raise ConfigError(f"config.json: model_type={model_type!r}, architectures={kinds!r}: "
                          f"allowed gpt2 ({GPT2}) or llama ({LLAMA})")
    if kind == GPT2:
        n_emb = _positive(data, "n_embd")
        _field(data, "activation_function", "gelu_new", ("gelu_new", "gelu_pytorch_tanh"))
        _field(data, "layer_norm_epsilon", 1e-5, (1e-5,))
        _field(data, "scale_attn_weights", True, (True,))
        _field(data, "scale_attn_by_inverse_layer_idx", False, (False,))
        _field(data, "add_cross_attention", False, (False,))
        hidden = data.get("n_inner") or 4 * n_emb
        return kind, {"c_attention": "mha", "c_network": "mlp", "c_norm": "layer", "c_norm_final": "",
                      "c_position": "learned", "c_bias": True, "c_tie": bool(data.get("tie_word_embeddings", True)),
                      "n_ctx": _positive(data, "n_positions"), "n_emb": n_emb, "head_size": 0,
                      "n_heads": _positive(data, "n_head"), "n_layers": _positive(data, "n_layer"),
                      "r_hidden": hidden / n_emb, "r_temp": 1.0}
    n_emb, heads = _positive(data, "hidden_size"), _positive(data, "num_attention_heads")
    kv = _positive(data, "num_key_value_heads", heads)
    if heads % kv:
        raise ConfigError(f"config.json: num_key_value_heads={kv} must divide num_attention_heads={heads}")
    head_dim = _positive(data, "head_dim", n_emb // heads)
    _field(data, "hidden_act", "silu", ("silu",))
    _field(data, "rms_norm_eps", 1e-6, (1e-6,))
    rope = data.get("rope_parameters") or {}
    _field(rope, "rope_type", "default", ("default",))
    theta = rope.get("rope_theta", data.get("rope_theta", 10000.0))
    if theta != 10000.0:
        raise ConfigError(f"config.json: rope_theta={theta!r} has no equivalent here (allowed 10000.0)")
    _field(data, "rope_scaling", None, (None,))
    _field(data, "pretraining_tp", 1, (1,))
    bias = _field(data, "attention_bias", False, (True, False))
    _field(data, "mlp_bias", bias, (bias,))
    hidden = _positive(data, "intermediate_size")
    settings = {"c_attention": "mha" if kv == heads else "gqa", "c_network": "swi", "c_norm": "rms", "c_norm_final": "",
                "c_position": "rope", "c_bias": bool(bias), "c_tie": bool(data.get("tie_word_embeddings", False)),
                "n_ctx": _positive(data, "max_position_embeddings"), "n_emb": n_emb,
                "head_size": 0 if head_dim * heads == n_emb else head_dim * heads, "n_heads": heads,
                "n_layers": _positive(data, "num_hidden_layers"), "r_hidden": hidden / n_emb, "r_temp": 1.0}
    if kv != heads:
        settings["n_kv_heads"] = kv
    return kind, settings


# ---- weights ----------------------------------------------------------------------------------------

def _block(i: int, j: int, name: str) -> str:
    return f"blocks.{i}.parts.{j}.{name}"


def to_hf_tensors(cfg: Config, ours: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    """Our named weights as the HF class's state dict (torch Linear weights are (out, in))."""
    a, kind = architecture(cfg), family(cfg)
    out: dict[str, numpy.ndarray] = {}
    q_width, kv_width = a["n_heads"] * a["head_dim"], a["n_kv_heads"] * a["head_dim"]
    for i in range(a["n_layers"]):
        if kind == GPT2:
            p = f"transformer.h.{i}."
            for ln, j in (("ln_1", 0), ("ln_2", 1)):
                out[p + f"{ln}.weight"], out[p + f"{ln}.bias"] = ours[_block(i, j, "norm.gain")], ours[_block(i, j, "norm.bias")]
            # GPT-2's Conv1D keeps (in, out) like our Linear, and its c_attn the same [q | k | v] columns
            for hf, mine, j in (("attn.c_attn", "inner.qkv", 0), ("attn.c_proj", "inner.proj", 0),
                                ("mlp.c_fc", "inner.up", 1), ("mlp.c_proj", "inner.down", 1)):
                for end in ("weight", "bias"):
                    out[p + f"{hf}.{end}"] = ours[_block(i, j, f"{mine}.{end}")]
            continue
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ours[_block(i, 0, "norm.gain")]
        out[p + "post_attention_layernorm.weight"] = ours[_block(i, 1, "norm.gain")]
        cuts = {"q_proj": (0, q_width), "k_proj": (q_width, q_width + kv_width), "v_proj": (q_width + kv_width, None)}
        for hf, (lo, hi) in cuts.items():
            out[p + f"self_attn.{hf}.weight"] = ours[_block(i, 0, "inner.qkv.weight")][:, lo:hi].T
            if a["bias"]:
                out[p + f"self_attn.{hf}.bias"] = ours[_block(i, 0, "inner.qkv.bias")][lo:hi]
        hidden = a["hidden"]
        for hf, mine, j, cut in (("self_attn.o_proj", "inner.proj", 0, None), ("mlp.up_proj", "inner.up_gate", 1, (0, hidden)),
                                 ("mlp.gate_proj", "inner.up_gate", 1, (hidden, None)), ("mlp.down_proj", "inner.down", 1, None)):
            w = ours[_block(i, j, f"{mine}.weight")]
            out[p + f"{hf}.weight"] = (w if cut is None else w[:, cut[0]:cut[1]]).T
            if a["bias"]:
                b = ours[_block(i, j, f"{mine}.bias")]
                out[p + f"{hf}.bias"] = b if cut is None else b[cut[0]:cut[1]]
    if kind == GPT2:
        out["transformer.wte.weight"], out["transformer.wpe.weight"] = ours["tok.weight"], ours["pos.weight"]
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = ours["norm.gain"], ours["norm.bias"]
    else:
        out["model.embed_tokens.weight"], out["model.norm.weight"] = ours["tok.weight"], ours["norm.gain"]
    if not a["tie"]:
        out["lm_head.weight"] = ours["head.weight"].T
    return {k: numpy.ascontiguousarray(v) for k, v in out.items()}


def from_hf_tensors(cfg: Config, theirs: dict[str, numpy.ndarray], where: str) -> dict[str, numpy.ndarray]:
    """The inverse of ``to_hf_tensors``; a missing tensor is named (shapes are checked on load)."""
    a, kind = architecture(cfg), family(cfg)
    names = set(to_hf_tensors(cfg, _Probe()))
    if a["tie"] and "lm_head.weight" in theirs:  # a tied head saved anyway must be the embedding itself
        embedding = theirs.get("transformer.wte.weight" if kind == GPT2 else "model.embed_tokens.weight")
        if embedding is None or not numpy.array_equal(theirs["lm_head.weight"], embedding):
            raise ConfigError(f"{where}: tie_word_embeddings=true, but lm_head.weight differs from the token "
                              "embedding (set tie_word_embeddings to false for a separate head)")
        theirs = {k: v for k, v in theirs.items() if k != "lm_head.weight"}
    missing, extra = sorted(names - set(theirs)), sorted(set(theirs) - names)
    extra = [k for k in extra if not k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))]  # buffers
    if missing or extra:
        raise ConfigError(f"{where}: tensors do not match config.json (missing {missing[:3]}, unexpected {extra[:3]})")
    get = theirs.__getitem__
    ours: dict[str, numpy.ndarray] = {}
    for i in range(a["n_layers"]):
        if kind == GPT2:
            p = f"transformer.h.{i}."
            for ln, j in (("ln_1", 0), ("ln_2", 1)):
                ours[_block(i, j, "norm.gain")], ours[_block(i, j, "norm.bias")] = get(p + f"{ln}.weight"), get(p + f"{ln}.bias")
            for hf, mine, j in (("attn.c_attn", "inner.qkv", 0), ("attn.c_proj", "inner.proj", 0),
                                ("mlp.c_fc", "inner.up", 1), ("mlp.c_proj", "inner.down", 1)):
                for end in ("weight", "bias"):
                    ours[_block(i, j, f"{mine}.{end}")] = get(p + f"{hf}.{end}")
            continue
        p = f"model.layers.{i}."
        ours[_block(i, 0, "norm.gain")] = get(p + "input_layernorm.weight")
        ours[_block(i, 1, "norm.gain")] = get(p + "post_attention_layernorm.weight")
        fused = {"inner.qkv": (0, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                 "inner.proj": (0, ["self_attn.o_proj"]), "inner.up_gate": (1, ["mlp.up_proj", "mlp.gate_proj"]),
                 "inner.down": (1, ["mlp.down_proj"])}
        for mine, (j, parts) in fused.items():
            ours[_block(i, j, f"{mine}.weight")] = numpy.concatenate([get(p + f"{hf}.weight").T for hf in parts], axis=1)
            if a["bias"]:
                ours[_block(i, j, f"{mine}.bias")] = numpy.concatenate([get(p + f"{hf}.bias") for hf in parts])
    if kind == GPT2:
        ours["tok.weight"], ours["pos.weight"] = get("transformer.wte.weight"), get("transformer.wpe.weight")
        ours["norm.gain"], ours["norm.bias"] = get("transformer.ln_f.weight"), get("transformer.ln_f.bias")
    else:
        ours["tok.weight"], ours["norm.gain"] = get("model.embed_tokens.weight"), get("model.norm.weight")
    if not a["tie"]:
        ours["head.weight"] = get("lm_head.weight").T
    return {k: numpy.ascontiguousarray(v) for k, v in ours.items()}


class _Probe(dict):
    """Answers every name with an empty matrix: ``to_hf_tensors`` run on it lists the HF names."""

    def __missing__(self, key: str) -> numpy.ndarray:
        return numpy.zeros((0, 0))
