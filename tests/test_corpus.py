"""Inputs: several files, directories and .gz files; documents; held-out splits; clear errors."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from baby.corpus import CorpusError, count_words, expand, holdout_split, read_documents


def test_files_directories_and_gz(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("two words")
    (tmp_path / "d" / "a.gz").write_bytes(gzip.compress("üñí gz text here".encode()))
    (tmp_path / "d" / "skip.bin").write_bytes(b"\x00")
    single = tmp_path / "c.txt"
    single.write_text("one")
    docs = read_documents([str(tmp_path / "d"), str(single)])
    assert docs == ["üñí gz text here", "two words", "one"]
    assert count_words(docs) == 7


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.txt", "no such input"),
    (lambda p: (p / "e").mkdir() or p / "e", "no text files"),
    (lambda p: (p / "x.txt").write_bytes(b"\xff\xfe\x00") and p / "x.txt", "UTF-8"),
    (lambda p: (p / "bad.gz").write_bytes(b"not gzip") and p / "bad.gz", "cannot read"),
    (lambda p: (p / "blank.txt").write_text("  \n") and p / "blank.txt", "no text"),
])
def test_bad_inputs_name_the_file(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(CorpusError, match=message):
        read_documents([str(path)])


def test_holdout_keeps_the_tail_of_every_file(tmp_path: Path) -> None:
    lines = [f"line {i}\n" for i in range(100)]
    src = tmp_path / "s.gz"
    src.write_bytes(gzip.compress("".join(lines).encode()))
    train_dir, held_dir = holdout_split([src], 0.05, tmp_path / "out")
    train, held = (train_dir / "s.txt").read_text(), (held_dir / "s.txt").read_text()
    assert train + held == "".join(lines)
    assert held.startswith("line ") and 3 <= held.count("\n") <= 6
    assert expand([train_dir]) == [train_dir / "s.txt"]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encoding_in_blocks_gives_the_whole_documents_ids_and_reports_progress(kind: str,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import numpy

    from baby import corpus
    from baby.tokenizers import train_tokenizer
    from baby.tokenizers.bpe import split_blocks
    from tests.conftest import ROOT
    text = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:20000] + "\n  \n\t x  \n\nend  "
    docs = [text, "", "a\n b  \n"]
    tokenizer = train_tokenizer(kind, text[:8000], n_vocab=300)
    whole = numpy.concatenate([numpy.concatenate([[1], tokenizer.encode(d), [2]]) for d in docs])
    monkeypatch.setattr(corpus, "split_blocks", functools.partial(split_blocks, size=300))
    seen: list[tuple[int, int]] = []
    blocked, _ = corpus.encode_documents(tokenizer, docs, lambda done, total: seen.append((done, total)))
    assert numpy.array_equal(whole, blocked)
    assert len(seen) > 10 and seen[-1] == (sum(map(len, docs)),) * 2
