"""Perplexity of a model on held-out text, per token, per word and in bits per byte.

The text becomes the same stream training sees (``baby.corpus.encode_documents``: <bos> doc <eos>
for each file, concatenated), and every token after the first is predicted exactly once:
  * ``stride == n_ctx`` (the default): non-overlapping windows of n_ctx inputs, consecutive windows
    sharing one boundary token - exactly the windows of training's validation loss, so
    ``nll_per_token`` is comparable to it (the early tokens of each window see little context);
  * ``stride < n_ctx``: a sliding window (``scoring.window_plan``) in which every token after the
    first window sees at least n_ctx - stride tokens of context: lower, fairer numbers, at
    n_ctx / stride times the cost.
The total NLL counts every predicted token of the stream, the <eos> (and the <bos> after it) of the
document boundaries included, since they are part of what the model was trained to predict.

    perplexity       = exp(total NLL / predicted tokens)
    word_perplexity  = exp(total NLL / whitespace-separated words of the text)
    bits_per_byte    = total NLL / ln 2 / UTF-8 bytes of the text
The last two do not depend on the tokenizer, so they compare char, word and BPE models.

A vocabulary of the original Little Baby has no <bos>/<eos>: there the stream is the documents' tokens
one after the other, as the original reads its one text file, and a symbol outside the vocabulary is
refused in one line (it has no <unk> to stand for it).
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy

from baby import backend
from baby.corpus import count_words, encode_documents
from baby.evaluate.scoring import padding_id, sequence_logprobs
from baby.nn.model import GPT
from baby.nn.settings import ConfigError
from baby.tokenizers import Tokenizer


def evaluate_perplexity(model: GPT, tokenizer: Tokenizer, docs: list[str], batch_size: int = 64,
                        stride: int = 0, pad_side: str = "right") -> dict[str, Any]:
    n_ctx = model.cfg.n_ctx
    stride = stride or n_ctx
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride={stride} must be in 1..n_ctx={n_ctx}")
    if tokenizer.bos_id is not None:
        stream, unknown = encode_documents(tokenizer, docs)
    else:
        stream, unknown = numpy.concatenate([tokenizer.encode(d) for d in docs]).astype(numpy.int32), 0
    if len(stream) < 2:
        raise ConfigError(f"the text holds {len(stream)} token(s): perplexity needs at least two (one to predict)")
    start = time.perf_counter()
    logprob = float(sequence_logprobs(model, [stream], batch_size, pad_side, stride=stride,
                                      pad_id=padding_id(tokenizer))[0])
    backend.sync()
    seconds = time.perf_counter() - start
    nll, predicted = -logprob, len(stream) - 1
    words = count_words(docs)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return {"n_documents": len(docs), "n_tokens": int(len(stream)), "predicted_tokens": predicted,
            "n_words": words, "n_bytes": n_bytes, "unknown_tokens": unknown, "stride": stride, "n_ctx": n_ctx,
            "nll_total": nll, "nll_per_token": nll / predicted, "perplexity": math.exp(nll / predicted),
            "word_perplexity": math.exp(nll / words) if words else float("nan"),
            "bits_per_byte": nll / math.log(2) / n_bytes if n_bytes else float("nan"),
            "seconds": seconds, "tokens_per_second": predicted / seconds if seconds > 0 else 0.0}


def number(x: float) -> str:
    """Perplexities of untrained models are astronomic per word: switch to scientific notation."""
    return f"{x:,.3f}" if x < 1e6 else f"{x:.3e}"


def format_perplexity(result: dict[str, Any]) -> str:
    inputs = ", ".join(result.get("inputs", []))
    return "\n".join([
        f"perplexity on {inputs or 'the given text'}: {result['n_documents']} document(s), "
        f"{result['predicted_tokens']:,} predicted tokens, {result['n_words']:,} words, {result['n_bytes']:,} bytes",
        f"  windows of n_ctx={result['n_ctx']} every {result['stride']} tokens"
        + (f"; {result['unknown_tokens']} <unk> tokens" if result["unknown_tokens"] else ""),
        f"  NLL per token     {result['nll_per_token']:.4f} nats",
        f"  perplexity        {number(result['perplexity'])} per token, {number(result['word_perplexity'])} per word",
        f"  bits per byte     {result['bits_per_byte']:.4f}",
        f"  {result['tokens_per_second']:,.0f} tokens/s"])


__all__ = ["evaluate_perplexity", "format_perplexity"]
