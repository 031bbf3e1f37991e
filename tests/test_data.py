"""Windows, splits and batch order: no leakage, one pass per epoch, shuffling windows not tokens."""
from __future__ import annotations

import numpy
import pytest

from baby import backend
from baby.data import Batches, eval_batches, split_stream, window_starts


def test_split_happens_before_windows() -> None:
    tokens = numpy.arange(1000)
    train, val = split_stream(tokens, 0.9, 16)
    assert train[-1] + 1 == val[0] and len(train) == 900
    with pytest.raises(ValueError, match="n_ctx"):
        split_stream(numpy.arange(40), 0.9, 16)


def test_one_epoch_is_one_pass_of_non_overlapping_windows() -> None:
    tokens = numpy.arange(1000)
    b = Batches(tokens, n_ctx=10, batch_size=4, seed=0, shuffle=False)
    seen = numpy.concatenate([backend.to_host(b.batch(i)[0]).reshape(-1) for i in range(b.per_epoch())])
    assert len(seen) == len(numpy.unique(seen))  # no input token twice within an epoch
    assert len(seen) >= 0.9 * len(tokens)
    assert b.per_epoch() == len(window_starts(1000, 10)) // 4


def test_targets_are_inputs_shifted_by_one() -> None:
    b = Batches(numpy.arange(500), n_ctx=8, batch_size=3, seed=1)
    x, y = b.batch(5)
    assert (backend.to_host(y)[:, :-1] == backend.to_host(x)[:, 1:]).all()
    assert (backend.to_host(y) == backend.to_host(x) + 1).all()


def test_shuffle_reorders_windows_never_tokens_and_is_reproducible() -> None:
    tokens = numpy.arange(2000)
    b = Batches(tokens, n_ctx=10, batch_size=5, seed=3, shuffle=True)
    x, _ = b.batch(0)
    x = backend.to_host(x)
    assert (numpy.diff(x, axis=1) == 1).all()  # every window is a contiguous run of the stream
    assert not (numpy.diff(x[:, 0]) == 10).all()  # but the windows are not in stream order
    assert (backend.to_host(Batches(tokens, 10, 5, 3, True).batch(0)[0]) == x).all()
    assert not (backend.to_host(b.batch(b.per_epoch())[0]) == x).all()  # a new order next epoch


def test_post_sequence_moves_the_window_offset_each_epoch() -> None:
    tokens = numpy.arange(5000)
    b = Batches(tokens, n_ctx=16, batch_size=2, seed=0, shuffle=False, offset="random")
    offsets = {int(backend.to_host(b.batch(e * b.per_epoch())[0])[0, 0]) % 16 for e in range(8)}
    assert len(offsets) > 1
    pre = Batches(tokens, n_ctx=16, batch_size=2, seed=0, shuffle=False, offset="zero")
    assert {int(backend.to_host(pre.batch(e * pre.per_epoch())[0])[0, 0]) for e in range(4)} == {0}


def test_eval_batches_are_fixed_and_bounded() -> None:
    tokens = numpy.arange(3000)
    a = [backend.to_host(x) for x, _ in eval_batches(tokens, 10, 4, 5)]
    b = [backend.to_host(x) for x, _ in eval_batches(tokens, 10, 4, 5)]
    assert len(a) == 5 and all((p == q).all() for p, q in zip(a, b))
