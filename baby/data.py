"""Text -> token stream -> train/validation split -> windows -> batches.

The stream is split by ``r_split`` *before* windows are cut, so no window straddles the boundary
and nothing of the validation text leaks into training. A window holds ``n_ctx + 1`` tokens (inputs
and the targets shifted by one); consecutive windows share one boundary token and otherwise do not
overlap, so one epoch is one pass over the text (not one sample per stride-1 position).

``c_window_offset``:
  * ``zero``   - windows are cut once, starting at token 0; the tail shorter than a window is unused.
  * ``random`` - each epoch cuts windows from a fresh random offset in [0, n_ctx), so across epochs
    every position gets to be at every place of a window (and the tail is not always the one lost).
``c_shuffle`` shuffles the order of the windows in each epoch, never the tokens inside a window.
The order of epoch e depends only on (seed, e), so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy

from baby import backend


def split_stream(tokens: numpy.ndarray, r_split: float, n_ctx: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Train and validation parts of one token stream; each must hold at least one window."""
    cut = int(len(tokens) * r_split)
    train, val = tokens[:cut], tokens[cut:]
    need = n_ctx + 1
    if len(train) < need or len(val) < need:
        raise ValueError(f"the text gives {len(tokens)} tokens: with r_split={r_split} the train ({len(train)}) "
                         f"and validation ({len(val)}) parts each need at least n_ctx+1={need}; "
                         "use a longer text or a smaller n_ctx")
    return train, val


def window_starts(n_tokens: int, n_ctx: int, offset: int = 0) -> numpy.ndarray:
    """First index of every full window of n_ctx + 1 tokens, stepping by n_ctx."""
    return numpy.arange(offset, n_tokens - n_ctx, n_ctx)


def gather_windows(tokens: numpy.ndarray, starts: numpy.ndarray, n_ctx: int) -> numpy.ndarray:
    """(len(starts), n_ctx + 1) int32 array of windows (one fancy-index, no Python loop)."""
    return tokens[starts[:, None] + numpy.arange(n_ctx + 1)[None, :]].astype(numpy.int32)


@dataclass
class Batches:
    """Training batches of one token stream, addressable by (epoch, index) for exact resume."""

    tokens: numpy.ndarray
    n_ctx: int
    batch_size: int
    seed: int
    shuffle: bool = True
    offset: str = "zero"  # c_window_offset: zero or random
    rank: int = 0  # data parallelism: this rank gathers only its rows of every (global) batch
    ranks: int = 1
    _epoch_starts: tuple[int, numpy.ndarray] | None = field(default=None, init=False, repr=False)

    def starts(self, epoch: int) -> numpy.ndarray:
        """Window starts of an epoch, in training order (kept for the epoch: batches ask per step)."""
        if self._epoch_starts is not None and self._epoch_starts[0] == epoch:
            return self._epoch_starts[1]
        rng = numpy.random.default_rng([self.seed, 2, epoch])
        offset = int(rng.integers(0, self.n_ctx)) if self.offset == "random" else 0
        starts = window_starts(len(self.tokens), self.n_ctx, offset)
        if len(starts) == 0:  # a random offset may leave no room; offset 0 always fits one window
            starts = window_starts(len(self.tokens), self.n_ctx, 0)
        starts = rng.permutation(starts) if self.shuffle else starts
        self._epoch_starts = (epoch, starts)
        return starts

    def per_epoch(self) -> int:
        """Batches per epoch (the partial last batch is dropped: memory per step stays constant). For
        ``random`` offsets it is the count at the largest, so every epoch has the same number of steps."""
        worst_offset = self.n_ctx - 1 if self.offset == "random" else 0
        n_windows = len(window_starts(len(self.tokens), self.n_ctx, worst_offset)) or 1
        return max(1, n_windows // self.batch_size)

    def batch(self, step: int) -> tuple[Any, Any]:
        """Inputs and targets (device arrays, (B / ranks, n_ctx)) of this rank's rows of the step-th
        batch of the whole run (its shard: the windows of other ranks are never gathered)."""
        epoch, index = divmod(step, self.per_epoch())
        starts = self.starts(epoch)
        chosen = starts[index * self.batch_size:(index + 1) * self.batch_size]
        if len(chosen) < self.batch_size:  # fewer windows than a batch: wrap around
            chosen = numpy.resize(starts, self.batch_size)
        per = self.batch_size // self.ranks
        chosen = chosen[self.rank * per:(self.rank + 1) * per]
        windows = backend.asarray(gather_windows(self.tokens, chosen, self.n_ctx))
        return windows[:, :-1], windows[:, 1:]


def eval_batches(tokens: numpy.ndarray, n_ctx: int, batch_size: int, max_batches: int) -> Iterator[tuple[Any, Any]]:
    """Fixed validation batches: windows from offset 0 in order, evenly spread over the stream."""
    starts = window_starts(len(tokens), n_ctx)
    n_batches = max(1, min(max_batches, len(starts) // batch_size))
    if len(starts) > n_batches * batch_size:
        pick = numpy.linspace(0, len(starts) - 1, n_batches * batch_size).round().astype(int)
        starts = starts[pick]
    for i in range(n_batches):
        chunk = starts[i * batch_size:(i + 1) * batch_size]
        if len(chunk) == 0:
            break
        windows = backend.asarray(gather_windows(tokens, chunk, n_ctx))
        yield windows[:, :-1], windows[:, 1:]
