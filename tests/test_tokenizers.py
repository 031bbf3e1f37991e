"""char and word tokenizers: exact round trip on their text, <unk> for unseen symbols, JSON form."""
from __future__ import annotations

import json

import pytest

from baby.corpus import encode_documents
from baby.tokenizers import BOS, EOS, UNK, tokenizer_from_dict, train_tokenizer
from tests.conftest import ROOT

TEXT = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:50000] + \
    "\n\tTabs,  double  spaces\r\nand CRLF; ünïcödé ✓ emoji 🎭 end"


@pytest.mark.parametrize("kind", ["char", "word"])
def test_exact_round_trip_on_training_text(kind: str) -> None:
    tok = train_tokenizer(kind, TEXT)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT and tok.unknown_count == 0


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unseen_symbols_become_counted_unk(kind: str) -> None:
    tok = train_tokenizer(kind, "the cat sat on the mat")
    ids = tok.encode("the dog sat on the ☃")
    assert tok.unknown_count == (2 if kind == "word" else 3)
    assert (ids == UNK).sum() == tok.unknown_count
    assert "\ufffd" in tok.decode(ids)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_json_form_restores_the_same_ids(kind: str) -> None:
    tok = train_tokenizer(kind, TEXT)
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert (again.encode(TEXT) == tok.encode(TEXT)).all() and again.n_vocab == tok.n_vocab


def test_word_pieces_keep_leading_spaces() -> None:
    tok = train_tokenizer("word", "to be or not to be")
    assert tok.split("to be or") == ["to", " be", " or"]


def test_extend_appends_new_pieces_only() -> None:
    tok = train_tokenizer("char", "abc")
    n = tok.n_vocab
    assert tok.extend("abcxyz") == 3 and tok.n_vocab == n + 3
    assert tok.decode(tok.encode("zyx")) == "zyx"


def test_documents_are_framed_by_bos_and_eos() -> None:
    tok = train_tokenizer("char", "ab")
    stream, unknown = encode_documents(tok, ["ab", "ba?"])
    assert list(stream) == [BOS, *tok.encode("ab"), EOS, BOS, *tok.encode("ba?"), EOS] and unknown == 1
    assert tok.decode(stream) == "abba\ufffd"
