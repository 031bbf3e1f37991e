"""char and word tokenizers: exact round trip on their text, <unk> for unseen symbols, JSON form."""
from __future__ import annotations

import json

import pytest

from baby.corpus import encode_documents
from baby.tokenizers import BOS, EOS, UNK, tokenizer_from_dict, train_tokenizer
from baby.tokenizers.base import TableTokenizer
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


# ---- the original Little Baby's vocabulary: its ids, no specials ----------------------------------------

def original(kind: str, text: str) -> TableTokenizer:
    from baby.tokenizers import KINDS
    vocab = sorted(set(text.split() if kind == "word" else text))  # as the original builds it
    return KINDS[kind](vocab, original=True)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_an_original_vocabulary_keeps_the_originals_ids_and_has_no_specials(kind: str) -> None:
    text = "To be, or not to be:\nthat is the question."
    tok = original(kind, text)
    assert tok.n_vocab == len(tok.pieces) and tok.bos_id is tok.eos_id is tok.pad_id is tok.unk_id is None
    pieces = text.split() if kind == "word" else list(text)
    assert tok.encode(text).tolist() == [sorted(set(pieces)).index(p) for p in pieces]
    assert tok.decode(tok.encode(text)) == (" ".join(text.split()) if kind == "word" else text)  # word: joined by one space
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.original and again.pieces == tok.pieces and again.encode(text).tolist() == tok.encode(text).tolist()


@pytest.mark.parametrize("kind", ["char", "word"])
def test_an_original_vocabulary_refuses_an_unknown_symbol_in_one_line(kind: str) -> None:
    from baby.config import ConfigError
    tok = original(kind, "the cat sat")
    with pytest.raises(ConfigError, match="'dog'" if kind == "word" else "'d'") as err:
        tok.encode("the dog sat")
    assert "\n" not in str(err.value)


def test_an_original_vocabulary_grows_at_its_end_keeping_every_id() -> None:
    tok = original("char", "abc")
    assert tok.extend("cab dab") == 2 and tok.pieces == ["a", "b", "c", " ", "d"]
    assert tok.encode("dab").tolist() == [4, 0, 1]


def test_a_saved_vocabulary_without_specials_must_say_it_is_the_originals() -> None:
    with pytest.raises(ValueError, match="specials"):
        tokenizer_from_dict({"kind": "char", "pieces": ["a", "b"]})
    with pytest.raises(ValueError, match="original must be true or false"):
        tokenizer_from_dict({"kind": "char", "pieces": ["a", "b"], "original": "yes"})
