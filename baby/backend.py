"""The only module that knows whether NumPy or CuPy is underneath.

Everyone else does ``from baby import backend`` and uses ``backend.xp`` at call time, so one
code path serves both libraries. ``use()`` switches the library, the device, the BLAS threads and
the compute dtype; tests switch back and forth through it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Iterator

import numpy

from baby import pool

xp: Any = numpy
DTYPES = {"fp16": numpy.float16, "fp32": numpy.float32, "fp64": numpy.float64}
dtype: Any = numpy.float32
device_name: str = "cpu"

GPU_HELP = ("c_device='gpu' needs CuPy and an NVIDIA GPU: install the GPU extra with "
            "`pip install -e .[gpu]` (CUDA 12), or set c_device='cpu'")


class BackendError(RuntimeError):
    """A device or library that was asked for is not available."""


_BLAS: Any = None  # threadpoolctl's controllers of the loaded BLAS libraries (a scan takes milliseconds)
_BLAS_SCANNED_AT = -1  # len(sys.modules) at the scan: an import since may have loaded another BLAS (SciPy's)


def set_cpu_threads(n: int) -> None:
    """Use n CPU threads: NumPy's BLAS (OpenBLAS, MKL or BLIS, whichever NumPy was built with) for
    the GEMMs, via threadpoolctl (the environment variables cover BLAS libraries loaded later), and
    baby's pool (baby/pool.py) for the elementwise and reduction work around them. Measured and
    rejected: GEMMs cut into blocks for the pool with BLAS single-threaded (slower than BLAS's own
    threads on a quiet machine, and like them far slower than one thread on a busy one). A switch
    costs microseconds (the libraries are looked up once), so a step may change the count."""
    set_blas_threads(n)
    pool.set_threads(n)


def set_blas_threads(n: int) -> None:
    """Threads of NumPy's BLAS alone (baby/replicas.py: one each, for the whole run, because BLAS
    threads woken by one multi-threaded call spin for a while and take the cores from the replicas)."""
    global _BLAS, _BLAS_SCANNED_AT
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if _BLAS is None or _BLAS_SCANNED_AT != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - a runtime dependency, loaded when needed
        except ImportError as err:
            raise BackendError("c_device_cpu_cores needs threadpoolctl: pip install threadpoolctl") from err
        _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
        _BLAS_SCANNED_AT = len(sys.modules)
    for lib in _BLAS:
        lib.set_num_threads(n)


_KEEPING_MEMORY = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS. By default a
    freed array of more than 128 KB (up to 32 MB as the threshold adapts) goes back, and the next
    step's array of the same size faults its pages in again: 10,000 page faults a step for the CPU
    preset, 33,000 for a 5M BabyLM model (keeping them made the CPU preset ~30 % faster). The process then holds its peak
    step memory, which it needs again next step anyway. No-op where the C library is not glibc."""
    global _KEEPING_MEMORY
    if _KEEPING_MEMORY:
        return True
    try:
        import ctypes  # noqa: PLC0415 - only here
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1 and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): their allocators differ
        return False
    _KEEPING_MEMORY = ok
    return ok


@contextlib.contextmanager
def at_most_cpu_threads(n: int) -> Iterator[None]:
    """Run the block on at most n CPU threads (BLAS and the pool), then restore the count."""
    before = pool.threads()
    if xp is not numpy or n >= before:
        yield
        return
    set_cpu_threads(n)
    try:
        yield
    finally:
        set_cpu_threads(before)


def busy_cores(samples: int = 5, interval: float = 0.01) -> int:
    """How many cores other processes keep busy now: the median over ``samples`` readings of the
    kernel's count of runnable threads, less this process's own (BLAS threads may still be spinning
    after earlier work); 0 where /proc cannot be read."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat", encoding="ascii") as f:
                running = next((int(line.split()[1]) for line in f if line.startswith("procs_running")), 1)
            own = sum(_thread_state(task) == "R" for task in os.listdir("/proc/self/task"))
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(max(running - max(own, 1), 0))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


def _thread_state(task: str) -> str:
    try:
        with open(f"/proc/self/task/{task}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0]  # the field after "(name)"
    except OSError:  # the thread ended meanwhile
        return ""


def cpu_count() -> int:
    """Cores this process may run on (c_device_cpu_cores=0 uses them all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def blas_threads() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy has loaded and their thread counts (for benchmarks and reports)."""
    from threadpoolctl import threadpool_info  # noqa: PLC0415
    return [{k: info.get(k) for k in ("internal_api", "num_threads", "version")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def _import_cupy() -> Any:
    try:
        import cupy  # noqa: PLC0415 - the one guarded CuPy import of the package
    except ImportError as err:
        raise BackendError(GPU_HELP) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise BackendError(f"CuPy is installed but no CUDA device is usable ({err}). {GPU_HELP}") from err
    if count == 0:
        raise BackendError(f"CuPy is installed but no GPU was found. {GPU_HELP}")
    return cupy


def nccl() -> Any:
    """CuPy's NCCL bindings (data parallelism on GPUs), imported here like CuPy itself."""
    _import_cupy()
    try:
        from cupy.cuda import nccl as bindings  # noqa: PLC0415 - guarded with CuPy
    except ImportError as err:
        raise BackendError(f"CuPy was built without NCCL ({err}): install NCCL for CUDA 12 "
                           "(`pip install nvidia-nccl-cu12`) for several GPUs") from err
    if not getattr(bindings, "available", True):
        raise BackendError("CuPy cannot load NCCL: install it (`pip install nvidia-nccl-cu12`) for several GPUs")
    return bindings


def gpu_available() -> bool:
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def use(device: str = "cpu", cpu_cores: int | None = None, gpu_core: int = 0,
        gpu_tensor: int = 0, d_type: str = "fp32") -> None:
    """Select library, device, threads and dtype for everything that follows."""
    global xp, dtype, device_name
    if d_type not in DTYPES:
        raise BackendError(f"d_type={d_type!r}: allowed {sorted(DTYPES)}")
    if device == "cpu":
        set_cpu_threads(cpu_cores or cpu_count())
        keep_freed_memory()
        xp, device_name = numpy, "cpu"
    elif device == "gpu":
        cupy = _import_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= gpu_core < count:
            raise BackendError(f"c_device_gpu_core={gpu_core}: this machine has GPUs 0..{count - 1}")
        cupy.cuda.Device(gpu_core).use()
        # TF32 is a cuBLAS compute mode; CuPy reads it from this variable.
        os.environ["CUPY_TF32"] = "1" if gpu_tensor else "0"
        xp = cupy
        props = cupy.cuda.runtime.getDeviceProperties(gpu_core)
        name = props["name"]
        device_name = f"gpu:{gpu_core} {name.decode() if isinstance(name, bytes) else name}"
    else:
        raise BackendError(f"c_device={device!r}: allowed 'cpu' or 'gpu'")
    dtype = DTYPES[d_type]


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """a @ b. NumPy has no fast half-precision GEMM (fp16 matmuls run ~100x slower than fp32), so
    on the CPU a product of fp16 operands is an fp32 GEMM of the up-cast operands rounded back to
    fp16: the tensor cores' own arithmetic (fp16 inputs, fp32 accumulation) at fp32 speed. ``out``
    receives the product when given."""
    if xp is not numpy:
        return xp.matmul(a, b, out=out)
    if a.dtype == numpy.float16 and b.dtype == numpy.float16:
        c = matmul(a.astype(numpy.float32), b.astype(numpy.float32)).astype(numpy.float16)
        if out is None:
            return c
        out[...] = c
        return out
    return numpy.matmul(a, b, out=out)


def over_rows(fn: Any, n_rows: int, elements: int) -> list[Any]:
    """fn(lo, hi) over row ranges covering [0, n_rows): on the CPU in parallel on the pool when the
    work (``elements`` values touched) is large enough, on a GPU once for all rows. Returns the
    results in row order, so partial sums add up in a fixed order."""
    if xp is not numpy:
        return [fn(0, n_rows)]
    return pool.over_rows(fn, n_rows, elements)


def splits(n_rows: int, elements: int) -> bool:
    """Whether ``over_rows`` would cut this work into blocks (callers keep a direct path otherwise)."""
    return xp is numpy and len(pool.blocks(n_rows, elements)) > 1 and not pool.busy()


def blockwise(fn: Any, *arrays: Any) -> list[Any]:
    """fn(*blocks) over aligned row blocks of arrays that share their leading axes (each viewed as
    rows of its last axis; 1-D arrays as rows of one value). The caller preallocates the outputs
    among ``arrays``, and fn writes its block of them with ``out=`` or in place. On the CPU the blocks
    are sized to the cache (every pass of fn over a block then reads cache, not memory) and shared
    among the pool's threads when the work is large enough; fn's results come back in row order.
    Runs fn once on the whole arrays on a GPU or when an array is not contiguous."""
    if xp is not numpy or not all(x.flags.c_contiguous for x in arrays):
        return [fn(*arrays)]
    n_rows = arrays[0].size // arrays[0].shape[-1] if arrays[0].ndim > 1 else arrays[0].size
    total = sum(x.nbytes for x in arrays)
    step = pool.cache_rows(total / max(n_rows, 1)) if total > pool.SPLIT_BYTES else n_rows
    if step >= n_rows and pool.threads() == 1:
        return [fn(*arrays)]
    rows = [x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x for x in arrays]

    def cached(lo: int, hi: int) -> list[Any]:
        return [fn(*(r[a:min(a + step, hi)] for r in rows)) for a in range(lo, hi, step)]

    return [part for parts in pool.over_rows(cached, n_rows, sum(x.size for x in arrays)) for part in parts]


def accumulator(dtype: Any) -> Any:
    """The dtype long sums are taken in: at least float32 (fp16 overflows at 65504 and drops the
    small terms of a long sum)."""
    return numpy.promote_types(dtype, numpy.float32)


def to_host(a: Any) -> numpy.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, numpy.ndarray) else numpy.asarray(a)


def asarray(a: Any, dtype_: Any = None) -> Any:
    """Move host data onto the current device."""
    return xp.asarray(a, dtype=dtype_)


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """target[index] += values with repeated indices summed (plain += loses duplicates)."""
    if xp is numpy:
        if index.ndim == 1 and values.ndim == target.ndim == 2:
            # rows: sort the indices and sum each run with reduceat (several times faster than add.at)
            order = numpy.argsort(index, kind="stable")
            sorted_index = index[order]
            starts = numpy.flatnonzero(numpy.r_[True, sorted_index[1:] != sorted_index[:-1]])
            target[sorted_index[starts]] += numpy.add.reduceat(values[order], starts, axis=0)
        else:
            numpy.add.at(target, index, values)
    else:
        import cupyx  # noqa: PLC0415 - CuPy-only helper, guarded by the xp check
        cupyx.scatter_add(target, index, values)


def sync() -> None:
    """Wait for queued GPU work (timings); no-op on the CPU."""
    if xp is not numpy:
        xp.cuda.Stream.null.synchronize()


# ---- compiled elementwise kernels (CuPy only): the fast CuPy bodies of baby/ops/cuda.py ----------

_KERNELS: dict[str, Any] = {}


def elementwise_kernel(name: str, inputs: str, outputs: str, body: str) -> Any:
    """CuPy's ElementwiseKernel of this CUDA ``body``, compiled once per name (on the GPU only)."""
    if name not in _KERNELS:
        _KERNELS[name] = xp.ElementwiseKernel(inputs, outputs, body, name)
    return _KERNELS[name]


def device_memory() -> tuple[int | None, int | None]:
    """(free, total) bytes of the GPU in use; (None, None) on the CPU (the caller asks the OS)."""
    if xp is numpy:
        return None, None
    free, total = xp.cuda.runtime.memGetInfo()
    return int(free), int(total)


class Stopwatch:
    """Elapsed time of queued device work since it was made: CUDA events on the GPU (nothing waits
    until ``seconds`` is asked), the wall clock on the CPU."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.event = None
        if xp is not numpy:
            self.event = xp.cuda.Event()
            self.event.record()

    def seconds(self) -> float:
        if self.event is None:
            return time.perf_counter() - self.start
        end = xp.cuda.Event()
        end.record()
        end.synchronize()
        return xp.cuda.get_elapsed_time(self.event, end) / 1000.0


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    if xp is not numpy:
        out["cupy"] = xp.__version__
    return out


def rng(*keys: int) -> Any:
    """A device random generator determined by keys, e.g. rng(seed, step): runs resume exactly."""
    if xp is numpy:
        return numpy.random.default_rng(list(keys))
    seed = int(numpy.random.SeedSequence(list(keys)).generate_state(1)[0])
    return xp.random.default_rng(seed)
