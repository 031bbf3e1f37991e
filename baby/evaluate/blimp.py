"""BLiMP: does the model prefer the grammatical sentence of each minimal pair?

Protocol (``shared/data/FINDINGS.md`` §2 beside the repository, the BabyLM 2023/2024 way with a BOS-adding tokenizer):
  * a sentence's score is the sum of log p(token | <bos>, earlier tokens) over all its tokens, with
    no <eos>, no leading space and no length normalisation (``scoring.sentence_logprobs``). A run of
    the original Little Baby has no <bos> (nor <unk>): its sentences are scored from their second
    token, and pairs holding a symbol outside its vocabulary are left out, both said in the result;
  * a pair is correct iff score(good) > score(bad) strictly. Exact ties are counted and reported:
    they are wrong in ``accuracy`` and right in ``accuracy_babylm`` (the BabyLM harnesses take an
    argmax, which returns the good sentence on a tie - a model that gives both sentences the same
    score would get 100 % there);
  * a paradigm is a ``UID`` (the file stem when a line has no UID). The headline number is the
    unweighted (macro) mean over paradigms, as the 2024/2025 pipelines report it;
  * a phenomenon is a ``linguistics_term`` (``s-selection`` filed under ``argument_structure``, as
    BabyLM 2023 did, giving the 12 BabyLM phenomena; the file stem when a line has none). Its score
    is also a macro mean: the mean of its paradigms' accuracies (BabyLM 2023 used the micro mean over
    the phenomenon's pairs; on the full BLiMP, 1000 pairs per paradigm, the two agree).
    ``accuracy_micro`` (all pairs pooled) is given too, for comparison.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy

from baby import backend
from baby.evaluate.scoring import encode_sentences, padding_id, scored_from, sequence_logprobs
from baby.nn.model import GPT
from baby.nn.settings import ConfigError
from baby.progress import ProgressLog
from baby.runs import RunError
from baby.tokenizers import Tokenizer

PHENOMENON_ALIASES = {"s-selection": "argument_structure"}
REQUIRED = ("sentence_good", "sentence_bad")


@dataclass(frozen=True)
class Pair:
    good: str
    bad: str
    paradigm: str
    phenomenon: str
    field: str


def data_files(root: Path, pattern: str, what: str) -> list[Path]:
    """The paradigm files of a minimal-pair data folder, sorted by name, or one line saying why not."""
    if not root.is_dir():
        raise RunError(f"{root}: no such {what} data directory")
    files = sorted(root.glob(pattern))
    if not files:
        raise RunError(f"{root}: no {pattern} files (expected one {what} paradigm per file)")
    return files


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (split on newlines only), or one line saying why not."""
    try:
        return path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise RunError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise RunError(f"{path}: cannot read ({err.strerror or err})") from None


def load_blimp(directory: str | Path, limit: int = 0) -> list[Pair]:
    """The minimal pairs of every ``*.jsonl`` file of ``directory`` (sorted by file name, lines in
    order); with ``limit`` > 0 only the first ``limit`` pairs of each file."""
    root = Path(directory)
    pairs: list[Pair] = []
    for path in data_files(root, "*.jsonl", "BLiMP"):
        taken = 0
        for number, line in enumerate(text_lines(path), 1):
            if limit and taken >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RunError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise RunError(f"{path}:{number}: not a JSON object")
            missing = [k for k in REQUIRED if not isinstance(record.get(k), str)]
            if missing:
                raise RunError(f"{path}:{number}: missing text field {missing[0]!r}")
            term = str(record.get("linguistics_term") or path.stem)
            pairs.append(Pair(record["sentence_good"], record["sentence_bad"],
                              str(record.get("UID") or path.stem), PHENOMENON_ALIASES.get(term, term),
                              str(record.get("field", ""))))
            taken += 1
    if not pairs:
        raise RunError(f"{root}: the *.jsonl files hold no pairs")
    return pairs


def aggregate(pairs: list[Pair], good: numpy.ndarray, bad: numpy.ndarray) -> dict[str, Any]:
    """Accuracies from the scores of each pair's sentences: per paradigm, per phenomenon (macro over
    its paradigms) and overall (macro over paradigms; micro alongside)."""
    good, bad = numpy.asarray(good, numpy.float64), numpy.asarray(bad, numpy.float64)
    paradigm_names = sorted({p.paradigm for p in pairs})
    position = {name: i for i, name in enumerate(paradigm_names)}
    which = numpy.array([position[p.paradigm] for p in pairs], dtype=numpy.int64)
    correct = good > bad
    tie = good == bad
    n = numpy.bincount(which, minlength=len(paradigm_names))
    n_correct = numpy.bincount(which, weights=correct, minlength=len(paradigm_names)).astype(int)
    n_tie = numpy.bincount(which, weights=tie, minlength=len(paradigm_names)).astype(int)

    paradigms: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(paradigm_names):
        first = pairs[int(numpy.argmax(which == i))]
        paradigms[name] = {"phenomenon": first.phenomenon, "field": first.field, "n_pairs": int(n[i]),
                           "correct": int(n_correct[i]), "ties": int(n_tie[i]),
                           "accuracy": n_correct[i] / n[i], "accuracy_babylm": (n_correct[i] + n_tie[i]) / n[i]}

    def macro(names: list[str]) -> dict[str, Any]:
        rows = [paradigms[p] for p in names]
        return {"accuracy": float(numpy.mean([r["accuracy"] for r in rows])),
                "accuracy_babylm": float(numpy.mean([r["accuracy_babylm"] for r in rows])),
                "n_paradigms": len(rows), "n_pairs": sum(r["n_pairs"] for r in rows),
                "ties": sum(r["ties"] for r in rows)}

    phenomena = {ph: macro([p for p in paradigm_names if paradigms[p]["phenomenon"] == ph])
                 for ph in sorted({r["phenomenon"] for r in paradigms.values()})}
    overall = macro(paradigm_names)
    return {**overall, "accuracy_micro": float(correct.mean()) if len(pairs) else float("nan"),
            "identical_pairs": sum(p.good == p.bad for p in pairs),
            "phenomena": phenomena, "paradigms": paradigms}


def evaluate_blimp(model: GPT, tokenizer: Tokenizer, pairs: list[Pair], batch_size: int = 64,
                   pad_side: str = "right", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every pair and aggregate; adds timing and <unk> counts to ``aggregate``'s result."""
    pairs, left_out = encodable_pairs(tokenizer, pairs)
    if left_out:
        log(f"notice: {left_out} pairs left out: they hold symbols outside this run's vocabulary, which has no "
            f"<unk> (the original Little Baby's); {len(pairs)} pairs scored")
    if tokenizer.bos_id is None:
        log("notice: this vocabulary has no <bos>: each sentence is scored from its second token (the first is "
            "context only)")
    sequences, with_unknown = encode_sentences(tokenizer, [p.good for p in pairs] + [p.bad for p in pairs])
    if with_unknown:
        log(f"notice: {with_unknown} of {len(sequences)} sentences hold symbols outside the vocabulary (<unk>)")
    report = ProgressLog(log)
    start = time.perf_counter()
    scores = sequence_logprobs(model, sequences, batch_size, pad_side, pad_id=padding_id(tokenizer), progress=report)
    backend.sync()
    seconds = time.perf_counter() - start
    result = aggregate(pairs, scores[:len(pairs)], scores[len(pairs):])
    n_tokens = sum(len(s) - 1 for s in sequences)
    return {**result, "unknown_sentences": with_unknown, "left_out_pairs": left_out,
            "scored_from": scored_from(tokenizer), "scored_tokens": n_tokens, "seconds": seconds,
            "pairs_per_second": len(pairs) / seconds if seconds > 0 else 0.0}


def encodable_pairs(tokenizer: Tokenizer, pairs: list[Pair]) -> tuple[list[Pair], int]:
    """The pairs both of whose sentences the tokenizer encodes, and how many were left out. Only a
    vocabulary without <unk> (the original Little Baby's) refuses a symbol; it cannot score such a
    sentence, and scoring the rest is the fair comparison (each pair is judged on its own)."""
    if tokenizer.unk_id is not None:
        return pairs, 0

    def encodes(text: str) -> bool:
        try:
            tokenizer.encode(text)
        except ConfigError:
            return False
        return True

    kept = [p for p in pairs if encodes(p.good) and encodes(p.bad)]
    if not kept and pairs:
        raise RunError(f"none of the {len(pairs)} pairs can be scored: each holds symbols outside this run's "
                       f"vocabulary of {tokenizer.n_vocab} pieces, which has no <unk>")
    return kept, len(pairs) - len(kept)


def pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def format_blimp(result: dict[str, Any], paradigms: bool = False, title: str = "BLiMP") -> str:
    """The headline numbers and the phenomenon table (with ``paradigms``: every paradigm too)."""
    lines = [f"{title} {result.get('data', '')}: {result['n_pairs']:,} pairs, {result['n_paradigms']} paradigms"
             + (f" (first {result['limit']} per paradigm)" if result.get("limit") else ""),
             f"  accuracy (macro over paradigms, ties wrong) {pct(result['accuracy'])} %",
             f"  BabyLM-compatible (ties right)              {pct(result['accuracy_babylm'])} %",
             f"  micro over all pairs (ties wrong)           {pct(result['accuracy_micro'])} %",
             f"  ties {result['ties']} (identical sentences {result['identical_pairs']}); "
             f"{result.get('pairs_per_second', 0):,.0f} pairs/s",
             f"  {'phenomenon (macro over its paradigms)':<40} {'acc %':>6} {'babylm':>6} {'pairs':>6}"]
    for name, r in result["phenomena"].items():
        lines.append(f"  {name:<40} {pct(r['accuracy'])} {pct(r['accuracy_babylm'])} {r['n_pairs']:>6}")
    if paradigms:
        lines.append(f"  {'paradigm':<52} {'acc %':>6} {'ties':>5} {'pairs':>6}")
        for name, r in result["paradigms"].items():
            lines.append(f"  {name:<52} {pct(r['accuracy'])} {r['ties']:>5} {r['n_pairs']:>6}")
    return "\n".join(lines)


__all__ = ["Pair", "load_blimp", "aggregate", "evaluate_blimp", "format_blimp", "PHENOMENON_ALIASES"]
