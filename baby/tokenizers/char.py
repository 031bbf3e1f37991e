"""One id per Unicode character of the training text."""
from __future__ import annotations

from baby.tokenizers.base import TableTokenizer


class CharTokenizer(TableTokenizer):
    kind = "char"

    def split(self, text: str) -> list[str]:
        return list(text)
