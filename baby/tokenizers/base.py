"""The small interface every tokenizer offers, and the special tokens they share.

Ids 0..3 are always ``<unk> <bos> <eos> <pad>``. ``<unk>`` stands for symbols unseen in training
(counted by ``encode``, never a crash); ``<bos>``/``<eos>`` separate documents and start scored
sentences; ``<pad>`` fills batches. Decoding drops bos/eos/pad and writes ``<unk>`` as U+FFFD.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy

SPECIALS = ("<unk>", "<bos>", "<eos>", "<pad>")
UNK, BOS, EOS, PAD = range(4)
REPLACEMENT = "\ufffd"


class Tokenizer:
    """Text <-> int32 ids. Subclasses implement train, encode, decode, extend and the dict form."""

    kind: ClassVar[str] = ""
    unk_id, bos_id, eos_id, pad_id = UNK, BOS, EOS, PAD

    def __init__(self) -> None:
        self.unknown_count = 0  # <unk> tokens produced by the last encode()

    @property
    def n_vocab(self) -> int:
        raise NotImplementedError

    @classmethod
    def train(cls, text: str, **settings: Any) -> "Tokenizer":
        raise NotImplementedError

    def encode(self, text: str) -> numpy.ndarray:
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        raise NotImplementedError

    def extend(self, text: str) -> int:
        """Grow the vocabulary with what ``text`` needs (finetune); returns how many ids were added."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        raise NotImplementedError


class TableTokenizer(Tokenizer):
    """A tokenizer whose vocabulary is a list of strings (char, word): pieces -> ids by lookup."""

    def __init__(self, pieces: list[str]) -> None:
        super().__init__()
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}

    @property
    def n_vocab(self) -> int:
        return len(self.pieces)

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    @classmethod
    def train(cls, text: str, **settings: Any) -> "TableTokenizer":
        return cls(list(SPECIALS) + sorted(set(cls.split_text(text))))

    @classmethod
    def split_text(cls, text: str) -> list[str]:
        return cls([]).split(text)

    def encode(self, text: str) -> numpy.ndarray:
        get = self.index.get
        ids = numpy.fromiter((get(p, UNK) for p in self.split(text)), dtype=numpy.int32)
        self.unknown_count = int(numpy.count_nonzero(ids == UNK))
        return ids

    def decode(self, ids: Any) -> str:
        pieces = self.pieces
        out = []
        for i in numpy.asarray(ids).reshape(-1).tolist():
            if i == UNK or not 0 <= i < len(pieces):
                out.append(REPLACEMENT)
            elif i >= len(SPECIALS):
                out.append(pieces[i])
        return "".join(out)

    def extend(self, text: str) -> int:
        new = sorted(set(self.split(text)) - set(self.index))
        for p in new:
            self.index[p] = len(self.pieces)
            self.pieces.append(p)
        return len(new)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pieces": self.pieces}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableTokenizer":
        pieces = data.get("pieces")
        if not isinstance(pieces, list) or not all(isinstance(p, str) and p for p in pieces):
            raise ValueError("pieces must be a list of non-empty strings")
        if tuple(pieces[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"the first pieces must be the specials {', '.join(SPECIALS)}")
        if len(set(pieces)) != len(pieces):
            raise ValueError("pieces repeat (two ids for one piece)")
        return cls(pieces)
