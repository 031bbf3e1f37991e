"""Words with their leading whitespace, punctuation marks and line breaks as pieces.

``" the"`` and ``"the"`` are different pieces (as in GPT-2), so joining the pieces gives the text
back exactly; whitespace that does not precede a word (e.g. before a newline) is a piece of its own.

The original Little Baby's word vocabulary (``original=True``) is another one: ``text.split()``,
whitespace-separated words with their punctuation, decoded joined by one space.
"""
from __future__ import annotations

import re

from baby.tokenizers.base import TableTokenizer

PIECE = re.compile(r"[ \t]?\w+|[ \t]?[^\w\s]|\n|[^\S\n]+", re.UNICODE)


class WordTokenizer(TableTokenizer):
    kind = "word"

    def split(self, text: str) -> list[str]:
        return text.split() if self.original else PIECE.findall(text)

    def join(self, pieces: list[str]) -> str:
        return " ".join(pieces) if self.original else "".join(pieces)
