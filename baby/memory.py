"""What a training run will ask of memory, estimated from the settings alone (nothing allocated), so
that a batch or width the machine cannot hold is refused before the first array is made.

The estimate (calibrated against tracemalloc peaks of real steps, which it meets within ~1.5x):
  * parameters P ~ V*C (x2 untied) + T*C (learned positions) + L*(4*C^2 per mixer + 3*C*hidden);
    weights, gradients and the two AdamW moments, plus the copy made when they are packed: 5 floats each,
    and on the CPU one more gradient per extra replica (baby/replicas.py: one per thread);
  * activations per token of a micro-batch ~ 16 floats per residual sub-block and layer per width unit,
    3*V for the logits and their gradient, and what each mixer declares it keeps beyond that
    (``score_floats``: H*T for the (B, H, T, T) scores of quadratic attention).
"""
from __future__ import annotations

import os

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baby.nn import variants

if TYPE_CHECKING:
    from baby.config import Config

@dataclass(frozen=True)
class Estimate:
    parameters: int
    parameter_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def estimate_training(cfg: Config, n_vocab: int) -> Estimate:
    """Bytes one training step of ``cfg`` needs (parameter state + one micro-batch's activations)."""
    c, t, layers, v = cfg.n_emb, cfg.n_ctx, cfg.n_layers, max(n_vocab, 1)
    item = {"fp16": 2, "fp32": 4, "fp64": 8}[cfg.d_type]
    mixers = cfg.mixers
    params = v * c * (1 if cfg.c_tie else 2) + (t * c if cfg.c_position == "learned" else 0)
    params += layers * (len(mixers) * 4 * c * c + (3 * c * cfg.hidden if cfg.c_network else 0))
    parts = len(mixers) + (1 if cfg.c_network else 0)
    per_token = layers * parts * 16 * c + 3 * v
    per_token += layers * int(sum(variants.lookup("mixer", m).cls.score_floats(cfg, t) for m in mixers))
    tokens = cfg.batch_size * t
    on_replicas = cfg.c_device == "cpu" and cfg.c_device_cpu_parallel != "ops"
    replicas = (cfg.c_device_cpu_cores or os.cpu_count() or 1) if on_replicas else 1
    return Estimate(params, (4 + replicas) * params * max(item, 4), per_token * tokens * item)


def machine_memory() -> tuple[int | None, int | None, str]:
    """(available, total) bytes this process may use, and whose limit that is: the machine's memory,
    or less where the process is held to a smaller limit - its address space (``ulimit -v``,
    RLIMIT_AS) or its control group's memory (cgroup v2 ``memory.max``, v1 ``limit_in_bytes``).
    None where nothing says."""
    available, total = _meminfo()
    limits = [(available, total, "this machine's memory")]
    soft = resource.getrlimit(resource.RLIMIT_AS)[0] if resource is not None else -1
    if soft not in (-1, resource.RLIM_INFINITY if resource is not None else -1):
        used = _address_space()  # what the process has mapped already (BLAS threads reserve a lot)
        left = max(soft - used, 0)
        limits.append((left, left, f"this process's address-space limit (ulimit -v {soft // 1024} KiB)"))
    cgroup = _cgroup_memory()
    if cgroup is not None:
        limits.append((cgroup[0], cgroup[1], "this control group's memory limit"))
    binding = min(limits, key=lambda lim: lim[1] if lim[1] is not None else float("inf"))
    free = min((lim[0] for lim in limits if lim[0] is not None), default=None)
    return free, binding[1], binding[2]


def _meminfo() -> tuple[int | None, int | None]:
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii"))
        kib = {k: int(v.split()[0]) * 1024 for k, v in info.items() if v.strip().endswith("kB")}
        return kib.get("MemAvailable"), kib.get("MemTotal")
    except (OSError, ValueError):
        try:
            return None, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            return None, None


def _address_space() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _cgroup_memory() -> tuple[int, int] | None:
    """(free, limit) of this process's control group, or None when it has no memory limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:
                raw = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if raw == "max" or not raw.isdigit() or int(raw) >= 1 << 60:  # v1 writes a huge number for "none"
            return None
        return max(int(raw) - usage, 0), int(raw)
    return None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(cfg: Config, n_vocab: int, available: int | None = None, total: int | None = None) -> str | None:
    """Refuse (ConfigError) a run whose estimated step memory exceeds the machine's memory; return a
    warning line when it exceeds what is free right now, else None. GPU memory is the device's."""
    from baby.config import ConfigError  # noqa: PLC0415 - config is above this module

    whose = "the device's memory"  # given by the caller: the GPU's free and total bytes
    if available is None and total is None:
        available, total, whose = machine_memory()
    need = estimate_training(cfg, n_vocab)
    what = (f"one training step needs about {gib(need.total_bytes)} ({gib(need.parameter_bytes)} for "
            f"~{need.parameters / 1e6:,.1f}M parameters and their AdamW state, {gib(need.activation_bytes)} "
            f"of activations for batch_size={cfg.batch_size} x n_ctx={cfg.n_ctx} at n_emb={cfg.n_emb})")
    if total is not None and need.total_bytes > total:
        raise ConfigError(f"{what}, more than {whose} of {gib(total)}: lower batch_size (and raise "
                          "n_accumulate to keep the tokens per step), n_ctx, n_emb or n_layers")
    if available is not None and need.total_bytes > available:
        return f"{what}; only {gib(available)} is free now: the run may swap or be killed"
    return None
