"""python -m baby bench dp --config C [C ...]: three ways to spend the same N cores, side by side - N MPI
ranks x 1 BLAS thread (data parallel), 1 rank running N replicas of the model (c_device_cpu_parallel=batch)
and 1 rank running one model with N threads inside each operation (ops) - on the same config, random
token batches and number of timed steps. tokens/s counts the global batch (batch_size x n_ctx per step).
Writes outputs/bench_dp.json and .md.

Each layout runs in its own processes (``--worker``), so its thread count is set before NumPy loads.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from baby import device
from baby.bench.common import machine, save
from baby.bench.train import batches, time_ours
from baby.config import Config, ConfigError, parse_override

DEFAULT_CONFIGS = ["configs/cpu.json", "configs/babylm-gpt-5m.json"]


def vocabulary(cfg: Config) -> int:
    return cfg.n_vocab if cfg.c_tokenizer == "bpe" else 65


def worker(args: argparse.Namespace) -> int:
    """One layout: time train_step on this rank's shard of every batch; rank 0 writes the result."""
    cfg = Config.load(args.config[0], dict(parse_override(s) for s in args.set))
    comm = device.data_parallel(cfg)
    n_vocab = vocabulary(cfg)
    per = cfg.batch_size // comm.size
    data = [b[comm.rank * per:(comm.rank + 1) * per] for b in batches(cfg, n_vocab, args.steps + args.warmup)]
    speed = time_ours(cfg, n_vocab, data, args.warmup, comm if comm.size > 1 else None)
    if comm.rank == 0:
        Path(args.result).write_text(json.dumps({"ranks": comm.size, "threads": cfg.c_device_cpu_cores,
                                                 "tokens_per_second": speed}), encoding="utf-8")
    return 0


# name: (ranks, threads per rank, c_device_cpu_parallel); 0 stands for --cores
LAYOUTS = {"ranks": (0, 1, "auto"), "replicas": (1, 0, "batch"), "one model": (1, 0, "ops")}


def layout(args: argparse.Namespace, config: str, ranks: int, threads: int, parallel: str,
           folder: Path) -> dict[str, Any]:
    result = folder / f"{ranks}x{threads}{parallel}.json"
    command = [sys.executable, "-m", "baby", "bench", "dp", "--worker", "--config", config, "--result", str(result),
               "--steps", str(args.steps), "--warmup", str(args.warmup), *[part for s in args.set for part in ("--set", s)],
               "--set", f"c_device_cpu_cores={threads}", "--set", f"c_device_cpu_parallel={parallel}",
               "--set", "c_device_cpu_yield=0"]
    if ranks > 1:
        command = [args.launcher, "-n", str(ranks), *command]
    threads_env = {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(command, env={**os.environ, **threads_env}, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"bench dp: {ranks} rank(s) x {threads} thread(s) ({parallel}) on {config} failed: {tail}")
    return json.loads(result.read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m baby bench dp", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=40, help="timed steps per layout")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="alternate the layouts this many times; best kept")
    p.add_argument("--cores", type=int, default=2, help="cores to spend: CORES ranks x 1 thread, or 1 rank x CORES threads")
    p.add_argument("--launcher", default=shutil.which("mpiexec") or shutil.which("mpirun") or "mpiexec")
    p.add_argument("--out", default="outputs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.cores < 2 or args.repeats < 1:
        raise ConfigError("bench dp: --steps and --repeats must be >= 1, --warmup >= 0 and --cores >= 2")
    if args.worker:
        return worker(args)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.config:
            cfg = Config.load(config, dict(parse_override(s) for s in args.set))
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in LAYOUTS}
            for _ in range(args.repeats):  # alternate the layouts so all see the same machine; best kept
                for name, (ranks, threads, parallel) in LAYOUTS.items():
                    runs[name].append(layout(args, config, ranks or args.cores, threads or args.cores, parallel,
                                             Path(tmp)))
            best = {name: max(r, key=lambda x: x["tokens_per_second"]) for name, r in runs.items()}
            fastest = max(best, key=lambda name: best[name]["tokens_per_second"])
            results.append({"config": config, "shape": {k: cfg.to_dict()[k] for k in
                            ("n_layers", "n_heads", "n_emb", "n_ctx", "batch_size")}, **best, "fastest": fastest})
            rows.append(f"| {config} | " + " | ".join(f"{best[name]['tokens_per_second']:,.0f}" for name in LAYOUTS)
                        + f" | {fastest} |")
    m = machine()
    table = (f"Three layouts of {args.cores} cores, tokens/s, {args.steps} timed steps, best of {args.repeats} "
             f"alternating runs, {m['cpu']} ({m['date']}):\n\n"
             f"| config | {args.cores} ranks x 1 thread (MPI) | 1 rank, {args.cores} replicas (batch) "
             f"| 1 rank, one model, {args.cores} threads (ops) | fastest |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows))
    save("dp", {"machine": m, "steps": args.steps, "warmup": args.warmup, "cores": args.cores, "overrides": args.set,
                "results": results}, table, args.out)
    print(table)
    return 0


__all__ = ["main"]
