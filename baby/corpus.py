"""Reading training text: one or more files, directories and .gz files, as a list of documents."""
from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy

from baby.progress import Log, ProgressLog, say
from baby.tokenizers import Tokenizer, train_tokenizer
from baby.tokenizers.bpe import split_blocks

if TYPE_CHECKING:
    from baby.config import Config

DEFAULT_INPUT = "inputs/shakespeare.txt"

TEXT_SUFFIXES = {".txt", ".gz", ".train", ".dev", ".test"}  # not README.md and the like


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
        elif p.is_symlink():
            raise CorpusError(f"{p}: a broken or looping symbolic link")
        elif p.exists():
            raise CorpusError(f"{p}: not a regular file or directory (a FIFO or device?)")
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
        except (OSError, EOFError, zlib.error) as err:
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


def encode_documents(tokenizer: Tokenizer, docs: list[str],
                     progress: Callable[[int, int], None] | None = None) -> tuple[numpy.ndarray, int]:
    """One stream: <bos> doc <eos> <bos> doc <eos> ...; returns (tokens, number of <unk> tokens).
    A tokenizer without those ids (the original Little Baby's vocabulary) joins the documents as they
    are. Documents are encoded in blocks cut where no token of any of our tokenizers can span (before
    a line break after a non-space), so ``progress`` (characters done, total) can follow a large file."""
    parts, unknown = [], 0
    total, done = sum(len(d) for d in docs), 0
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    for d in docs:
        parts.append(numpy.array(bos, numpy.int32))
        for block in split_blocks(d):
            parts.append(tokenizer.encode(block))
            unknown += tokenizer.unknown_count
            done += len(block)
            if progress is not None:
                progress(done, total)
        parts.append(numpy.array(eos, numpy.int32))
    return numpy.concatenate(parts).astype(numpy.int32), unknown


def holdout_split(paths: list[str | Path], fraction: float, out_dir: str | Path) -> tuple[Path, Path]:
    """Write each input document's first (1 - fraction) to out_dir/train/ and its last fraction to
    out_dir/heldout/ (cut at a line break), e.g. to keep the last 5 % of every file for perplexity."""
    if not 0 < fraction < 1:
        raise CorpusError(f"--holdout={fraction}: must be between 0 and 1")
    out = Path(out_dir)
    train_dir, held_dir = out / "train", out / "heldout"
    for folder in (train_dir, held_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for path in expand(paths):
        text = read_documents([path])[0]
        cut = int(len(text) * (1 - fraction))
        newline = text.find("\n", cut)
        cut = newline + 1 if newline != -1 else cut
        name = path.name[:-3] if path.suffix == ".gz" else path.name
        (train_dir / f"{name}.txt").write_text(text[:cut], encoding="utf-8")
        (held_dir / f"{name}.txt").write_text(text[cut:], encoding="utf-8")
    return train_dir, held_dir


@dataclass
class Corpus:
    """Training text read and tokenized: what ``train`` needs before it builds a model. A study makes
    it once and trains every cell on it (``prepare_corpus`` is the only way to make one)."""

    inputs: list[str]
    fingerprint: str
    words: int
    tokenizer: Tokenizer
    tokens: numpy.ndarray
    unknown: int


def prepare_corpus(cfg: Config, inputs: list[str] | None = None, log: Log = say) -> Corpus:
    """Read ``inputs`` (default: the shakespeare text), train cfg's tokenizer on them and encode them
    (long phases log progress with an ETA)."""
    inputs = [str(p) for p in (inputs or [DEFAULT_INPUT])]
    docs = read_documents(inputs)
    tokenizer = train_tokenizer(cfg.c_tokenizer, "\n".join(docs), n_vocab=cfg.n_vocab,
                                progress=ProgressLog(log, "BPE merges learned"))
    tokens, unknown = encode_documents(tokenizer, docs, ProgressLog(log, "characters tokenized"))
    return Corpus(inputs, fingerprint(docs), count_words(docs), tokenizer, tokens, unknown)
