"""Reading training text: one or more files, directories and .gz files, as a list of documents."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy

from baby.tokenizers import Tokenizer

TEXT_SUFFIXES = {".txt", ".gz", ".train", ".dev", ".test", ".md"}


class CorpusError(ValueError):
    pass


def expand(paths: list[str | Path]) -> list[Path]:
    """Files named directly, plus the text files of named directories (sorted, not recursive)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not found:
                raise CorpusError(f"{p}: directory has no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise CorpusError(f"{p}: no such input file or directory")
    if not out:
        raise CorpusError("no input given")
    return out


def read_documents(paths: list[str | Path]) -> list[str]:
    """Each file is one document; ``.gz`` files are decompressed; text must be UTF-8."""
    docs = []
    for p in expand(paths):
        try:
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            docs.append(raw.decode("utf-8"))
        except (OSError, EOFError) as err:
            raise CorpusError(f"{p}: cannot read ({err})") from None
        except UnicodeDecodeError as err:
            raise CorpusError(f"{p}: not UTF-8 text (byte {err.start})") from None
    if not any(d.strip() for d in docs):
        raise CorpusError(f"{', '.join(map(str, paths))}: the input holds no text")
    return docs


def fingerprint(docs: list[str]) -> str:
    """sha256 of the documents: a resumed run checks it is given the same text."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def count_words(docs: list[str]) -> int:
    return sum(len(d.split()) for d in docs)


def encode_documents(tokenizer: Tokenizer, docs: list[str]) -> tuple[numpy.ndarray, int]:
    """One stream: <bos> doc <eos> <bos> doc <eos> ...; returns (tokens, number of <unk> tokens)."""
    parts, unknown = [], 0
    for d in docs:
        ids = tokenizer.encode(d)
        unknown += tokenizer.unknown_count
        parts += [numpy.array([tokenizer.bos_id], numpy.int32), ids, numpy.array([tokenizer.eos_id], numpy.int32)]
    return numpy.concatenate(parts).astype(numpy.int32), unknown
