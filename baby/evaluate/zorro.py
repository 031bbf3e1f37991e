"""Zorro (Huebner et al. 2021): child-directed minimal pairs, scored exactly as BLiMP is.

A folder holds one ``<phenomenon>-<paradigm>.txt`` file per paradigm (the phenomenon may hold '-', the
paradigm does not): one sentence per line, lines
alternating grammatical and ungrammatical (pair k is lines 2k and 2k + 1, counting from 0; see the
data's README). The protocol is BLiMP's (``blimp.py``): BOS + sentence, summed token log-probs, good
> bad strictly with ties counted, macro mean over paradigms, and per phenomenon the mean of its
paradigms.
"""
from __future__ import annotations

from pathlib import Path

from baby.evaluate.blimp import Pair, data_files, text_lines
from baby.runs import RunError


def load_zorro(directory: str | Path, limit: int = 0) -> list[Pair]:
    """The minimal pairs of every ``*.txt`` file of ``directory`` (sorted by name, in order); with
    ``limit`` > 0 only the first ``limit`` pairs of each paradigm."""
    pairs: list[Pair] = []
    for path in data_files(Path(directory), "*.txt", "Zorro"):
        lines = text_lines(path)
        while lines and not lines[-1].strip():
            lines.pop()
        if len(lines) % 2 or any(not line.strip() for line in lines):
            raise RunError(f"{path}: expected non-empty lines in good/bad pairs, found {len(lines)} lines")
        phenomenon = path.stem.rsplit("-", 1)[0]  # "filler-gap-wh_question_object": the paradigm has no "-"
        count = len(lines) // 2 if not limit else min(limit, len(lines) // 2)
        pairs += [Pair(lines[2 * k].strip(), lines[2 * k + 1].strip(), path.stem, phenomenon, "")
                  for k in range(count)]
    return pairs
