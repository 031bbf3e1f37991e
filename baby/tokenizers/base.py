"""The small interface every tokenizer offers, and the special tokens they share.

Ids 0..3 are always ``<unk> <bos> <eos> <pad>``. ``<unk>`` stands for symbols unseen in training
(counted by ``encode``, never a crash); ``<bos>``/``<eos>`` separate documents and start scored
sentences; ``<pad>`` fills batches. Decoding drops bos/eos/pad and writes ``<unk>`` as U+FFFD.

The one exception is a vocabulary read from the original Little Baby (``original=True`` on char and
word): its ids are exactly the original's, ``sorted(set(text))`` with no specials at all, so that no
id carries probability the original did not have. There ``unk_id``, ``bos_id``, ``eos_id`` and
``pad_id`` are None, and encoding a symbol outside the vocabulary is an error, as it is there.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy

from baby.nn.settings import ConfigError

SPECIALS = ("<unk>", "<bos>", "<eos>", "<pad>")
UNK, BOS, EOS, PAD = range(4)
REPLACEMENT = "\ufffd"


class Tokenizer:
    """Text <-> int32 ids. Subclasses implement train, encode, decode, extend and the dict form."""

    kind: ClassVar[str] = ""
    unk_id: int | None = UNK
    bos_id: int | None = BOS
    eos_id: int | None = EOS
    pad_id: int | None = PAD

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
    """A tokenizer whose vocabulary is a list of strings (char, word): pieces -> ids by lookup.
    ``original``: the original Little Baby's vocabulary, no specials (see the module docstring)."""

    def __init__(self, pieces: list[str], original: bool = False) -> None:
        super().__init__()
        self.pieces = list(pieces)
        self.index = {p: i for i, p in enumerate(self.pieces)}
        self.original = original
        if original:
            self.unk_id = self.bos_id = self.eos_id = self.pad_id = None
        self.first_piece = 0 if original else len(SPECIALS)  # ids below it are specials, never text

    @property
    def n_vocab(self) -> int:
        return len(self.pieces)

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def join(self, pieces: list[str]) -> str:
        """The text of decoded pieces (the original's word tokenizer puts one space between words)."""
        return "".join(pieces)

    @classmethod
    def train(cls, text: str, **settings: Any) -> "TableTokenizer":
        return cls(list(SPECIALS) + sorted(set(cls.split_text(text))))

    @classmethod
    def split_text(cls, text: str) -> list[str]:
        return cls([]).split(text)

    def encode(self, text: str) -> numpy.ndarray:
        pieces = self.split(text)
        if self.original:  # no <unk> to stand in: a symbol the original never saw is an error there too
            missing = next((p for p in pieces if p not in self.index), None)
            if missing is not None:
                raise ConfigError(f"{missing!r} is not in this run's vocabulary of {self.n_vocab} {self.kind} "
                                  "pieces (the original Little Baby's vocabulary has no <unk>)")
        get = self.index.get
        ids = numpy.fromiter((get(p, UNK) for p in pieces), dtype=numpy.int32, count=len(pieces))
        self.unknown_count = 0 if self.original else int(numpy.count_nonzero(ids == UNK))
        return ids

    def decode(self, ids: Any) -> str:
        pieces = self.pieces
        out = []
        for i in numpy.asarray(ids).reshape(-1).tolist():
            if i == self.unk_id or not 0 <= i < len(pieces):
                out.append(REPLACEMENT)
            elif i >= self.first_piece:
                out.append(pieces[i])
        return self.join(out)

    def extend(self, text: str) -> int:
        new = sorted(set(self.split(text)) - set(self.index))
        for p in new:
            self.index[p] = len(self.pieces)
            self.pieces.append(p)
        return len(new)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pieces": self.pieces, **({"original": True} if self.original else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableTokenizer":
        pieces = data.get("pieces")
        original = data.get("original", False)
        if not isinstance(original, bool):
            raise ValueError(f"original must be true or false, found {original!r}")
        if not isinstance(pieces, list) or not all(isinstance(p, str) and p for p in pieces):
            raise ValueError("pieces must be a list of non-empty strings")
        if not original and tuple(pieces[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"the first pieces must be the specials {', '.join(SPECIALS)}")
        if len(set(pieces)) != len(pieces):
            raise ValueError("pieces repeat (two ids for one piece)")
        return cls(pieces, original)
