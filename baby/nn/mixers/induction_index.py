"""The induction index: for every position, the last M earlier positions that held the same token id.

Built from token ids alone (no parameters, no gradient), once per forward, shared by every induction
layer. A sort groups equal ids with their positions in ascending order, so each position's previous
occurrence is simply its left neighbour in the sorted order (when that neighbour has the same id).
Following that pointer M - 1 more times gives the last M occurrences, newest first:

    prev[t]       = max{ s < t : ids[s] == ids[t] }   (or -1)
    cand[t, 0]    = prev[t],   cand[t, j] = prev[cand[t, j - 1]]

O(T log T) for the sort, O(T * M) for the chain; nothing of size T x T exists anywhere.

A candidate c is usable at position t only if its successor c + 1 lies strictly in the past
(c >= 0 and c + 1 < t): the induction mixer reads the token that FOLLOWED c. Padding positions get
ids of their own (unique negatives), so they never match anything and are never candidates.

Incremental decoding keeps a small per-sequence state instead of re-sorting everything:
``prev`` for every position seen so far, and ``last[b, id]``, the newest position of each id.
"""
from __future__ import annotations

from typing import Any

from baby import backend


def pad_safe_ids(ids: Any, valid: Any) -> Any:
    """ids as int64, with every padding position given its own negative id (it matches nothing)."""
    xp = backend.xp
    safe = ids.astype(xp.int64)
    if valid is None:
        return safe
    unique_negative = -1 - xp.arange(ids.shape[1], dtype=xp.int64)
    return xp.where(valid, safe, unique_negative[None, :])


def previous_occurrence(ids: Any) -> Any:
    """(B, T) ids -> (B, T) index of the previous position with the same id in the row, or -1."""
    xp = backend.xp
    b, t = ids.shape
    positions = xp.arange(t, dtype=xp.int64)
    # Sorting (id, position) pairs: equal ids end up adjacent, in order of position. Making every
    # key unique gives the result of a stable argsort with any sort algorithm (NumPy or CuPy).
    order = xp.argsort(ids * t + positions, axis=1)
    sorted_ids = xp.take_along_axis(ids, order, axis=1)
    prev_sorted = xp.full((b, t), -1, dtype=xp.int64)
    prev_sorted[:, 1:] = xp.where(sorted_ids[:, 1:] == sorted_ids[:, :-1], order[:, :-1], -1)
    # Undo the sort: order is a permutation of each row, so this assignment has no duplicates.
    prev = xp.empty_like(prev_sorted)
    rows = xp.arange(b, dtype=xp.int64)[:, None] * t
    prev.reshape(-1)[(rows + order).reshape(-1)] = prev_sorted.reshape(-1)
    return prev


def follow_chain(prev: Any, first: Any, m: int) -> Any:
    """cand[..., 0] = first, cand[..., j] = prev[cand[..., j-1]]: the last m occurrences, newest first.
    prev (B, S) covers every position a pointer can reach; first (B, T) starts the chain."""
    xp = backend.xp
    cand = xp.empty(first.shape + (m,), dtype=xp.int64)
    current = first
    for j in range(m):  # m is a small constant (M = 5)
        cand[..., j] = current
        hop = xp.take_along_axis(prev, xp.maximum(current, 0), axis=1)
        current = xp.where(current >= 0, hop, -1)
    return cand


def candidate_mask(cand: Any, query_positions: Any, valid: Any) -> Any:
    """Usable candidates: c >= 0 and c + 1 < t (the follower is strictly in the past), and the
    follower is not padding. valid (B, S) or None covers every position a candidate can reach."""
    xp = backend.xp
    mask = (cand >= 0) & (cand + 1 < query_positions[..., None])
    if valid is not None:
        b, t, m = cand.shape
        follower = xp.clip(cand + 1, 0, valid.shape[1] - 1).reshape(b, t * m)
        mask &= xp.take_along_axis(valid, follower, axis=1).reshape(b, t, m)
    return mask


def build_index(ids: Any, valid: Any, m: int) -> tuple[Any, Any]:
    """Candidates (B, T, M) int64 (newest first, -1 for none) and their usable mask (B, T, M) bool."""
    xp = backend.xp
    prev = previous_occurrence(pad_safe_ids(ids, valid))
    cand = follow_chain(prev, prev, m)
    return cand, candidate_mask(cand, xp.arange(ids.shape[1], dtype=xp.int64)[None, :], valid)


def grow_index(state: dict[str, Any], ids: Any, valid: Any, m: int, capacity: int) -> tuple[Any, Any]:
    """Incremental decoding: extend the index by the new ids (B, t) without re-sorting the past.

    Candidates index the positions this state has seen (0 .. n + t - 1). Within the new chunk the
    previous occurrence comes from a sort of the chunk alone; a chunk position without one continues
    from ``last[b, id]``, the newest earlier position of its id in the history."""
    xp = backend.xp
    b, t = ids.shape
    if not state:
        state.update(n=0, prev=xp.full((b, capacity), -1, dtype=xp.int64),
                     valid=xp.ones((b, capacity), dtype=bool), last=xp.full((b, 1), -1, dtype=xp.int64))
    n = state["n"]
    if n + t > capacity:
        raise RuntimeError(f"induction index of {capacity} positions overflowed; the model must re-prefill")
    safe = pad_safe_ids(ids, valid)
    real = safe >= 0
    width = int(safe.max()) + 1
    if width > state["last"].shape[1]:  # ids beyond the table so far: widen it (-1 = never seen)
        extra = xp.full((b, width - state["last"].shape[1]), -1, dtype=xp.int64)
        state["last"] = xp.concatenate([state["last"], extra], axis=1)
    last = state["last"]

    local = previous_occurrence(safe)
    from_history = xp.where(real, xp.take_along_axis(last, xp.maximum(safe, 0), axis=1), -1)
    prev = xp.where(local >= 0, local + n, from_history)
    state["prev"][:, n:n + t] = prev
    if valid is not None:
        state["valid"][:, n:n + t] = valid

    # last[b, id] <- the newest position of each id in the chunk (positions nobody in the chunk
    # points back to); those (row, id) pairs are unique, so a plain assignment is exact.
    has_next = xp.zeros((b, t), dtype=bool)
    rows, cols = xp.nonzero(local >= 0)
    has_next[rows, local[rows, cols]] = True
    rows, cols = xp.nonzero(real & ~has_next)
    last[rows, safe[rows, cols]] = n + cols
    state["n"] = n + t

    cand = follow_chain(state["prev"][:, :n + t], prev, m)
    positions = n + xp.arange(t, dtype=xp.int64)[None, :]
    return cand, candidate_mask(cand, positions, state["valid"][:, :n + t])
