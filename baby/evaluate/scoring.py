"""Log-probabilities of whole token sequences under a model: the engine of BLiMP and perplexity.

A sequence ``s_0 s_1 ... s_{n-1}`` is scored as  sum_{t>=1} log p(s_t | s_0 .. s_{t-1}):  the first
token is context only. A sentence is scored as the sequence ``<bos> tokens`` (no ``<eos>``), so every
token of the sentence - the first one included - is scored, the first given ``<bos>`` alone. A
vocabulary of the original Little Baby has no ``<bos>``: there a sentence is its tokens alone, so its
first token is context only and the score starts at the second (``scored_from`` says which).

How the work is batched:
  * identical sequences (after tokenization) are scored once. Besides saving time this makes two
    sentences that tokenize the same (e.g. both only ``<unk>`` where they differ) tie *exactly*,
    whatever batches they would have landed in;
  * every sequence becomes one or more windows (rows) of at most ``n_ctx`` inputs; rows are sorted by
    length and cut into batches, so a batch is padded only to its own longest row;
  * padding uses ``<pad>`` ids (id 0 for a vocabulary without one) and a (B, T) ``valid`` mask given to
    ``model.context``: positions are counted from the mask and attention never looks at padded keys,
    so left and right padding give the same scores (right padding is the default: in a causal model
    the pads after a row cannot reach its real tokens even in a mixer that ignored the mask).

A sequence longer than the context (more than ``n_ctx`` targets) is scored with a sliding window, as
Hugging Face's perplexity guide does: windows of ``n_ctx`` inputs that start every ``stride`` tokens,
each scoring only the targets that no earlier window scored, so every target is scored exactly once
and, after the first window, with at least ``n_ctx - stride`` tokens of context. Each window starts
at position 0 again, as the training windows do.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy

from baby import backend
from baby.nn.model import GPT
from baby.tokenizers import PAD, Tokenizer

PAD_SIDES = ("right", "left")
Progress = Callable[[int, int], None]


def window_plan(n_tokens: int, n_ctx: int, stride: int) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """(starts, lengths, skips) of the windows that score targets 1..n_tokens-1 of one sequence.

    Window i feeds tokens ``start .. start+length-1`` and predicts ``start+1 .. start+length``; its
    first ``skip`` predictions were scored by the window before and are left out. With
    ``stride == n_ctx`` the windows do not overlap (consecutive ones share one boundary token, like
    the training windows of ``baby.data``)."""
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride={stride} must be in 1..n_ctx={n_ctx}")
    last = n_tokens - 1  # index of the last target
    if last < 1:
        empty = numpy.zeros(0, numpy.int64)
        return empty, empty, empty
    n_windows = 1 + max(0, -(-(last - n_ctx) // stride))  # ceil division
    starts = numpy.arange(n_windows, dtype=numpy.int64) * stride
    lengths = numpy.minimum(n_ctx, last - starts)
    skips = numpy.where(starts > 0, n_ctx - stride, 0)  # every window but the last is full
    return starts, lengths, skips


def sequence_logprobs(model: GPT, sequences: Sequence[numpy.ndarray], batch_size: int = 64,
                      pad_side: str = "right", stride: int = 0, pad_id: int = PAD,
                      progress: Progress | None = None) -> numpy.ndarray:
    """Sum of log p(s_t | s_<t) over t >= 1 for each sequence (float64, host). ``stride`` is the
    sliding-window step for sequences longer than the context (0: n_ctx // 2, at least 1); ``pad_id``
    fills padded positions (the mask keeps it out of every real token's computation)."""
    if pad_side not in PAD_SIDES:
        raise ValueError(f"pad_side={pad_side!r}: allowed {', '.join(PAD_SIDES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    n_ctx = model.cfg.n_ctx
    stride = stride or max(1, n_ctx // 2)

    # Score each distinct sequence once; `inverse` maps them back.
    index: dict[bytes, int] = {}
    unique: list[numpy.ndarray] = []
    inverse = numpy.empty(len(sequences), numpy.int64)
    for i, seq in enumerate(sequences):
        seq = numpy.asarray(seq, dtype=numpy.int64).reshape(-1)
        key = seq.tobytes()
        if key not in index:
            index[key] = len(unique)
            unique.append(seq)
        inverse[i] = index[key]
    totals = numpy.zeros(len(unique), numpy.float64)
    if not unique:
        return totals[inverse]

    # One flat buffer of all sequences; a row is (owner, first token in the buffer, length, skip).
    # A sequence that fits the context is one row; only longer ones need window_plan.
    flat = numpy.concatenate(unique)
    sizes = numpy.array([len(s) for s in unique], numpy.int64)
    offsets = numpy.cumsum(sizes) - sizes
    fits = numpy.flatnonzero((sizes >= 2) & (sizes - 1 <= n_ctx))
    owner, first, length, skip = [fits], [offsets[fits]], [sizes[fits] - 1], [numpy.zeros(len(fits), numpy.int64)]
    for u in numpy.flatnonzero(sizes - 1 > n_ctx):
        starts, lengths, skips = window_plan(int(sizes[u]), n_ctx, stride)
        owner.append(numpy.full(len(starts), u))
        first.append(offsets[u] + starts)
        length.append(lengths)
        skip.append(skips)
    rows = [numpy.concatenate(a).astype(numpy.int64) for a in (owner, first, length, skip)]
    order = numpy.argsort(rows[2], kind="stable")  # short rows together: little padding
    owner, first, length, skip = (a[order] for a in rows)

    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(order), batch_size):
            hi = min(lo + batch_size, len(order))
            width = int(length[hi - 1])  # the longest row of the batch (rows are sorted)
            ids, targets, valid, scored = pad_rows(flat, first[lo:hi], length[lo:hi], skip[lo:hi],
                                                   width, pad_id, pad_side)
            logp = target_logprobs(model, ids, targets, valid)
            row_sums = numpy.where(scored, logp, 0.0).sum(axis=1)
            numpy.add.at(totals, owner[lo:hi], row_sums)
            if progress is not None:
                progress(hi, len(order))
    finally:
        model.train(was_training)
    return totals[inverse]


def pad_rows(flat: numpy.ndarray, first: numpy.ndarray, length: numpy.ndarray, skip: numpy.ndarray,
             width: int, pad: int, pad_side: str) -> tuple[numpy.ndarray, ...]:
    """Host arrays (B, width) of one batch: input ids, target ids, the valid mask and the mask of the
    targets to score. Left padding puts each row's tokens at the end of its line."""
    column = numpy.arange(width)[None, :]
    shift = (width - length)[:, None] if pad_side == "left" else numpy.zeros((len(length), 1), numpy.int64)
    valid = (column >= shift) & (column < shift + length[:, None])
    source = numpy.clip(first[:, None] + column - shift, 0, len(flat) - 2)
    ids = numpy.where(valid, flat[source], pad)
    targets = numpy.where(valid, flat[source + 1], 0)
    scored = valid & (column - shift >= skip[:, None])
    return ids.astype(numpy.int32), targets.astype(numpy.int64), valid, scored


def target_logprobs(model: GPT, ids: numpy.ndarray, targets: numpy.ndarray, valid: numpy.ndarray) -> numpy.ndarray:
    """log p(target) at every position of a padded batch (float64 host array, (B, T))."""
    xp = backend.xp
    ids_d, valid_d = backend.asarray(ids), backend.asarray(valid)
    logits = model.forward(ids_d, model.context(ids_d, valid=valid_d))
    if logits.dtype == xp.float16:  # fp16 GPU runs: take the softmax in fp32
        logits = logits.astype(xp.float32)
    # log_softmax picked at the targets, with one (B, T, V) temporary instead of three: the logits of
    # a whole batch of windows are the largest array of an evaluation.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    picked = xp.take_along_axis(shifted, backend.asarray(targets)[..., None], axis=-1)[..., 0]
    logp = picked - xp.log(xp.exp(shifted, out=shifted).sum(axis=-1))
    return backend.to_host(logp).astype(numpy.float64)


def scored_from(tokenizer: Tokenizer) -> str:
    """Which tokens of a sentence are scored: all ("bos": given <bos>) or all but the first ("second
    token": a vocabulary without <bos>, the original Little Baby's)."""
    return "bos" if tokenizer.bos_id is not None else "second token"


def padding_id(tokenizer: Tokenizer) -> int:
    """The id that fills padded positions: <pad>, or any id (0) where there is none - a padded
    position is masked, so what it holds never reaches a real token's score."""
    return tokenizer.pad_id if tokenizer.pad_id is not None else 0


def encode_sentences(tokenizer: Tokenizer, sentences: Sequence[str]) -> tuple[list[numpy.ndarray], int]:
    """``<bos> tokens`` for each sentence (``tokens`` without a <bos>), and how many sentences hold an
    <unk> token."""
    bos = numpy.array([tokenizer.bos_id] if tokenizer.bos_id is not None else [], numpy.int64)
    out, with_unknown = [], 0
    for s in sentences:
        ids = tokenizer.encode(s)
        with_unknown += tokenizer.unknown_count > 0
        out.append(numpy.concatenate([bos, numpy.asarray(ids, numpy.int64)]))
    return out, with_unknown


def sentence_logprobs(model: GPT, tokenizer: Tokenizer, sentences: list[str], batch_size: int = 64,
                      pad_side: str = "right", progress: Progress | None = None) -> numpy.ndarray:
    """Total log-probability of each sentence (float64, host): sum over all its tokens of
    log p(token_t | <bos>, tokens_<t) (without <bos>: over its tokens after the first); no <eos>, no
    length normalisation. Sentences with more than n_ctx tokens use the sliding window of
    ``sequence_logprobs`` (stride n_ctx // 2)."""
    sequences, _ = encode_sentences(tokenizer, sentences)
    return sequence_logprobs(model, sequences, batch_size, pad_side, pad_id=padding_id(tokenizer), progress=progress)


__all__ = ["sentence_logprobs", "sequence_logprobs", "encode_sentences", "scored_from", "padding_id", "window_plan",
           "PAD_SIDES"]
