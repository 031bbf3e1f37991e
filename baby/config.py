"""One typed config: every setting with its default, type, range and meaning; validation that names
the key, the value and what is allowed; JSON in and out.

Variant-specific settings (``n_kv_heads``, ``s_window``, ``n_experts`` ...) are declared next to the
variant that uses them (``register(..., settings=...)``) and collected here from the registry.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from baby.jsonio import FileFault, read_json
from baby.nn import variants
from baby.nn.settings import ConfigError, Setting, split_list

__all__ = ["Config", "ConfigError", "Setting", "all_settings", "as_config", "parse_override", "parse_warmup",
           "parse_word_counts", "settings_table"]


def _s(key: str, type_: type, default: Any, doc: str, low: float | None = None,
       high: float | None = None, choices: tuple[Any, ...] | None = None, role: str = "architecture",
       resume: bool = False) -> Setting:
    return Setting(key, type_, default, doc, low, high, choices, role, resume)


# Names come from the seed (c_*, n_*, r_*, s_*, d_*); the additions keep its style.
BASE: tuple[Setting, ...] = (
    _s("c_device", str, "cpu", "cpu: NumPy; gpu: CuPy", choices=("cpu", "gpu"), role="runtime"),
    _s("c_device_cpu_cores", int, 0, "CPU threads, for BLAS and for baby's pool of elementwise work (0: every core)",
       0, 1024, role="runtime", resume=True),
    _s("c_device_cpu_yield", int, 1, "1: when other processes keep cores busy as a run starts, use only the free "
       "ones (at least 1): threads that wait for a busy core are several times slower than one thread", 0, 1, role="runtime"),
    _s("c_device_cpu_parallel", str, "auto", "how a CPU step uses its threads: batch: one replica of the model "
       "per thread, each training its slice of the batch (every operation runs on every core; measured faster on "
       "2 cores); ops: one model, each GEMM and large operation split over the threads; auto: batch when the "
       "micro-batch has a row for each thread", choices=("auto", "batch", "ops"), role="runtime", resume=True),
    _s("c_ops", str, "fast", "bodies of the elementwise ops (baby/ops/): fast (in place, row blocks, fused kernels) or "
       "reference (the textbook formulas, for learning and debugging; BABY_OPS=reference does the same)",
       choices=("fast", "reference"), role="runtime", resume=True),
    _s("c_device_gpu_core", int, 0, "index of the GPU to use", 0, 64, role="runtime"),
    _s("c_device_gpu_tensor", int, 0, "1 allows TF32 tensor cores for fp32 matmuls on the GPU", 0, 1, role="runtime"),
    _s("d_type", str, "fp32", "compute dtype (fp16: mixed precision, fp32 master weights and dynamic loss "
       "scaling; on the CPU its products run as fp32 GEMMs)", choices=("fp16", "fp32", "fp64"), role="architecture"),
    _s("c_tokenizer", str, "char", "tokenizer: char, word, or bpe (byte-level BPE)", choices=("char", "word", "bpe"),
       role="data"),
    _s("n_vocab", int, 0, "BPE vocabulary size (char/word: 0, the vocabulary is what the text has)", 0, 1 << 20, role="data"),
    _s("c_window_offset", str, "zero", "where training windows start: zero: cut once from token 0; random: from a "
       "new random offset in [0, n_ctx) every epoch", choices=("zero", "random"), role="data"),
    _s("c_sequence", str, "pre", "where the norms sit in a block (the original's meaning): pre: x + f(norm(x)); "
       "post: norm(x + f(x)); the final norm before the head stays in both", choices=("pre", "post"),
       role="architecture"),
    _s("c_attention", str, "mha", "sequence mixers of a block, joined by '+' (e.g. conv+induction)", role="architecture"),
    _s("c_network", str, "mlp", "feed-forward variant (empty: none)", role="architecture"),
    _s("c_norm", str, "layer", "normalisation: layer (LayerNorm) or rms (RMSNorm)", choices=("layer", "rms"),
       role="architecture"),
    _s("c_norm_final", str, "", "final normalisation before the head (empty: same as c_norm)",
       choices=("", "layer", "rms"), role="architecture"),
    _s("c_position", str, "learned", "positions: learned table, rope (rotary, in attention) or none",
       choices=("learned", "rope", "none"), role="architecture"),
    _s("c_bias", bool, True, "biases in linear projections (LayerNorm always has its bias)", role="architecture"),
    _s("c_tie", bool, True, "output head shares the token embedding matrix", role="architecture"),
    _s("c_head_bias", bool, False, "a bias on the output head's logits (the original Little Baby's head has one)",
       role="architecture"),
    _s("n_ctx", int, 64, "context length in tokens", 1, 1 << 20, role="architecture"),
    _s("n_emb", int, 128, "model width", 1, 1 << 16, role="architecture"),
    _s("head_size", int, 0, "total attention width, divisible by n_heads (0: n_emb)", 0, 1 << 16, role="architecture"),
    _s("n_heads", int, 4, "attention heads", 1, 1024, role="architecture"),
    _s("n_layers", int, 4, "blocks", 0, 1024, role="architecture"),
    _s("r_hidden", float, 4.0, "feed-forward hidden width as a multiple of n_emb", 0.25, 64.0, role="architecture"),
    _s("n_epochs", int, 1, "passes over the training windows (ignored when n_steps > 0)", 1, 1 << 20,
       role="optimisation", resume=True),
    _s("n_steps", int, 0, "optimizer steps to run (0: n_epochs worth)", 0, 1 << 30, role="optimisation", resume=True),
    _s("batch_size", int, 16, "windows per micro-batch", 1, 1 << 16, role="optimisation"),
    _s("n_accumulate", int, 1, "micro-batches per optimizer step (gradient accumulation)", 1, 1024, role="optimisation"),
    _s("r_dropout", float, 0.0, "dropout rate on embeddings and residual branches", 0.0, 0.9, role="optimisation"),
    _s("r_temp", float, 1.0, "softmax temperature: attention scores (mha, gqa, moh, swh, rfa, induction), "
       "the moh/swh head gates and the moe router (not conv's taps)", 1e-3, 1e3, role="architecture"),
    _s("r_learn", float, 1e-3, "peak learning rate", 1e-7, 1.0, role="optimisation", resume=True),
    _s("r_learn_min", float, 1e-4, "learning rate at the end of the cosine decay", 0.0, 1.0, role="optimisation", resume=True),
    _s("s_warmup", str, "auto", "linear warmup: none, auto (min(100, 5% of steps)), steps (int) or a fraction (0-1)",
       role="optimisation", resume=True),
    _s("r_decay_share", float, 0.0, "the schedule after warmup: 0: cosine decay to r_learn_min; a share in (0, 1]: "
       "warmup-stable-decay, r_learn held until that last share of the steps, then a linear decay to r_learn_min",
       0.0, 1.0, role="optimisation", resume=True),
    _s("r_decay", float, 0.1, "AdamW decoupled weight decay (matrices only)", 0.0, 10.0, role="optimisation"),
    _s("r_beta1", float, 0.9, "AdamW beta1", 0.0, 0.99999, role="optimisation"),
    _s("r_beta2", float, 0.99, "AdamW beta2", 0.0, 0.99999, role="optimisation"),
    _s("r_eps", float, 1e-8, "AdamW epsilon", 1e-12, 1.0, role="optimisation"),
    _s("r_clip", float, 1.0, "gradient-norm clip (0: off)", 0.0, 1e6, role="optimisation", resume=True),
    _s("c_shuffle", bool, True, "shuffle the order of training windows each epoch (never tokens)", role="data"),
    _s("r_split", float, 0.9, "train share of the token stream; the rest is validation", 0.1, 0.99, role="data"),
    _s("seed", int, 1337, "seed of initialisation, data order, dropout and sampling", 0, (1 << 32) - 1, role="optimisation"),
    _s("n_eval_every", int, 0, "steps between validation losses (0: about 10 per run)", 0, 1 << 30, role="runtime", resume=True),
    _s("n_eval_batches", int, 20, "batches per validation loss", 1, 1 << 20, role="runtime"),
    _s("n_checkpoint_every", int, 0, "steps between resumable checkpoints (0: at every evaluation)", 0, 1 << 30,
       role="runtime", resume=True),
    _s("n_rollback", int, 2, "earlier checkpoints kept as rollback points beside the latest (each about 3x the "
       "model file): train --resume G --from-step S continues from one", 0, 1000, role="runtime", resume=True),
    _s("r_spike_loss", float, 2.0, "stop when a progress line's loss is this many nats (and 4 standard deviations) "
       "above the mean of the last 8 lines (0: off), while a rollback point from before the spike is kept", 0.0, 100.0,
       role="optimisation", resume=True),
    _s("r_spike_norm", float, 100.0, "stop when the gradient norm of a logged step is this many times the median "
       "of the last 8 logged steps (0: off)", 0.0, 1e6, role="optimisation", resume=True),
    _s("n_log_every", int, 0, "steps between progress lines (0: about 50 per run)", 0, 1 << 30, role="runtime", resume=True),
    _s("s_checkpoint_words", str, "", "learning-curve checkpoints at these counts of words seen, e.g. "
       "\"1M,2M,5M\" (K and M suffixes): models/model_<guid>_chck_1M.json ...", role="runtime"),
    _s("n_sample_tokens", int, 200, "tokens generated from an empty prompt after training", 0, 1 << 20,
       role="sampling", resume=True),
    _s("r_sample_temp", float, 0.8, "sampling temperature of that completion (0: greedy)", 0.0, 100.0, role="sampling"),
    _s("n_top_k", int, 0, "sample from the k most likely tokens (0: all)", 0, 1 << 20, role="sampling"),
    _s("r_top_p", float, 1.0, "nucleus sampling mass", 0.0, 1.0, role="sampling"),
)


def _variant_settings() -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for kind in ("mixer", "network"):
        for entry in variants.entries(kind):
            for s in entry.settings:
                if s.key in out and out[s.key] != s:
                    raise RuntimeError(f"setting {s.key!r} declared differently by two variants")
                out[s.key] = s
    return out


def all_settings() -> dict[str, Setting]:
    settings = {s.key: s for s in BASE}
    for key, s in _variant_settings().items():
        settings.setdefault(key, s)
    return settings


def _check_type(s: Setting, value: Any) -> Any:
    if s.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif s.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif s.type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN would slip through every range comparison
                raise ConfigError(f"{s.key}={value!r}: must be a finite number ({s.doc})")
            return float(value)
    elif s.type is str:
        if isinstance(value, str):
            return value
        if s.key == "s_warmup" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{s.key}={value!r}: must be a finite number ({s.doc})")
            return value
    raise ConfigError(f"{s.key}={value!r}: expected {s.type.__name__} ({s.doc})")


def _check_range(s: Setting, value: Any) -> None:
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{s.key}={value!r}: allowed {', '.join(map(str, s.choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (s.low is not None and value < s.low) or (s.high is not None and value > s.high):
            raise ConfigError(f"{s.key}={value!r}: allowed range [{s.low}, {s.high}] ({s.doc})")


def parse_warmup(value: Any, total_steps: int) -> int:
    """s_warmup to a step count: none, auto, steps (int >= 1) or a fraction of the run (0 < f < 1)."""
    if value in ("none", 0):
        return 0
    if value == "auto":
        return min(100, max(1, total_steps // 20))
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"s_warmup={value!r}: allowed none, auto, a step count or a fraction in (0, 1)") from None
    if 0 < number < 1:
        return max(1, int(round(number * total_steps)))
    if number >= 1 and float(number).is_integer():
        return int(number)
    raise ConfigError(f"s_warmup={value!r}: allowed none, auto, a step count or a fraction in (0, 1)")


def parse_word_counts(text: str) -> list[tuple[str, int]]:
    """"1M,2.5M,500K" -> [("500K", 500000), ("1M", 1000000), ("2.5M", 2500000)] (label, words)."""
    out = []
    for raw in split_list("s_checkpoint_words", text, ",", "1M,2M,5M"):
        scale = {"K": 1_000, "M": 1_000_000}.get(raw[-1].upper(), 1)
        number = raw[:-1] if scale > 1 else raw
        try:
            words = int(round(float(number) * scale))
        except ValueError:
            raise ConfigError(f"s_checkpoint_words={text!r}: {raw!r} is not a word count like 1M, 500K or 20000") from None
        if words <= 0 or not re.fullmatch(r"[0-9.]+[KkMm]?", raw):
            raise ConfigError(f"s_checkpoint_words={text!r}: {raw!r} is not a positive word count like 1M or 500K")
        out.append((raw, words))
    return sorted(out, key=lambda item: item[1])


# The original project's key names (its generations of them) -> ours; keys it wrote that have no
# meaning here are ignored, and said so.
LEGACY_NAMES = {"s_head": "head_size", "s_batch": "batch_size", "dropout": "r_dropout", "lr": "r_learn",
                "num_epochs": "n_epochs"}
LEGACY_IGNORED = ("c_optimizer", "c_device_gpu_cuda", "runtime", "guid")


def _number(s: Setting, value: str) -> Any:
    """A setting the original wrote as a string ("16", "0", "1e-3", "true") in its own type."""
    text = value.strip()
    if s.type is bool and text.lower() in ("true", "false", "0", "1"):
        return text.lower() in ("true", "1")
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{s.key}={value!r}: expected {s.type.__name__} ({s.doc})") from None
    return int(number) if s.type is int and number.is_integer() else number


def from_legacy(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Settings in our names and types from a file of the original project (or ours, unchanged), and
    the one notice line that lists what was renamed, read as numbers or ignored ("" when nothing)."""
    settings = all_settings()
    out: dict[str, Any] = {}
    renamed, numbers, ignored = [], [], []
    for key, value in data.items():
        if key in LEGACY_IGNORED and key not in settings:
            ignored.append(key)
            continue
        if key in LEGACY_NAMES and key not in settings:
            if LEGACY_NAMES[key] in data:
                raise ConfigError(f"{key} and {LEGACY_NAMES[key]} are both given (the same setting, old and new name)")
            renamed.append(f"{key}->{LEGACY_NAMES[key]}")
            key = LEGACY_NAMES[key]
        s = settings.get(key)
        if s is not None and s.type is not str and isinstance(value, str):
            value = _number(s, value)
            numbers.append(key)
        out[key] = value
    parts = [f"renamed {', '.join(renamed)}" if renamed else "", f"read as numbers {', '.join(numbers)}" if numbers else "",
             f"ignored {', '.join(ignored)}" if ignored else ""]
    notice = "; ".join(p for p in parts if p)
    return out, f"settings of the original project: {notice}" if notice else ""


# Keys every full settings dict this project wrote (a run's config file, ``info --json``) holds. Such a
# dict without c_window_offset was written while c_sequence still meant where windows start.
FULL_DUMP = frozenset({"c_device_cpu_cores", "r_learn_min", "n_log_every", "n_top_k", "r_top_p", "c_sequence"})


def migrate_sequence(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Settings written in full before ``c_sequence`` took the original's meaning (where the norms sit)
    read as they were trained: their c_sequence becomes c_window_offset and their blocks stay pre-norm.
    Returns the settings and a notice ("" when nothing changed)."""
    if "c_window_offset" in values or not FULL_DUMP <= values.keys() or values["c_sequence"] not in ("pre", "post"):
        return values, ""
    offset = "random" if values["c_sequence"] == "post" else "zero"
    migrated = {**values, "c_sequence": "pre", "c_window_offset": offset}
    return migrated, (f"c_sequence={values['c_sequence']!r} was written when it meant where training windows start: "
                      f"read as c_window_offset={offset!r} with pre-norm blocks (c_sequence now places the norms)")


class Config:
    """Validated settings with attribute access: ``cfg.n_emb``. Immutable after construction."""

    def __init__(self, values: dict[str, Any] | None = None, source: str = "config") -> None:
        values, migration = migrate_sequence(dict(values or {}))
        settings = all_settings()
        merged = {key: s.default for key, s in settings.items()}
        for key, value in (values or {}).items():
            if key not in settings:
                close = difflib.get_close_matches(str(key), settings, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else " (the README's settings table lists them all)"
                raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
            s = settings[key]
            try:
                merged[key] = _check_type(s, value)
                _check_range(s, merged[key])
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
        object.__setattr__(self, "_values", merged)
        object.__setattr__(self, "given", frozenset(values or {}))  # keys set explicitly, for notices
        object.__setattr__(self, "legacy_notice", "")  # set by load() for a file of the original project
        object.__setattr__(self, "migration_notice", migration)
        try:
            self._check_relations()
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def _check_relations(self) -> None:
        v = self._values
        head_size = self.head_width
        if head_size % v["n_heads"]:
            raise ConfigError(f"head_size={head_size} must be divisible by n_heads={v['n_heads']}")
        for name in self.mixers:
            if name not in variants.names("mixer"):
                raise ConfigError(f"c_attention={v['c_attention']!r}: {name!r} is not a mixer; "
                                  f"allowed {', '.join(variants.names('mixer'))} joined by '+'")
        if v["c_network"] and v["c_network"] not in variants.names("network"):
            raise ConfigError(f"c_network={v['c_network']!r}: allowed {', '.join(variants.names('network'))}")
        chosen = [("mixer", m) for m in self.mixers] + ([("network", v["c_network"])] if v["c_network"] else [])
        chosen_classes = {variants.lookup(kind, name).cls for kind, name in chosen}
        for cls in chosen_classes:  # relations a variant's settings must satisfy (n_top <= n_experts ...)
            cls.check_config(self)
        for kind in ("mixer", "network"):  # settings of a variant that is not chosen (c_freeze_base ...)
            for entry in variants.entries(kind):
                if entry.cls not in chosen_classes:
                    entry.cls.check_config_unchosen(self)
        if v["c_tokenizer"] == "bpe" and v["n_vocab"] < 260:
            raise ConfigError(f"n_vocab={v['n_vocab']}: a bpe tokenizer needs n_vocab >= 260 (256 bytes + specials)")
        parse_warmup(v["s_warmup"], 1000)
        parse_word_counts(v["s_checkpoint_words"])
        if v["r_top_p"] <= 0:
            raise ConfigError("r_top_p=0: allowed (0, 1]; nucleus sampling needs some probability mass (1: off)")
        if v["r_learn_min"] > v["r_learn"]:
            raise ConfigError(f"r_learn_min={v['r_learn_min']} must not exceed r_learn={v['r_learn']}")

    def notices(self) -> list[str]:
        """Settings given explicitly that the chosen tokenizer or variants ignore: said, never silent."""
        v = self._values
        out = [n for n in (self.legacy_notice, self.migration_notice) if n]
        if not self.mixers and v["n_layers"]:
            out.append("c_attention='': the blocks have no sequence mixer, so each position sees only its own "
                       "token (a bigram model, deeper)")
        if "c_sequence" in self.given and v["c_sequence"] == "post" and not self.migration_notice:
            out.append("c_sequence='post': post-norm blocks, norm(x + f(x)) (the original's meaning); random "
                       "window offsets, which it meant here before, are c_window_offset='random'")
        if "n_vocab" in self.given and v["c_tokenizer"] != "bpe" and v["n_vocab"]:
            out.append(f"n_vocab={v['n_vocab']} is ignored by c_tokenizer={v['c_tokenizer']!r} "
                       "(its vocabulary is what the text has)")
        chosen = {variants.lookup("mixer", m).name for m in self.mixers}
        if v["c_network"]:
            chosen.add(variants.lookup("network", v["c_network"]).name)
        if v["c_position"] == "rope" and not any(variants.lookup("mixer", m).cls.uses_rope for m in self.mixers):
            rotating = sorted(e.name for e in variants.entries("mixer") if e.cls.uses_rope)
            out.append(f"c_position='rope' does nothing here: only {', '.join(rotating)} rotate queries and keys, "
                       f"and c_attention={v['c_attention']!r} has none of them (no position information)")
        owners: dict[str, list[str]] = {}
        for kind in ("mixer", "network"):
            for entry in variants.entries(kind):
                for setting in entry.settings:
                    owners.setdefault(setting.key, []).append(entry.name)
        for key in sorted(self.given & set(owners)):
            if not chosen & set(owners[key]):
                out.append(f"{key} is ignored: it applies to {', '.join(owners[key])}, and this model uses "
                           f"c_attention={v['c_attention']!r}, c_network={v['c_network']!r}")
        return out

    # Derived values used across the package.
    @property
    def head_width(self) -> int:
        return self._values["head_size"] or self._values["n_emb"]

    @property
    def mixers(self) -> list[str]:
        return split_list("c_attention", self._values["c_attention"], "+", "conv+induction")

    @property
    def hidden(self) -> int:
        return max(1, int(round(self._values["r_hidden"] * self._values["n_emb"])))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_values":  # copy/pickle probe an instance without _values
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> "Config":
        return self  # immutable: a copied model shares its config

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use .replace(key=value)")

    def replace(self, **changes: Any) -> "Config":
        out = Config({**self._values, **changes})
        object.__setattr__(out, "given", self.given | set(changes))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "Config":
        path = Path(path)
        try:
            data = read_json(path, "config file", strict=True)
        except FileFault as err:
            raise ConfigError(str(err)) from None
        if "settings" in data:  # run configs keep settings next to runtime facts
            data = data["settings"]
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: 'settings' must be a JSON object of settings")
        try:
            data, notice = from_legacy(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        cfg = cls({**data, **(overrides or {})}, source=str(path))
        object.__setattr__(cfg, "legacy_notice", notice)
        return cfg


def as_config(config: "Config | dict[str, Any] | str | Path", overrides: dict[str, Any] | None = None) -> "Config":
    """A Config from a Config, a dict of settings or a config file's path, with ``overrides`` applied."""
    if isinstance(config, Config):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, dict):
        return Config({**config, **(overrides or {})}, source="settings")
    return Config.load(config, overrides)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the CLI: the value is read as JSON when it parses, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except ValueError:  # a number of more digits than Python converts (a config file's reader refuses it too)
        raise ConfigError(f"--set {key.strip()}=<{len(raw)} characters>: not a number this program can read") from None
    return key.strip(), value


def resumable_keys() -> tuple[str, ...]:
    """The settings that may change when a run is resumed (declared ``resume=True``)."""
    return tuple(key for key, s in all_settings().items() if s.resume)


def architecture_keys() -> tuple[str, ...]:
    """The shared settings that decide a model's computation: a model file records them (each
    variant's own settings are recorded with the variant)."""
    return tuple(s.key for s in BASE if s.role == "architecture")


def settings_table() -> str:
    """The settings tables of the docs, one per role, generated from the definitions (a test keeps
    the docs in sync): key, default, allowed values, whether it may change on resume, meaning."""
    from baby.nn.settings import ROLES  # noqa: PLC0415 - the role names and what each steers

    out: list[str] = []
    settings = all_settings()
    for role, about in ROLES.items():
        out += [f"**{role.capitalize()}**: {about}.", "",
                "| key | default | allowed | on resume | meaning |", "|---|---|---|---|---|"]
        for key, s in settings.items():
            if s.role != role:
                continue
            if s.choices:
                allowed = ", ".join('""' if c == "" else str(c) for c in s.choices)
            elif s.type is bool:
                allowed = "true, false"
            elif s.low is not None:
                low, high = (f"{int(s.low):,}", f"{int(s.high):,}") if s.type is int else (f"{s.low:g}", f"{s.high:g}")
                allowed = f"{s.type.__name__} in [{low}, {high}]"
            else:
                allowed = s.type.__name__
            out.append(f"| `{key}` | `{json.dumps(s.default)}` | {allowed} | {'may change' if s.resume else 'fixed'} "
                       f"| {s.doc} |")
        out.append("")
    return "\n".join(out).rstrip()
