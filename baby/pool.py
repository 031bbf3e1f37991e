"""A small persistent pool of CPU threads for NumPy work split into blocks of rows.

NumPy releases the GIL inside ufunc loops, reductions and BLAS calls on large arrays, so one Python
thread per core can run the row blocks of one array at the same time. Two choices make the pool
fast on a machine that is doing something else as well (every laptop is):

- idle threads sleep on a queue instead of spinning (OpenBLAS's waiting threads spin, and on a busy
  2-core machine they take the core from the thread they wait for);
- an operation is cut into more blocks than threads and the threads take blocks as they come free,
  so a thread that the OS has paused does not hold up the others' share.

Blocks are fixed by the shape and the thread count, not by which thread runs them, so results do not
depend on the scheduling: a run repeats bit for bit.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
from typing import Any, Callable

# Measured on 2 cores: each NumPy call in a block hands the GIL over, so blocks must be large. GELU on
# 0.4M values ran no faster on 2 threads than on 1; on 2M it ran 1.5x faster.
BLOCKS_PER_THREAD = 2  # more blocks than threads: the free thread takes the next one
MIN_ELEMENTS = 1 << 21  # values an operation touches below which it runs whole on the calling thread


def _l2_bytes(default: int = 1 << 20) -> int:
    """The per-core L2 cache of this machine (Linux sysfs), or ``default``."""
    try:
        for index in sorted(os.listdir("/sys/devices/system/cpu/cpu0/cache")):
            folder = f"/sys/devices/system/cpu/cpu0/cache/{index}"
            with open(f"{folder}/level", encoding="ascii") as f:
                if f.read().strip() != "2":
                    continue
            with open(f"{folder}/size", encoding="ascii") as f:
                size = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
            return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


# An elementwise operation makes several passes over its arrays (GELU: 8). A block of rows whose arrays
# fit in L2 together makes them all in cache, where one that streams from memory pays each pass again:
# GELU of (2048, 1024) fp32 ran in 2.6 ms in blocks of 128 rows against 4.3 ms whole (Xeon, 2 MB L2).
# Smaller work runs whole: two replicas training nanoGPT's shape (arrays of ~2 MB) ran 6 % slower cut
# into blocks (more NumPy calls, each taking the GIL) and 1-2 % faster whole.
L2_BYTES = _l2_bytes()
SPLIT_BYTES = 2 * L2_BYTES  # arrays of fewer bytes run whole: their blocks' extra calls cost more than the cache saves
CACHE_BYTES = L2_BYTES * 3 // 4  # the arrays of one block, together; the rest is the block's temporaries


class Pool:
    """``threads - 1`` helper threads plus the caller; ``run`` blocks until every block is done."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self.pid = os.getpid()
        self._jobs: list[queue.SimpleQueue[Any]] = []
        self._done: list[queue.SimpleQueue[Any]] = []
        self._lock = threading.Lock()  # one operation at a time (a second caller waits its turn)
        for _ in range(self.threads - 1):
            jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
            done: queue.SimpleQueue[Any] = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(jobs, done), daemon=True, name="baby-pool").start()
            self._jobs.append(jobs)
            self._done.append(done)

    def busy(self) -> bool:
        return self._lock.locked()

    def run(self, block: Callable[[int], Any], n_blocks: int) -> list[Any]:
        """[block(0), ..., block(n_blocks - 1)], computed by all threads; the first error is raised
        after every thread has stopped touching the arrays."""
        results: list[Any] = [None] * n_blocks
        helpers = min(self.threads - 1, n_blocks - 1)
        if helpers <= 0 or self._lock.locked():  # nested or concurrent use runs serially, never deadlocks
            for i in range(n_blocks):
                results[i] = block(i)
            return results
        with self._lock:
            counter = itertools.count()  # next() on it is atomic under the GIL
            errors: list[BaseException] = []

            def drain() -> None:
                try:
                    while (i := next(counter)) < n_blocks:
                        results[i] = block(i)
                except BaseException as err:  # noqa: BLE001 - handed to the caller below
                    errors.append(err)

            for jobs in self._jobs[:helpers]:
                jobs.put(drain)
            drain()
            for done in self._done[:helpers]:
                done.get()
            if errors:
                raise errors[0]
        return results


def _serve(jobs: queue.SimpleQueue[Any], done: queue.SimpleQueue[Any]) -> None:
    while True:
        job = jobs.get()
        job()
        done.put(None)


_POOL = Pool(1)
_POOLS: dict[tuple[int, int], Pool] = {}  # (pid, threads): switching back and forth makes no new threads


def busy() -> bool:
    """Whether an operation is running on the pool now (work started inside one runs whole)."""
    return _POOL.busy()


def set_threads(n: int) -> None:
    """Use n threads from now on (a pool of each size is made once per process; idle ones sleep)."""
    global _POOL
    key = (os.getpid(), max(1, int(n)))
    if key not in _POOLS:
        _POOLS[key] = Pool(key[1])
    _POOL = _POOLS[key]


def threads() -> int:
    if _POOL.pid != os.getpid():  # a forked child has no helper threads
        set_threads(_POOL.threads)
    return _POOL.threads


def blocks(n_rows: int, elements: int) -> list[tuple[int, int]]:
    """Row ranges an operation over ``n_rows`` rows touching ``elements`` values is cut into: one
    range when it is small or there is one thread, otherwise about BLOCKS_PER_THREAD per thread."""
    n = threads()
    if n == 1 or elements < MIN_ELEMENTS or n_rows < 2:
        return [(0, n_rows)]
    count = min(n_rows, n * BLOCKS_PER_THREAD, max(1, elements // (MIN_ELEMENTS // 2)))
    edges = [n_rows * i // count for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count) if edges[i + 1] > edges[i]]


def cache_rows(row_bytes: float) -> int:
    """Rows of ``row_bytes`` (summed over an operation's arrays) that fit in one cache-sized block."""
    return max(1, int(CACHE_BYTES // max(row_bytes, 1)))


def over_rows(fn: Callable[[int, int], Any], n_rows: int, elements: int) -> list[Any]:
    """fn(lo, hi) for row ranges covering [0, n_rows), in parallel where it pays; returns the results
    in row order (partial sums are then added in a fixed order: runs repeat bit for bit)."""
    ranges = blocks(n_rows, elements)
    if len(ranges) == 1 or _POOL.busy():  # inside a block (or beside another caller): whole, here
        return [fn(0, n_rows)]
    return _POOL.run(lambda i: fn(*ranges[i]), len(ranges))


__all__ = ["Pool", "busy", "set_threads", "threads", "blocks", "cache_rows", "over_rows", "CACHE_BYTES", "L2_BYTES",
           "SPLIT_BYTES", "BLOCKS_PER_THREAD", "MIN_ELEMENTS"]
