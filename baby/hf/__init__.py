"""Hugging Face interchange: export a run as a ``transformers`` directory (GPT2LMHeadModel or
LlamaForCausalLM + tokenizer.json) and import such a directory back as a run.

Only ``safetensors`` is needed (the ``hf`` extra); nothing here imports torch or transformers.
"""
from __future__ import annotations

from types import ModuleType

from baby.config import ConfigError


def safetensors_numpy() -> ModuleType:
    """``safetensors.numpy``, or one line saying how to get it."""
    try:
        import safetensors.numpy as st  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ConfigError("the safetensors package is missing: pip install -e .[hf]") from None
    return st
