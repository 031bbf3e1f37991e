"""A config's device: the one place that turns settings into a backend (device, dtype, CPU threads,
the bodies of the ops), falls back from an absent GPU to the CPU, and joins the ranks of a
data-parallel job.

Every command goes through ``select`` (or ``data_parallel`` when it trains); none calls
``backend.use`` itself.
"""
from __future__ import annotations

from typing import Callable

from baby import backend, distributed, ops
from baby.config import Config
from baby.distributed import Communicator

Log = Callable[[str], None]


def select(cfg: Config, threads: int = 0, log: Log | None = None, fallback: bool = False) -> Config:
    """Use the device, dtype and CPU threads of ``cfg`` (``threads``, when given, replaces
    c_device_cpu_cores) and return the config actually in use. With ``fallback`` (reading a run,
    never training one), a GPU run on a machine without a usable GPU runs on the CPU in fp32, where
    fp16 would only be emulated, with a notice through ``log``."""
    if fallback and cfg.c_device == "gpu" and not backend.gpu_available():
        if log is not None:
            log("notice: the run was trained on a GPU; none is usable here, so it runs on the CPU in fp32")
        cfg = cfg.replace(c_device="cpu", d_type="fp32")
    backend.use(cfg.c_device, threads or cfg.c_device_cpu_cores, cfg.c_device_gpu_core, cfg.c_device_gpu_tensor,
                cfg.d_type)
    ops.use(cfg.c_ops)  # fast bodies, or the textbook references (BABY_OPS=reference overrides)
    return cfg


def cpu_threads(cfg: Config) -> tuple[int, str]:
    """The CPU threads a run starting now uses, and a notice when it yields busy cores: with
    c_device_cpu_yield, only the cores other processes leave free (at least 1). Beside a process that
    keeps one of 2 cores busy, 2 threads trained the CPU preset at 5,096 tokens/s, 1 at 10,796."""
    asked = cfg.c_device_cpu_cores or backend.cpu_count()
    if cfg.c_device != "cpu" or asked == 1 or not cfg.c_device_cpu_yield:
        return asked, ""
    cores = backend.cpu_count()
    busy = backend.busy_cores()
    free = max(1, min(asked, cores - busy))
    if free == asked:
        return asked, ""
    return free, (f"c_device_cpu_cores={cfg.c_device_cpu_cores}: other processes keep {busy} of the {cores} cores "
                  f"busy, so this runs on {free} thread{'s' if free > 1 else ''} (threads waiting for a busy core "
                  "are several times slower); c_device_cpu_yield=0 keeps them all")


def single_process_threads(cfg: Config) -> tuple[int, str]:
    """cpu_threads for a run of one process; ranks of a data-parallel job keep their settings (on
    one machine they are each other's busy cores, by design)."""
    return cpu_threads(cfg) if distributed.launched_size() in (None, 1) else (0, "")


def data_parallel(cfg: Config, threads: int = 0) -> Communicator:
    """Select the backend and return this process's communicator (one rank: the no-op one). Ranks
    sharing a machine take GPUs c_device_gpu_core + local rank; a batch that cannot be split evenly
    is refused before anything is written. ``threads`` replaces c_device_cpu_cores when given."""
    comm = distributed.mpi_world()
    distributed.check_split(cfg.batch_size, comm.size)
    if comm.size > 1 and cfg.c_device == "gpu":
        cfg = cfg.replace(c_device_gpu_core=cfg.c_device_gpu_core + distributed.local_rank())
    select(cfg, threads)
    return distributed.world()
