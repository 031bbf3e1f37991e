"""Multi-query associative recall (MQAR), the synthetic recall test of Zoology (Arora, Eyuboglu et al.,
2023; HazyResearch/zoology ``zoology/data/multiquery_ar.py``), rebuilt in NumPy.

An example of length N with D key-value pairs (V = vocabulary size):

    k1 v1 k2 v2 ... kD vD | 0 0 k3 0 k1 0 0 0 k2 ...
    keys from [1, V/2), values from [V/2, V), both distinct within the example; token 0 is the blank.

Every key is queried exactly once in the query region after the pairs: key j sits at offset 2·gap_j,
with the D gaps drawn without replacement from 0 .. (N - 2D)/2 - 1 with a power law p(i) ∝ i^(a-1)
(a = 0.01, so short gaps are strongly preferred). The label at a query position is that key's value
(the model must emit it AT the key; the value is never shown afterwards); every other label is -100.
With ``random_non_queries`` (Zoology's default) the blanks are then replaced by uniform random tokens;
the paper's Figure 2 runs without it.
"""
from __future__ import annotations

from typing import Any

import numpy

IGNORE = -100


def multiquery_ar(n_examples: int, seq_len: int, n_pairs: int, vocab: int, seed: int,
                  power_a: float = 0.01, random_non_queries: bool = True) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(inputs, labels), both (n_examples, seq_len) int64; labels are -100 except at the queries."""
    if seq_len % 2:
        raise ValueError(f"MQAR: seq_len={seq_len} must be even")
    if vocab <= seq_len:
        raise ValueError(f"MQAR: vocab={vocab} must exceed seq_len={seq_len}")
    if 4 * n_pairs > seq_len:
        raise ValueError(f"MQAR: 4 x n_pairs={n_pairs} must not exceed seq_len={seq_len}")
    if n_pairs > vocab // 2 - 1:
        raise ValueError(f"MQAR: {n_pairs} distinct keys do not fit in [1, {vocab // 2})")
    rng = numpy.random.default_rng(seed)
    half, context = vocab // 2, 2 * n_pairs

    def distinct(low: int, high: int) -> numpy.ndarray:
        """n_pairs distinct values from [low, high) per example (a random permutation's prefix)."""
        return numpy.argsort(rng.random((n_examples, high - low)), axis=1)[:, :n_pairs] + low

    keys, values = distinct(1, half), distinct(half, vocab)

    # Gap slots without replacement with weights p: the Gumbel top-k trick draws the same set as
    # successive sampling (what numpy's choice(replace=False, p=p) does), for all examples at once.
    space = (seq_len - context) // 2
    p = power_a * numpy.arange(1, space + 1, dtype=numpy.float64) ** (power_a - 1)
    p /= p.sum()
    perturbed = numpy.log(p)[None, :] + rng.gumbel(size=(n_examples, space))
    gaps = numpy.argsort(-perturbed, axis=1)[:, :n_pairs]

    inputs = numpy.zeros((n_examples, seq_len), dtype=numpy.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    labels = numpy.full((n_examples, seq_len), IGNORE, dtype=numpy.int64)
    rows = numpy.arange(n_examples)[:, None]
    query_positions = context + 2 * gaps
    inputs[rows, query_positions] = keys
    labels[rows, query_positions] = values
    if random_non_queries:
        blank = inputs == 0
        inputs[blank] = rng.integers(0, vocab, size=int(blank.sum()))
    return inputs, labels


def accuracy(logits: Any, labels: numpy.ndarray) -> tuple[int, int]:
    """(correct, total) argmax predictions over the labelled positions. logits: (B, T, V) host array."""
    labelled = labels != IGNORE
    predictions = numpy.asarray(logits).argmax(axis=-1)
    return int((predictions[labelled] == labels[labelled]).sum()), int(labelled.sum())
