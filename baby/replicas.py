"""Data parallelism inside one CPU process: n replicas of the model, one per thread, each training
its slice of every batch with single-threaded BLAS.

Why: on two cores a step's small elementwise operations (0.1-0.4M values: norms, GELU, softmax,
residual adds) do not get faster on two threads, because every NumPy call hands the GIL over and the
arrays are too small to split (baby/pool.py). Two replicas each run a whole forward and backward on
half of the batch, so those operations run on both cores at once as well as the GEMMs.

A replica is a copy of the model's modules (its own activation caches) whose parameters share the
model's weight arrays but add into a gradient buffer of their own, laid out like the optimizer's
flat gradient; after the step's micro-batches the buffers are added to it in replica order, so a run
repeats bit for bit. Slice i's token loss is weighted by its share of the batch's counted targets,
which makes the summed gradient the whole batch's gradient (up to rounding); auxiliary losses (MoE
balance) are averaged over the slices like micro-batches.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable

import numpy

from baby import backend, pool
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from baby.optim import AdamW

if TYPE_CHECKING:
    from baby.config import Config


def replica_count(cfg: "Config", rows: int) -> int:
    """Replicas a step on micro-batches of ``rows`` rows uses under ``cfg`` (1: none): one per CPU
    thread with c_device_cpu_parallel batch (auto: when every thread gets a row), on the CPU only."""
    threads = pool.threads()
    if backend.xp is not numpy or threads < 2 or cfg.c_device_cpu_parallel == "ops":
        return 1
    if cfg.c_device_cpu_parallel == "auto" and rows < threads:
        return 1
    return min(threads, rows)


def for_training(model: GPT, opt: AdamW, cfg: "Config", rows: int) -> "Replicas | None":
    """The replicas a trainer of ``model`` uses (None: one model, threads inside each operation),
    with BLAS set for that layout: one thread beside replicas, else as many as the pool has."""
    n = replica_count(cfg, rows)
    if backend.xp is numpy:
        backend.set_blas_threads(1 if n > 1 else pool.threads())
    return Replicas(model, opt, n) if n > 1 else None


class Replicas:
    """``n`` replicas of ``model`` (the model itself is replica 0) for the optimizer ``opt``."""

    def __init__(self, model: GPT, opt: AdamW, n: int) -> None:
        self.model, self.opt, self.n = model, opt, n
        self.models: list[GPT] = [model]
        self.grads: list[Any] = [opt.flat_grad]
        self.pairs: list[list[tuple[Any, Any]]] = [[]]  # (model parameter, replica parameter) per replica
        offsets, offset = {}, 0
        for p in opt.params:
            offsets[id(p)] = offset
            offset += p.data.size
        for _ in range(n - 1):
            originals = model.parameters()
            memo: dict[int, Any] = {id(p.data): p.data for p in originals}  # weights shared, never copied
            twin = copy.deepcopy(model, memo)
            grad = backend.xp.zeros_like(opt.flat_grad)
            pairs = []
            for p in originals:
                q = memo[id(p)]
                if id(p) in offsets:  # trainable: its gradient is a view of this replica's buffer
                    start = offsets[id(p)]
                    q.grad = grad[start:start + p.data.size].reshape(p.data.shape)
                pairs.append((p, q))
            self.models.append(twin)
            self.grads.append(grad)
            self.pairs.append(pairs)
        self.threads = pool.Pool(n)

    def slices(self, rows: int) -> list[tuple[int, int]]:
        edges = [rows * i // self.n for i in range(self.n + 1)]
        return [(edges[i], edges[i + 1]) for i in range(self.n) if edges[i + 1] > edges[i]]

    def run(self, work: Callable[[int, GPT], Any], count: int) -> list[Any]:
        """work(i, replica i) for i < count, on the replicas' threads."""
        for i in range(1, count):
            for p, q in self.pairs[i]:  # the replicas read the model's current weight arrays
                q.data = p.data
            self.models[i].train(self.model.training)
        before = pool.threads()
        pool.set_threads(1)  # inside a replica every operation runs whole (BLAS: one thread, see for_training)
        try:
            return self.threads.run(lambda i: work(i, self.models[i]), count)
        finally:
            pool.set_threads(before)

    def forward_backward(self, x: Any, y: Any, rng: Any, ignore: int, scale: Any,
                         residual: list[list[Any]] | None) -> Any:
        """Loss of the batch (x, y) with its gradient added into each replica's buffer, the slices
        trained at once; ``residual`` (health) receives each slice's residual RMS list."""
        xp = backend.xp
        slices = self.slices(x.shape[0])
        n = len(slices)
        counts = [(y[lo:hi] != ignore).sum() for lo, hi in slices]
        total = xp.maximum(sum(counts[1:], counts[0]), 1)
        rngs = rng.spawn(n) if rng is not None else [None] * n
        health: list[list[Any] | None] = [[] if residual is not None else None for _ in slices]

        def work(i: int, model: GPT) -> Any:
            lo, hi = slices[i]
            share = counts[i] / total  # this slice's part of the batch's mean token loss
            ctx = model.context(x[lo:hi], rng=rngs[i], grad_scale=scale / n)
            ctx.residual = health[i]
            loss, dlogits = cross_entropy(model.forward(x[lo:hi], ctx), y[lo:hi], ignore, grad_scale=scale * share)
            model.backward(dlogits)
            return loss * share + model.extra_loss() / n

        losses = self.run(work, n)
        if residual is not None:
            residual.extend(h for h in health if h is not None)
        return sum(losses[1:], losses[0])

    def loss(self, x: Any, y: Any, ignore: int = -1) -> Any:
        """The mean token loss of (x, y) without gradients (evaluation), the slices at once."""
        xp = backend.xp
        slices = self.slices(x.shape[0])
        counts = [(y[lo:hi] != ignore).sum() for lo, hi in slices]
        total = xp.maximum(sum(counts[1:], counts[0]), 1)

        def work(i: int, model: GPT) -> Any:
            lo, hi = slices[i]
            return cross_entropy(model.forward(x[lo:hi]), y[lo:hi], ignore)[0] * (counts[i] / total)

        losses = self.run(work, len(slices))
        return sum(losses[1:], losses[0])

    def reduce(self) -> None:
        """Add the replicas' gradients into the optimizer's (in replica order) and zero them."""
        for grad in self.grads[1:]:
            self.opt.flat_grad += grad
            grad.fill(0)


__all__ = ["Replicas", "replica_count", "for_training"]
