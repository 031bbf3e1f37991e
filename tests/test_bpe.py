"""Byte-level BPE: exact round trips, compression, pre-split, determinism, saving, and the
incremental trainer checked against a naive full-recount reference."""
from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy
import pytest

from baby.tokenizers import KINDS, tokenizer_from_dict, train_tokenizer
from baby.tokenizers.base import BOS, EOS, PAD, REPLACEMENT, UNK
from baby.tokenizers.bpe import (
    BYTE_OFFSET,
    FIRST_MERGE,
    LONGEST,
    PATTERN,
    BPETokenizer,
    count_chunks,
    learn_merges,
    merge_pair,
    split_blocks,
)

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "inputs" / "shakespeare.txt"
SWITCHBOARD = Path("/work/shared/data/babylm_10M/switchboard.train.gz")
SPLIT = re.compile(PATTERN)

TRICKY = ("Héllo wörld! naïve café — “quotes” ‘single’ don't I'LL we've 123 4.5e-6 x_y__z\t\r\n"
          "日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية हिन्दी ไทย\n"
          "emoji 😀👍🏽 👨‍👩‍👧 🇫🇷 ZWJ\u200d NBSP\u00a0 \u0301lone combining e\u0301\n"
          "\x00NUL \x01\x07\x1b[0m control \x7f \u2028 \u2029 \ufeff BOM \ufffd repl \U0010ffff\n"
          "   leading spaces, trailing spaces   \n\n\n\r\n\r\r  \t \f\v end ½ ² ① ٣ ")


@pytest.fixture(scope="module")
def english() -> str:
    if not SHAKESPEARE.exists():
        pytest.skip("inputs/shakespeare.txt is absent")
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok(english: str) -> BPETokenizer:
    return BPETokenizer.train(english[:300_000], n_vocab=FIRST_MERGE + 500)


def random_text(rng: random.Random, length: int) -> str:
    """Code points from every plane and script, surrogates excluded (they are not valid Unicode)."""
    ranges = [(0, 0x7F), (0x80, 0x2FF), (0x300, 0x36F), (0x370, 0x1FFF), (0x2000, 0x206F), (0x3000, 0x9FFF),
              (0xAC00, 0xD7A3), (0xE000, 0xFFFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(length):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def test_pre_split_keeps_leading_space_and_separates_classes() -> None:
    assert SPLIT.findall("Hello world  again") == ["Hello", " world", " ", " again"]
    assert SPLIT.findall("foo_bar42 x") == ["foo", "_", "bar", "42", " x"]
    assert SPLIT.findall("don't WE'LL") == ["don", "'t", " WE", "'LL"]
    assert SPLIT.findall("end.\n\n  Next") == ["end", ".", "\n\n ", " Next"]
    assert "".join(SPLIT.findall(TRICKY)) == TRICKY  # every character belongs to some chunk
    giant = "x" * 1000 + " " * 1000 + "7" * 1000 + "." * 1000 + "日本" * 500 + " y"
    chunks = SPLIT.findall(giant)
    assert "".join(chunks) == giant and max(map(len, chunks)) <= LONGEST + 1  # + 1: the leading space


def test_split_blocks_pre_splits_like_the_whole_text(english: str) -> None:
    texts = [english[:200_000], "a \n\n  b\n" * 5000, "x\n" * 3000 + " \n" * 3000, "\n" * 10_000,
             TRICKY * 300]
    for text in texts:
        blocks = list(split_blocks(text, size=1000))
        assert "".join(blocks) == text
        assert [c for b in blocks for c in SPLIT.findall(b)] == SPLIT.findall(text)


def test_round_trip_tricky_and_empty(tok: BPETokenizer) -> None:
    for text in (TRICKY, "", " ", "\x00", "\u0301", "\r\n", "😀" * 7):
        ids = tok.encode(text)
        assert ids.dtype == numpy.int32
        assert tok.unknown_count == 0
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("a\udc80b")).startswith("a")  # a lone surrogate does not crash


def test_round_trip_random_unicode(tok: BPETokenizer) -> None:
    rng = random.Random(1234)
    for _ in range(300):
        text = random_text(rng, rng.randint(0, 60))
        ids = tok.encode(text)
        assert ids.min(initial=BYTE_OFFSET) >= BYTE_OFFSET and ids.max(initial=0) < tok.n_vocab
        assert tok.decode(ids) == text


def test_merges_compress_english(tok: BPETokenizer, english: str) -> None:
    assert tok.n_vocab == FIRST_MERGE + 500
    for text in (english[:300_000], english[-200_000:]):  # seen and unseen text
        n_bytes = len(text.encode("utf-8"))
        assert len(tok.encode(text)) < n_bytes / 2


def test_leading_space_word_is_one_token(tok: BPETokenizer) -> None:
    assert len(tok.encode(" the")) == 1
    assert tok.decode(tok.encode(" the")) == " the"
    assert len(tok.encode(" the the the")) == 3


def test_training_is_deterministic(english: str) -> None:
    text = english[:100_000]
    a = BPETokenizer.train(text, n_vocab=FIRST_MERGE + 300)
    b = BPETokenizer.train(text, n_vocab=FIRST_MERGE + 300)
    assert a.merges == b.merges
    # nor does the order of the distinct words matter (ties go to the smallest pair, not the first seen)
    chunks = count_chunks(text, SPLIT)
    items = list(chunks.items())
    random.Random(5).shuffle(items)
    words = [[x + BYTE_OFFSET for x in c.encode()] for c, _ in items]
    assert learn_merges(words, [f for _, f in items], 300) == a.merges


def test_to_dict_from_dict_round_trip(tok: BPETokenizer, english: str) -> None:
    data = json.loads(json.dumps(tok.to_dict()))
    assert data["kind"] == "bpe" and data["n_vocab"] == tok.n_vocab
    again = BPETokenizer.from_dict(data)
    assert again.n_vocab == tok.n_vocab and again.merges == tok.merges
    assert again.to_dict() == tok.to_dict()
    for text in (english[300_000:350_000], TRICKY, ""):
        assert numpy.array_equal(again.encode(text), tok.encode(text))
    same = tokenizer_from_dict(data)  # through the package's loader
    assert isinstance(same, BPETokenizer) and same.merges == tok.merges


def test_decode_survives_bad_sequences(tok: BPETokenizer) -> None:
    emoji = [b + BYTE_OFFSET for b in "😀".encode("utf-8")]
    assert REPLACEMENT in tok.decode(emoji[:2])  # cut-off multi-byte sequence
    assert tok.decode(emoji[1:]).count(REPLACEMENT) >= 1  # starts mid-sequence
    assert tok.decode([0xFF + BYTE_OFFSET]) == REPLACEMENT  # a byte never valid in UTF-8
    hi = tok.encode("hi").tolist()
    assert tok.decode([BOS] + hi + [EOS, PAD, PAD]) == "hi"  # specials other than <unk> vanish
    assert tok.decode([UNK] + hi + [tok.n_vocab + 5, -1]) == REPLACEMENT + "hi" + REPLACEMENT * 2
    assert tok.decode(numpy.array([hi, hi])) == "hihi"


def naive_bpe(text: str, n_merges: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Textbook BPE: recount every pair of every word before each merge. Returns merges and the
    training text's final ids (each chunk after all merges)."""
    chunks = count_chunks(text, SPLIT)
    words = {c: [x + BYTE_OFFSET for x in c.encode()] for c in chunks}
    merges: list[tuple[int, int]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[int, int]] = Counter()
        for c, word in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += chunks[c]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then smallest pair
        if pairs[best] < 2:
            break
        new = FIRST_MERGE + len(merges)
        merges.append(best)
        words = {c: merge_pair(w, best[0], best[1], new) for c, w in words.items()}
    return merges, [x for c in SPLIT.findall(text) for x in words[c]]


@pytest.mark.parametrize("corpus", ["shakespeare", "ties", "repeats", "random"])
def test_incremental_counts_match_naive_reference(english: str, corpus: str) -> None:
    text = {"shakespeare": english[:20_000],
            # many equal counts, so the tie-breaking decides nearly every merge
            "ties": "ab ba cd dc ab ba cd dc xy yx zz zzz zzzz aaaa aaaaa abab baba 12 21 1212 _a_ a_a",
            # overlapping pairs (aaaa), words that shrink to one id, runs of spaces and punctuation
            "repeats": ("aaaaaaa aaa a aa " * 3 + "the then there these; ... !!! ??? \n\n\n   x " * 5
                        + "ééé 日本日本 😀😀 " * 4),
            # a tiny alphabet: long words full of overlapping pairs and tied counts
            "random": "".join(random.Random(7).choice("aab c\n") for _ in range(4000))}[corpus]
    n_merges = 150
    expected, expected_ids = naive_bpe(text, n_merges)
    tok = BPETokenizer.train(text, n_vocab=FIRST_MERGE + n_merges)
    assert tok.merges == expected
    # encoding the training text reproduces the trainer's own segmentation
    assert tok.encode(text).tolist() == expected_ids


def test_stops_when_no_pair_repeats() -> None:
    assert BPETokenizer.train("abcdef", n_vocab=1000).merges == []
    tok = BPETokenizer.train("xyxy", n_vocab=1000)  # (x, y) twice: one merge, then nothing repeats
    assert tok.merges == [(ord("x") + BYTE_OFFSET, ord("y") + BYTE_OFFSET)]
    assert tok.n_vocab == FIRST_MERGE + 1
    with pytest.raises(ValueError):
        BPETokenizer.train("abc", n_vocab=FIRST_MERGE - 1)


def test_registered_kind_and_finetune_contract(english: str) -> None:
    assert KINDS["bpe"] is BPETokenizer
    tok = train_tokenizer("bpe", english[:50_000], n_vocab=FIRST_MERGE + 50, unrelated_setting=1)
    assert isinstance(tok, BPETokenizer) and tok.n_vocab == FIRST_MERGE + 50
    before = tok.to_dict()
    assert tok.extend("brand-new wörds 😀") == 0 and tok.to_dict() == before


def test_switchboard_compresses() -> None:
    if not SWITCHBOARD.exists():
        pytest.skip(f"{SWITCHBOARD} is absent")
    text = gzip.open(SWITCHBOARD, "rt", encoding="utf-8").read()
    tok = BPETokenizer.train(text[:300_000], n_vocab=FIRST_MERGE + 1000)
    held_out = text[-200_000:]
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out
    assert len(ids) < len(held_out.encode("utf-8")) / 2


def test_bpe_training_reports_progress_with_an_eta() -> None:
    from baby.progress import ProgressLog
    lines: list[str] = []
    calls: list[tuple[int, int]] = []
    log = ProgressLog(lines.append, "BPE merges learned", quiet_seconds=0.0)
    BPETokenizer.train("the cat sat on the mat " * 50 + "a rat ate that hat", n_vocab=280,
                       progress=lambda done, total: (calls.append((done, total)), log(done, total)))
    assert calls and calls[0] == (1, 20) and all(t == 20 for _, t in calls)
    assert lines and all("ETA" in line and "BPE merges learned" in line for line in lines)
    quiet: list[str] = []
    ProgressLog(quiet.append)(5, 10)  # a phase that is still short says nothing
    assert quiet == []
