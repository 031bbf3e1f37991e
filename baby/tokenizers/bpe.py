"""Byte-level BPE (byte-pair encoding), the tokenizer family of GPT-2 and most LMs since.

The text is first turned into UTF-8 bytes, so the 256 byte values alone can spell anything: no
symbol is ever unknown. Training then repeats one step: find the most frequent adjacent pair of
ids and give it a new id (a "merge"). Frequent words end up as one id, rare ones as a few
pieces, and never-seen symbols as their raw bytes.

Before counting, the text is pre-split into chunks (words with their leading space, numbers,
punctuation runs, whitespace), so merges never cross a word boundary: " the" can become one id,
"the." cannot. Ids: 0..3 the specials, 4..259 the bytes, 260... the merges in learning order.
Encoding replays the merges on each chunk, earliest learned first.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from heapq import heapify, heappop, heappush
from itertools import repeat
from typing import Any, Callable, Iterator

import numpy

from baby.tokenizers.base import REPLACEMENT, SPECIALS, Tokenizer

BYTE_OFFSET = len(SPECIALS)  # id of byte 0
FIRST_MERGE = BYTE_OFFSET + 256  # id of the first merge
UTF8 = ("utf-8", "surrogatepass")  # lone surrogates (from surrogateescape reads) must not crash encode

# GPT-2's pre-split pattern in Python `re` terms. Python has no \p{L}: letters are "word characters
# that are neither digits nor underscore" ([^\W\d_]); the underscore goes with punctuation as in GPT-2.
# Every character matches some branch, so the chunks always join back to the text. Runs are cut
# after LONGEST characters so that one giant "word" (a long CJK sentence, a base64 blob, a minified
# file) cannot make training and encoding slow: their cost grows with the square of a chunk's length.
LONGEST = 128
PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)"  # English contractions: 's 't 're 've 'm 'll 'd (any case)
    rf"| ?[^\W\d_]{{1,{LONGEST}}}"  # a word, with its leading space
    rf"| ?\d{{1,{LONGEST}}}"  # a number, with its leading space
    rf"| ?(?:[^\s\w]|_){{1,{LONGEST}}}"  # a run of punctuation / symbols, with its leading space
    rf"|\s{{1,{LONGEST}}}(?!\S)"  # whitespace, leaving the last space to the next word
    rf"|\s{{1,{LONGEST}}}"  # trailing whitespace
)
PATTERNS = (PATTERN,)  # the pre-split patterns a saved tokenizer may name
BLOCK = 1 << 20  # characters pre-split at a time (bounds memory on large texts)
CACHE_LIMIT = 1 << 18  # chunks remembered by encode()


def split_blocks(text: str, size: int = BLOCK) -> Iterator[str]:
    """Consecutive slices of ``text`` of about ``size`` characters that pre-split exactly as the whole.

    A slice ends just before a newline that follows a non-space character: no chunk of PATTERN
    contains both (only whitespace chunks hold a newline), so a chunk boundary is always there.
    """
    start = 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut != -1 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def count_chunks(text: str, pattern: re.Pattern[str]) -> Counter[str]:
    """How often each distinct pre-split chunk occurs in ``text``."""
    counts: Counter[str] = Counter()
    for block in split_blocks(text):
        counts.update(pattern.findall(block))
    return counts


def merge_pair(ids: list[int], a: int, b: int, new: int) -> list[int]:
    """``ids`` with every non-overlapping (a, b), scanned left to right, replaced by ``new``."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(words: list[list[int]], freqs: list[int], n_merges: int,
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[int, int]]:
    """Up to ``n_merges`` merges for ``words`` (id lists, each seen ``freqs[i]`` times); ``progress``
    is called with (merges so far, n_merges) after each one.

    Each step takes the most frequent pair (ties: the smallest pair) and stops when none is seen
    twice. Counts are kept up to date incrementally: merging a pair only touches the words that
    contain it (``where``), instead of recounting the whole corpus. The best pair comes from a
    max-heap of (-count, pair) entries that may be out of date ("lazy"): an entry is pushed
    whenever a count grows, and a popped entry whose count has shrunk since is pushed back with
    its true count, so the first entry popped that matches its pair's count is the true maximum.
    """
    words = [list(w) for w in words]  # merged in place below; leave the caller's lists alone
    count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            count[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in count.items()]
    heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        negative, pair = heappop(heap)
        c = count.get(pair, 0)
        if c != -negative:  # out of date
            if 0 < c < -negative:
                heappush(heap, (-c, pair))
            continue
        if c < 2:
            break
        new = FIRST_MERGE + len(merges)
        merges.append(pair)
        if progress is not None:
            progress(len(merges), n_merges)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop(pair):
            word, f = words[i], freqs[i]
            merged = merge_pair(word, pair[0], pair[1], new)
            old_pairs, new_pairs = list(zip(word, word[1:])), list(zip(merged, merged[1:]))
            for p in old_pairs:
                delta[p] -= f
            for p in new_pairs:
                delta[p] += f
            old_set, new_set = set(old_pairs), set(new_pairs)
            for p in old_set - new_set:
                if p != pair:
                    where[p].discard(i)
            for p in new_set - old_set:
                where[p].add(i)
            words[i] = merged
        del count[pair]  # every occurrence was merged
        delta.pop(pair, None)
        for p, d in delta.items():
            if d == 0:  # a pair the words have both before and after the merge
                continue
            c = count.get(p, 0) + d
            if c > 0:
                count[p] = c
                if d > 0:
                    heappush(heap, (-c, p))
            else:
                count.pop(p, None)
                where.pop(p, None)
    return merges


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0..3 specials, 4..259 bytes, 260.. learned merges."""

    kind = "bpe"

    def __init__(self, merges: list[tuple[int, int]], pattern: str = PATTERN) -> None:
        super().__init__()
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = re.compile(pattern)
        # Byte string of every id, so decoding is a lookup and a join.
        self.vocab: list[bytes] = [b""] * BYTE_OFFSET + [bytes([b]) for b in range(256)]
        self.vocab[self.unk_id] = REPLACEMENT.encode()
        self.ranks: dict[tuple[int, int], int] = {}  # pair -> its merged id (= learning order)
        for new, (a, b) in enumerate(self.merges, FIRST_MERGE):
            if not (BYTE_OFFSET <= a < new and BYTE_OFFSET <= b < new):
                raise ValueError(f"merge {new}: ({a}, {b}) must join two earlier non-special ids")
            self.vocab.append(self.vocab[a] + self.vocab[b])
            self.ranks[(a, b)] = new
        self._cache: dict[str, list[int]] = {}

    @property
    def n_vocab(self) -> int:
        return FIRST_MERGE + len(self.merges)

    @classmethod
    def train(cls, text: str, n_vocab: int = 8000, progress: Callable[[int, int], None] | None = None,
              **_: Any) -> "BPETokenizer":
        """Learn ``n_vocab - 260`` merges from ``text`` (fewer if no pair repeats any more)."""
        if n_vocab < FIRST_MERGE:
            raise ValueError(f"n_vocab={n_vocab}: a bpe tokenizer needs n_vocab >= {FIRST_MERGE}")
        chunks = count_chunks(text, re.compile(PATTERN))
        words = [[b + BYTE_OFFSET for b in chunk.encode(*UTF8)] for chunk in chunks]
        return cls(learn_merges(words, list(chunks.values()), n_vocab - FIRST_MERGE, progress))

    def encode_chunk(self, chunk: str) -> list[int]:
        """Ids of one pre-split chunk: its bytes, then the applicable merges, earliest learned first."""
        ids = [b + BYTE_OFFSET for b in chunk.encode(*UTF8)]
        ranks, never = self.ranks, self.n_vocab
        while len(ids) > 1:
            new = min(map(ranks.get, zip(ids, ids[1:]), repeat(never)))
            if new == never:  # no pair left that has a merge
                break
            a, b = self.merges[new - FIRST_MERGE]
            ids = merge_pair(ids, a, b, new)
        return ids

    def encode(self, text: str) -> numpy.ndarray:
        cache = self._cache
        ids: list[int] = []
        for block in split_blocks(text):
            for chunk in self.pattern.findall(block):
                piece = cache.get(chunk)
                if piece is None:
                    piece = self.encode_chunk(chunk)
                    if len(cache) >= CACHE_LIMIT:  # keep memory bounded on endless new words
                        cache.clear()
                    cache[chunk] = piece
                ids += piece
        self.unknown_count = 0  # every byte has an id
        return numpy.array(ids, dtype=numpy.int32)

    def decode(self, ids: Any) -> str:
        """Text of ``ids``; bytes that do not form valid UTF-8 (e.g. a cut-off sample) become U+FFFD."""
        vocab, unknown = self.vocab, self.vocab[self.unk_id]
        n = len(vocab)
        flat = numpy.asarray(ids).reshape(-1).tolist()
        data = b"".join(vocab[i] if 0 <= i < n else unknown for i in flat)
        return data.decode("utf-8", errors="replace")

    def extend(self, text: str) -> int:
        """Finetuning keeps the vocabulary: the bytes already spell any new text."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_vocab": self.n_vocab, "pattern": self.pattern.pattern,
                "merges": [list(pair) for pair in self.merges]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BPETokenizer":
        merges = data.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(pair, list) and len(pair) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in pair) for pair in merges):
            raise ValueError("merges must be a list of [id, id] pairs")
        pattern = data.get("pattern", PATTERN)
        if pattern not in PATTERNS:  # a pattern from a file could make encoding hang (catastrophic backtracking)
            raise ValueError("pattern is not one this version knows (the pre-split pattern is fixed by the code)")
        tokenizer = cls([tuple(pair) for pair in merges], pattern)
        if "n_vocab" in data and data["n_vocab"] != tokenizer.n_vocab:
            raise ValueError(f"n_vocab {data['n_vocab']!r} does not match its {len(merges)} merges ({tokenizer.n_vocab} ids)")
        return tokenizer
