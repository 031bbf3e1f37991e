"""python -m baby bench train --config X: training speed of our NumPy model against the sgemm peak
measured in the same run and, when PyTorch is importable, against the same model in PyTorch eager
with the same number of threads. Also times saving and loading the model file.

Both sides train on the same random token batches for the same number of timed steps after a
warm-up; tokens/s = steps x batch x n_ctx / seconds. Writes outputs/bench_train.json and .md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend, device, formats
from baby.bench.common import machine, machine_line, save, sgemm_peak
from baby.config import Config
from baby.nn.model import GPT
from baby.optim import AdamW
from baby.replicas import for_training
from baby.runs import read_json, write_json
from baby.train import train_step


def batches(cfg: Config, n_vocab: int, count: int) -> list[numpy.ndarray]:
    rng = numpy.random.default_rng(0)
    return [rng.integers(0, n_vocab, (cfg.batch_size, cfg.n_ctx + 1)).astype(numpy.int32) for _ in range(count)]


def time_ours(cfg: Config, n_vocab: int, data: list[numpy.ndarray], warmup: int, comm: Any = None) -> float:
    """Tokens/s of the global batch (cfg.batch_size rows); with ``comm`` the data are this rank's shards.
    The step uses the thread layout training would (c_device_cpu_parallel: replicas or not)."""
    model = GPT(cfg, n_vocab)
    opt = AdamW(model.parameters(), cfg.r_learn, (cfg.r_beta1, cfg.r_beta2), cfg.r_eps, cfg.r_decay)
    replicas = for_training(model, opt, cfg, data[0].shape[0])
    start = 0.0
    for i, batch in enumerate(data):
        if i == warmup:
            backend.sync()
            if comm is not None:
                comm.barrier()  # every rank starts the clock together
            start = time.perf_counter()
        w = backend.asarray(batch)
        train_step(model, opt, [(w[:, :-1], w[:, 1:], backend.rng(cfg.seed, 1, i))], cfg.r_learn, cfg.r_clip, comm=comm,
                   replicas=replicas)
    backend.sync()
    return (len(data) - warmup) * cfg.batch_size * cfg.n_ctx / (time.perf_counter() - start)


def torch_gpt(cfg: Config, n_vocab: int, device: str = "cpu", fp16: bool = False) -> tuple[Any, Any, Any]:
    """The same GPT (mha + mlp, LayerNorm, GELU-tanh, tied head, dropout on the embeddings and every
    residual branch) in PyTorch eager: (model, optimizer, step(batch, lr=None) -> loss tensor). With
    ``fp16``: torch.autocast and a GradScaler, PyTorch's own mixed precision."""
    import torch  # noqa: PLC0415 - optional, benchmark only
    from torch import nn  # noqa: PLC0415

    torch.manual_seed(cfg.seed)
    c, h, p = cfg.n_emb, cfg.n_heads, cfg.r_dropout

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * cfg.head_width, bias=cfg.c_bias), nn.Linear(cfg.head_width, c, bias=cfg.c_bias)
            self.up, self.down = nn.Linear(c, cfg.hidden, bias=cfg.c_bias), nn.Linear(cfg.hidden, c, bias=cfg.c_bias)
            self.drop = nn.Dropout(p)

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(cfg.head_width, dim=2)
            q, k, v = (z.view(b, t, h, -1).transpose(1, 2) for z in (q, k, v))
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, cfg.head_width)))
            return x + self.drop(self.down(nn.functional.gelu(self.up(self.ln2(x)), approximate="tanh")))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(n_vocab, c), nn.Embedding(cfg.n_ctx, c)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.ln, self.drop = nn.LayerNorm(c), nn.Dropout(p)

        def forward(self, ids: Any) -> Any:
            x = self.drop(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))
            for block in self.blocks:
                x = block(x)
            return self.ln(x) @ self.tok.weight.T

    model = Model()
    for name, w in model.named_parameters():  # GPT-2's init, as baby's (torch's N(0, 1) embeddings would not train alike)
        if name.endswith("bias"):
            nn.init.zeros_(w)
        elif w.ndim == 2:
            std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
            nn.init.normal_(w, 0.0, std)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.r_learn, betas=(cfg.r_beta1, cfg.r_beta2),
                            weight_decay=cfg.r_decay)
    scaler = torch.amp.GradScaler(device) if fp16 else None

    def step(batch: Any, lr: float | None = None) -> Any:
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        with torch.autocast(device, dtype=torch.float16, enabled=fp16):
            logits = model(batch[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, n_vocab).float(), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.r_clip)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.r_clip)
            scaler.step(opt)
            scaler.update()
        return loss

    return model, opt, step


def time_torch(cfg: Config, n_vocab: int, data: list[numpy.ndarray], warmup: int, threads: int) -> float | None:
    """Tokens/s of the same GPT in PyTorch eager on the CPU, or None (no torch, or a shape it lacks)."""
    try:
        import torch  # noqa: PLC0415 - optional, benchmark only
    except ImportError:
        return None
    if cfg.c_attention != "mha" or cfg.c_network != "mlp" or cfg.c_norm != "layer" or cfg.c_position != "learned":
        return None
    torch.set_num_threads(threads)
    _, _, step = torch_gpt(cfg.replace(r_dropout=0.0), n_vocab)
    tensors = [torch.from_numpy(b.astype(numpy.int64)) for b in data]
    start = 0.0
    for i, batch in enumerate(tensors):
        if i == warmup:
            start = time.perf_counter()
        step(batch)
    return (len(data) - warmup) * cfg.batch_size * cfg.n_ctx / (time.perf_counter() - start)


def time_save_load(cfg: Config, n_vocab: int, folder: Path) -> dict[str, float]:
    model = GPT(cfg, n_vocab)
    path = folder / "bench_model.json"
    t0 = time.perf_counter()
    write_json(path, formats.model_to_dict(model), indent=None)
    saved = time.perf_counter() - t0
    t0 = time.perf_counter()
    formats.load_weights(GPT(cfg, n_vocab), read_json(path), str(path))
    loaded = time.perf_counter() - t0
    size = path.stat().st_size
    path.unlink()
    return {"params": model.n_params(), "file_bytes": size, "save_seconds": saved, "load_seconds": loaded}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of ``python -m baby bench train`` (the suite in ``bench.suite`` reads them too)."""
    p = argparse.ArgumentParser(prog="python -m baby bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="one model (default: the CPU suite of baby.bench.suite, written to bench_cpu.*)")
    p.add_argument("--quick", action="store_true", help="the suite with fewer steps and pairs (a smoke test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=60, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--vocab", type=int, default=65, help="vocabulary size (65: shakespeare-char)")
    p.add_argument("--repeats", type=int, default=3, help="alternate the two sides this many times; best is kept")
    p.add_argument("--io-config", default="configs/shakespeare-char.json",
                   help="model whose save/load time is measured (default ~10.7M parameters)")
    p.add_argument("--out", default="outputs")
    return p.parse_args(argv)


def run_config(args: argparse.Namespace) -> int:
    """One model (``--config``) against its PyTorch twin, written to bench_train.*."""
    from baby.config import parse_override  # noqa: PLC0415
    cfg = Config.load(args.config, dict(parse_override(s) for s in args.set))
    device.select(cfg)
    threads = cfg.c_device_cpu_cores or os.cpu_count() or 1
    data = batches(cfg, args.vocab, args.steps + args.warmup)
    peak = sgemm_peak()
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate so both sides see the same machine conditions
        ours.append(time_ours(cfg, args.vocab, data, args.warmup))
        t = time_torch(cfg, args.vocab, data, args.warmup, threads)
        if t is not None:
            theirs.append(t)
    flops = GPT(cfg, args.vocab).flops_per_token()["training"]
    best, torch_best = max(ours), (max(theirs) if theirs else None)
    io_cfg = Config.load(args.io_config, {"c_device": cfg.c_device, "c_device_cpu_cores": cfg.c_device_cpu_cores})
    device.select(io_cfg.replace(d_type="fp32"))
    io = time_save_load(io_cfg, args.vocab, Path(args.out))
    result = {
        "config": args.config, "overrides": args.set, "threads": threads, "machine": machine(),
        "shape": {k: cfg.to_dict()[k] for k in ("n_layers", "n_heads", "n_emb", "n_ctx", "batch_size")},
        "params": GPT(cfg, args.vocab).n_params(), "training_flops_per_token": flops,
        "sgemm_peak_gflops": peak,
        "ours": {"tokens_per_second": best, "all": ours, "gflops": best * flops / 1e9,
                 "fraction_of_sgemm_peak": best * flops / 1e9 / peak},
        "torch": None if torch_best is None else {
            "tokens_per_second": torch_best, "all": theirs, "gflops": torch_best * flops / 1e9,
            "fraction_of_sgemm_peak": torch_best * flops / 1e9 / peak},
        "ratio_ours_to_torch": None if torch_best is None else best / torch_best,
        "save_load": io,
    }
    rows = [f"| side | tokens/s | GFLOP/s | of sgemm peak ({peak:.0f} GFLOP/s) |", "|---|---|---|---|",
            f"| baby (NumPy) | {best:,.0f} | {best * flops / 1e9:.1f} | {best * flops / 1e9 / peak:.0%} |"]
    if torch_best:
        rows.append(f"| PyTorch {_torch_version()} eager | {torch_best:,.0f} | {torch_best * flops / 1e9:.1f} | "
                    f"{torch_best * flops / 1e9 / peak:.0%} |")
        rows.append(f"\nratio baby / PyTorch: **{best / torch_best:.2f}**")
    m = result["machine"]
    table = (f"Training speed, {cfg.n_layers} layers x {cfg.n_heads} heads x {cfg.n_emb} wide, block {cfg.n_ctx}, "
             f"batch {cfg.batch_size}, {threads} threads, {machine_line(m)}:\n\n" + "\n".join(rows) +
             f"\n\nModel file of {io['params']:,} parameters ({io['file_bytes'] / 2**20:.1f} MiB): "
             f"save {io['save_seconds']:.2f} s, load {io['load_seconds']:.2f} s")
    save("train", result, table, args.out)
    print(table)
    print(json.dumps({k: result[k] for k in ("ratio_ours_to_torch", "sgemm_peak_gflops")}))
    return 0


def _torch_version() -> str:
    try:
        import torch  # noqa: PLC0415
        return torch.__version__.split("+")[0]
    except ImportError:
        return ""


__all__ = ["parse_args", "run_config", "time_ours", "time_torch", "torch_gpt"]
