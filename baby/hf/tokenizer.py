"""Our tokenizers as Hugging Face ``tokenizer.json`` (written as plain JSON: no library needed) and back.

bpe becomes a byte-level BPE: ids 0..3 the specials, 4..259 the bytes, the merges after, each token
spelled in GPT-2's ``bytes_to_unicode`` alphabet. The pre-split must be ours, not GPT-2's: a ``Split``
pre-tokenizer with our pattern translated to the Oniguruma dialect of ``tokenizers``, then
``ByteLevel(use_regex=False)``. The translation keeps Python's meaning of the classes, which differs
from Oniguruma's: Python's ``\\w`` is letters + numbers + "_" (no combining marks), its ``\\s`` also
holds U+001C..U+001F. char and word become a WordLevel model behind a Split of their own pattern.
The original Little Baby's vocabularies (``original``: no specials at all) keep their ids: a WordLevel
model of their pieces and no added tokens, char split into characters, word on whitespace.

Limit: a special's text (``<bos>`` ...) inside the input is one special id for Hugging Face and plain
characters for us.
"""
from __future__ import annotations

import re
from typing import Any

from baby.runs import RunError
from baby.tokenizers import SPECIALS, Tokenizer, tokenizer_from_dict
from baby.tokenizers import bpe as baby_bpe
from baby.tokenizers.word import PIECE

SPACE = r"[\s\x1c-\x1f]"
NONSPACE = r"[^\s\x1c-\x1f]"
# Python construct -> Oniguruma construct with the same set of characters (see the module note).
TRANSLATION = {
    r"(?:[^\s\w]|_)": r"[^\s\x1c-\x1f\p{L}\p{N}]",  # symbols: neither space nor letter nor number
    r"[^\W\d_]": r"[\p{L}\p{Nl}\p{No}]",  # letters, and numbers that are not decimal digits
    r"[^\w\s]": r"[^\s\x1c-\x1f\p{L}\p{N}_]",
    r"[^\S\n]": r"[\s\x1c-\x1f&&[^\n]]",
    r"(?!\S)": rf"(?!{NONSPACE})",
    r"\w": r"[\p{L}\p{N}_]",
    r"\d": r"\p{Nd}",
    r"\s": SPACE,
}
_CONSTRUCT = re.compile("|".join(re.escape(k) for k in sorted(TRANSLATION, key=len, reverse=True)) + r"|\\.")
EVERY_CHARACTER = r"[\s\S]"
# the original's pre-splits: every character; words between runs of Python's whitespace (str.split)
ORIGINAL_SPLIT = {"char": {"type": "Split", "pattern": {"Regex": EVERY_CHARACTER}, "behavior": "Isolated", "invert": False},
                  "word": {"type": "Split", "pattern": {"Regex": SPACE + "+"}, "behavior": "Removed", "invert": False}}


def onig_pattern(pattern: str) -> str:
    """A Python ``re`` pattern of ours in the ``tokenizers`` dialect; refuses what it does not know."""
    def one(match: re.Match[str]) -> str:
        text = match.group()
        if text in TRANSLATION:
            return TRANSLATION[text]
        if text in (r"\n", r"\t"):
            return text
        raise ValueError(f"pattern construct {text!r} has no translation")
    return _CONSTRUCT.sub(one, pattern)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (the alphabet of byte-level BPE vocabularies)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _added_tokens() -> list[dict[str, Any]]:
    return [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]


def _split(pattern: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def _byte_level(use_regex: bool = False) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": use_regex}


def _document(model: dict[str, Any], pre: dict[str, Any], decoder: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": _added_tokens(),
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None, "decoder": decoder, "model": model}


def _unique(strings: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, s in enumerate(strings):
        if s in vocab:
            raise RunError(f"the tokenizer spells ids {vocab[s]} and {i} the same ({s!r}): "
                           "a Hugging Face vocabulary cannot hold that")
        vocab[s] = i
    return vocab


def to_hf(tokenizer: Tokenizer) -> dict[str, Any]:
    """The ``tokenizer.json`` document of one of our tokenizers."""
    if tokenizer.kind == "bpe":
        alphabet = bytes_to_unicode()
        spell = ["".join(alphabet[b] for b in piece) for piece in tokenizer.vocab]
        spell[:len(SPECIALS)] = SPECIALS
        model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                 "vocab": _unique(spell), "merges": [f"{spell[a]} {spell[b]}" for a, b in tokenizer.merges]}
        pre = {"type": "Sequence", "pretokenizers": [_split(onig_pattern(tokenizer.pattern.pattern)), _byte_level()]}
        return _document(model, pre, _byte_level(use_regex=True))
    model = {"type": "WordLevel", "vocab": _unique(list(tokenizer.pieces)), "unk_token": SPECIALS[0]}
    if is_original(tokenizer):  # no specials: an unknown piece is an error there, as it is here
        document = _document(model, ORIGINAL_SPLIT[tokenizer.kind], {"type": "Fuse"} if tokenizer.kind == "char" else None)
        return {**document, "added_tokens": []}  # (no decoder: tokenizers joins words with one space)
    pattern = EVERY_CHARACTER if tokenizer.kind == "char" else onig_pattern(PIECE.pattern)
    return _document(model, _split(pattern), {"type": "Fuse"})


def is_original(tokenizer: Tokenizer) -> bool:
    """A vocabulary of the original Little Baby's (no specials)."""
    return bool(getattr(tokenizer, "original", False))


def special_ids(tokenizer: Tokenizer) -> dict[str, int | None]:
    """The ids of <bos>, <eos> and <pad> for config.json and generation_config.json (None: it has none)."""
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}


def tokenizer_config(n_ctx: int, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """``tokenizer_config.json``: PreTrainedTokenizerFast with our specials; no <bos> is added on
    encode (our encode adds none; scoring prepends it itself, as BabyLM's BOS protocol does)."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": n_ctx,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
    if tokenizer is not None and is_original(tokenizer):
        return config
    return {**config, **special_tokens_map(),
            "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in _added_tokens()}}


def special_tokens_map(tokenizer: Tokenizer | None = None) -> dict[str, str]:
    if tokenizer is not None and is_original(tokenizer):
        return {}
    return {"bos_token": SPECIALS[1], "eos_token": SPECIALS[2], "pad_token": SPECIALS[3], "unk_token": SPECIALS[0]}


# ---- back: tokenizer.json -> ours ---------------------------------------------------------------

def from_hf(data: Any, where: str) -> Tokenizer:
    """Our tokenizer from a ``tokenizer.json`` document laid out as ``to_hf`` writes it (the ids and the
    pre-split are part of what a model learned: any other layout is refused naming the field)."""
    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise RunError(f"{where}: {field} {what}")

    need(isinstance(data, dict), "the file", "is not a JSON object")
    model, pre = data.get("model"), data.get("pre_tokenizer")
    need(isinstance(model, dict) and isinstance(model.get("vocab"), dict), "model.vocab", "is missing")
    need(data.get("normalizer") is None, "normalizer", "must be null (ours normalise nothing)")
    vocab = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    need([i for _, i in by_id] == list(range(len(by_id))), "model.vocab", "ids must be 0..n-1, each once")
    if data.get("added_tokens") == [] and model.get("type") == "WordLevel":  # the original's: no specials
        kind = next((k for k, split in ORIGINAL_SPLIT.items() if split == pre), None)
        need(kind is not None, "pre_tokenizer", "is not the split of the original's char or word vocabulary")
        return tokenizer_from_dict({"kind": kind, "pieces": [s for s, _ in by_id], "original": True})
    need(tuple(s for s, _ in by_id[:len(SPECIALS)]) == SPECIALS, "model.vocab",
         f"must start with the specials {', '.join(SPECIALS)} at ids 0..3")
    kind = model.get("type")
    if kind == "BPE":
        expected = to_hf(baby_bpe.BPETokenizer([]))["pre_tokenizer"]
        need(pre == expected, "pre_tokenizer", "is not ours (Split on baby's pattern, then ByteLevel without regex)")
        need(not model.get("ignore_merges") and not model.get("byte_fallback")
             and model.get("continuing_subword_prefix") in (None, "") and model.get("end_of_word_suffix") in (None, ""),
             "model", "uses BPE options ours lack (ignore_merges, byte_fallback, subword prefix/suffix)")
        alphabet = bytes_to_unicode()
        need([s for s, _ in by_id[len(SPECIALS):baby_bpe.FIRST_MERGE]] == [alphabet[b] for b in range(256)],
             "model.vocab", "ids 4..259 must be the 256 bytes in order")
        merges = []
        for n, m in enumerate(model.get("merges") or []):
            pair = m.split(" ") if isinstance(m, str) else m
            need(isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair),
                 f"model.merges[{n}]", f"{m!r} is not a pair of tokens")
            a, b = pair
            need(a in vocab and b in vocab and vocab.get(a + b) == baby_bpe.FIRST_MERGE + n,
                 f"model.merges[{n}]", f"({a!r}, {b!r}) must make id {baby_bpe.FIRST_MERGE + n}")
            merges.append((vocab[a], vocab[b]))
        need(len(merges) == len(vocab) - baby_bpe.FIRST_MERGE, "model.merges", "must make every id after 259")
        return tokenizer_from_dict({"kind": "bpe", "merges": [list(p) for p in merges]})
    need(kind == "WordLevel", "model.type", f"{kind!r}: allowed BPE (byte-level) or WordLevel")
    patterns = {EVERY_CHARACTER: "char", onig_pattern(PIECE.pattern): "word"}
    spec = pre.get("pattern") if isinstance(pre, dict) else None
    pattern = spec.get("Regex") if isinstance(spec, dict) else None
    need(pre == _split(str(pattern)) and pattern in patterns, "pre_tokenizer", "is not the Split of our char or word tokenizer")
    return tokenizer_from_dict({"kind": patterns[pattern], "pieces": [s for s, _ in by_id]})
