"""Remote-code export: every architecture HF has no class for leaves as a ``transformers`` remote-code
model. The directory holds ``configuration_baby.py`` and ``modeling_baby.py`` (a PyTorch twin of every
registered variant, shipped inside this package in ``remote_code/``, copied as they are),
``config.json`` naming them in ``auto_map``, and ``model.safetensors`` with the run's own tensors:
the same names and layouts as our model files, so both directions are the identity on the weights.

Nothing here imports torch or transformers; baby never imports the files of ``remote_code/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from baby.config import Config, ConfigError
from baby.formats import architecture
from baby.nn.mixers.conv import conv_groups, parse_dilations
from baby.tokenizers import BOS, EOS, PAD

MODEL_TYPE = "baby"
SOURCE = Path(__file__).resolve().parent / "remote_code"
FILES = ("configuration_baby.py", "modeling_baby.py")
AUTO_MAP = {"AutoConfig": "configuration_baby.BabyConfig", "AutoModelForCausalLM": "modeling_baby.BabyForCausalLM"}
# the variants modeling_baby.py implements (its MIXERS and NETWORKS; tests/test_hf_remote.py holds them equal)
IMPLEMENTED = {"mixer": ("aft", "conv", "gla", "gqa", "induction", "mha", "moh", "rfa", "swh"),
               "network": ("ggl", "gln", "lor", "mlp", "moe", "nft", "swi")}
# the config.json fields that fix the computation: import checks them against the recorded settings
SHAPE_FIELDS = ("vocab_size", "n_ctx", "n_emb", "n_layers", "n_heads", "n_kv_heads", "head_dim", "head_width",
                "hidden", "mixers", "network", "norm", "norm_eps", "norm_final", "norm_final_eps", "sequence",
                "position", "rope_base", "bias", "tie", "head_bias", "r_temp", "n_conv_groups", "n_conv_taps", "conv_dilations",
                "c_conv_static", "n_induction_m", "n_induction_heads", "c_induction_sink", "n_gla_taps", "window",
                "n_groups", "n_experts", "n_top", "n_rank", "r_lora_alpha")


def check(cfg: Config) -> None:
    """Refuses, in one line, a run the remote-code model cannot compute (a variant it has no twin of)."""
    a = architecture(cfg)
    for kind, names in (("mixer", a["mixers"]), ("network", [a["network"]] if a["network"] else [])):
        missing = [n for n in names if n not in IMPLEMENTED[kind]]
        if missing:
            key = "c_attention" if kind == "mixer" else "c_network"
            raise ConfigError(f"{key}={missing[0]!r}: modeling_baby.py has no PyTorch twin of it (it implements "
                              f"{', '.join(IMPLEMENTED[kind])}); this run cannot be exported")


def remote_config(cfg: Config, n_vocab: int) -> dict[str, Any]:
    """config.json of the remote-code model: the resolved architecture (what BabyConfig reads) and our
    settings under ``baby`` (the way back)."""
    check(cfg)
    a = architecture(cfg)
    chosen = set(a["mixers"]) | {a["network"]}
    shape = {
        "vocab_size": n_vocab, "n_ctx": a["n_ctx"], "n_emb": a["n_emb"], "n_layers": a["n_layers"],
        "n_heads": a["n_heads"], "n_kv_heads": a["n_kv_heads"], "head_dim": a["head_dim"],
        "head_width": cfg.head_width, "hidden": a["hidden"], "mixers": a["mixers"], "network": a["network"],
        "norm": a["norm"], "norm_eps": a["norm_eps"], "norm_final": a["norm_final"],
        "norm_final_eps": a["norm_final_eps"],
        "sequence": cfg.c_sequence,
        "position": a["position"], "rope_base": a["rope_base"], "bias": a["bias"], "tie": a["tie"],
        "head_bias": cfg.c_head_bias, "r_temp": a["r_temp"],
        # each variant's settings, resolved as the variant resolves them (BabyConfig's defaults otherwise)
        "n_conv_groups": conv_groups(cfg) if "conv" in chosen else 16, "n_conv_taps": cfg.n_conv_taps,
        "conv_dilations": parse_dilations(cfg.s_conv_dilations), "c_conv_static": cfg.c_conv_static,
        "n_induction_m": cfg.n_induction_m, "n_induction_heads": cfg.n_induction_heads,
        "c_induction_sink": cfg.c_induction_sink, "n_gla_taps": cfg.n_gla_taps,
        "window": cfg.s_window or max(1, cfg.n_ctx // 4), "n_groups": cfg.n_groups,
        "n_experts": cfg.n_experts, "n_top": cfg.n_top, "n_rank": cfg.n_rank, "r_lora_alpha": cfg.r_lora_alpha,
    }
    return {"architectures": ["BabyForCausalLM"], "model_type": MODEL_TYPE, "auto_map": AUTO_MAP, **shape,
            "dropout": cfg.r_dropout, "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
            "tie_word_embeddings": False, "use_cache": False, "torch_dtype": "float32", "dtype": "float32",
            "baby": {"settings": cfg.to_dict(), "architecture": a}}


def module_sources() -> dict[str, str]:
    """The two Python files of a remote-code directory, by name."""
    return {name: (SOURCE / name).read_text(encoding="utf-8") for name in FILES}


def settings_from_remote(data: dict[str, Any], n_vocab: int, kind: str, where: str) -> Config:
    """Our settings of a remote-code config.json: its ``baby.settings``, which must describe the model
    the fields of config.json describe (an edited field is refused naming it)."""
    saved = data.get("baby", {}).get("settings") if isinstance(data.get("baby"), dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(f"{where}: model_type='baby' without a 'baby.settings' object (not an export of ours)")
    cfg = Config(saved, source=f"{where}: baby.settings")
    if cfg.c_tokenizer != kind:
        raise ConfigError(f"{where}: baby.settings has c_tokenizer={cfg.c_tokenizer!r}, but tokenizer.json is {kind}")
    expected = remote_config(cfg, n_vocab)
    for key in SHAPE_FIELDS:
        if key in data and data[key] != expected[key]:
            raise ConfigError(f"{where}: {key}={data[key]!r}, but baby.settings make {expected[key]!r}")
    return cfg
