"""Tokenizers by name (c_tokenizer) and from their saved JSON form."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from baby.tokenizers.base import BOS, EOS, PAD, SPECIALS, UNK, Tokenizer
from baby.tokenizers.char import CharTokenizer
from baby.tokenizers.word import WordTokenizer

KINDS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer}
try:  # the BPE tokenizer lives in its own file
    from baby.tokenizers.bpe import BPETokenizer
    KINDS["bpe"] = BPETokenizer
except ImportError:  # pragma: no cover - until bpe.py exists
    pass


def train_tokenizer(kind: str, text: str, **settings: Any) -> Tokenizer:
    if kind not in KINDS:
        raise ValueError(f"c_tokenizer={kind!r}: allowed {', '.join(sorted(KINDS))}")
    return KINDS[kind].train(text, **settings)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """A tokenizer from its saved form; ValueError says what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"tokenizer kind {kind!r}: allowed {', '.join(sorted(KINDS))}")
    return KINDS[kind].from_dict(data)


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """sha256 of a tokenizer's saved form: the run's config keeps it, so an edited tokenizer file
    (pieces reordered, merges changed) is refused instead of decoding to silently wrong text."""
    text = json.dumps(tokenizer.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["Tokenizer", "train_tokenizer", "tokenizer_from_dict", "tokenizer_digest", "KINDS", "UNK", "BOS", "EOS", "PAD",
           "SPECIALS"]
