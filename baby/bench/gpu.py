"""GPU speed side by side: baby on CuPy against the same GPT in PyTorch eager on the same GPU.

    python -m baby bench gpu [--config configs/shakespeare-char.json] [--precisions fp32,tf32,fp16]
                             [--steps 50] [--train-iters 5000] [--dry-run]

For each precision both sides train the same model on the same batches (alternating sides, best of
``--repeats``): tokens/s, ms per iteration and model FLOP utilisation against the matmul peak of
that precision measured in the same run. Then both sides train ``--train-iters`` iterations on the
shakespeare characters and report the validation loss at that iteration and the time it took (the
nanoGPT bar: val loss <= 1.48 after 5000 iterations). fp16 is mixed precision on both sides (our
fp32 masters + loss scaling; torch.autocast + GradScaler). ``--dry-run`` runs a tiny shape on the
CPU (both sides) to check the script itself. Writes outputs/bench_gpu.json and .md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy

from baby import backend, plans
from baby.bench.common import machine, save
from baby.bench.train import batches, torch_gpt
from baby.config import Config, parse_override
from baby.corpus import prepare_corpus
from baby.device import select as select_device
from baby.nn.model import GPT
from baby.optim import AdamW, LossScale
from baby.runs import RunStore
from baby.train import train_step

DRY_RUN = {"c_device": "cpu", "n_ctx": 32, "n_emb": 32, "n_heads": 2, "n_layers": 1, "batch_size": 4,
           "n_eval_batches": 2, "r_dropout": 0.0}


def matmul_peak(dtype: Any, n: int = 4096, seconds: float = 1.0) -> float:
    """Best GFLOP/s of an n^3 matmul in ``dtype`` on the current device (TF32 as CuPy is set)."""
    xp = backend.xp
    a = xp.asarray(numpy.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    b, out = a.T.copy(), xp.empty_like(a)
    xp.matmul(a, b, out=out)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        watch = backend.Stopwatch()
        xp.matmul(a, b, out=out)
        best = min(best, watch.seconds())
    return 2 * n ** 3 / best / 1e9


def time_ours(cfg: Config, n_vocab: int, data: list[numpy.ndarray], warmup: int) -> float:
    model = GPT(cfg, n_vocab)
    opt = AdamW(model.parameters(), cfg.r_learn, (cfg.r_beta1, cfg.r_beta2), cfg.r_eps, cfg.r_decay)
    scaler = LossScale() if opt.mixed else None
    watch = None
    for i, batch in enumerate(data):
        if i == warmup:
            watch = backend.Stopwatch()
        w = backend.asarray(batch)
        train_step(model, opt, [(w[:, :-1], w[:, 1:], backend.rng(cfg.seed, 1, i))], cfg.r_learn, cfg.r_clip,
                   scaler=scaler)
    return (len(data) - warmup) * cfg.batch_size * cfg.n_ctx / watch.seconds()


def time_torch(cfg: Config, n_vocab: int, data: list[numpy.ndarray], warmup: int, precision: str,
               device: str) -> float | None:
    try:
        import torch  # noqa: PLC0415 - optional, benchmark only
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    model, opt, step = torch_gpt(cfg, n_vocab, device, fp16=precision == "fp16")
    tensors = [torch.from_numpy(b.astype(numpy.int64)).to(device) for b in data]
    start = 0.0
    for i, batch in enumerate(tensors):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        step(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return (len(data) - warmup) * cfg.batch_size * cfg.n_ctx / (time.perf_counter() - start)


def train_to(cfg: Config, iters: int, log: Any) -> dict[str, Any]:
    """Our side of the training comparison: a real run on the shakespeare characters."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:  # a throwaway run: only its report is wanted
        guid = plans.train(cfg.replace(n_steps=iters, n_eval_every=iters, n_sample_tokens=0), root=root, log=log)
        report = RunStore(root).read("report", guid)
    return {"val_loss": report["final_val_loss"], "train_seconds": report["train_seconds"],
            "wall_seconds": time.perf_counter() - start}


def train_torch_to(cfg: Config, iters: int, device: str, fp16: bool) -> dict[str, Any] | None:
    """PyTorch's side of the training comparison: the same text, windows, order, schedule and
    validation batches as ``plans.train`` uses."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    from baby.config import parse_warmup  # noqa: PLC0415
    from baby.data import Batches, eval_batches, split_stream  # noqa: PLC0415
    from baby.optim import lr_at  # noqa: PLC0415

    corpus = prepare_corpus(cfg)
    train, val = split_stream(corpus.tokens, cfg.r_split, cfg.n_ctx)
    windows = Batches(train, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle, cfg.c_window_offset)
    model, _, step = torch_gpt(cfg, corpus.tokenizer.n_vocab, device, fp16)
    warmup = parse_warmup(cfg.s_warmup, iters)
    start = time.perf_counter()
    for i in range(iters):
        x, y = windows.batch(i)
        batch = torch.from_numpy(numpy.concatenate([backend.to_host(x), backend.to_host(y)[:, -1:]], axis=1)
                                 .astype(numpy.int64)).to(device)
        step(batch, lr_at(i, cfg.r_learn, cfg.r_learn_min, warmup, iters))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    losses = []
    with torch.no_grad(), torch.autocast(device, dtype=torch.float16, enabled=fp16):
        for x, y in eval_batches(val, cfg.n_ctx, cfg.batch_size, cfg.n_eval_batches):
            logits = model(torch.from_numpy(backend.to_host(x).astype(numpy.int64)).to(device)).float()
            target = torch.from_numpy(backend.to_host(y).astype(numpy.int64)).to(device)
            losses.append(float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))))
    return {"val_loss": float(numpy.mean(losses)), "train_seconds": seconds}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m baby bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/shakespeare-char.json", help="model shape (default: nanoGPT's shakespeare-char)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--precisions", default="fp32,tf32,fp16", help="comma-separated: fp32, tf32, fp16 (default: all)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per side and precision (default: 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    p.add_argument("--repeats", type=int, default=2, help="alternate the sides this many times; best kept (default: 2)")
    p.add_argument("--train-iters", type=int, default=5000, help="iterations of the training comparison (0: skip)")
    p.add_argument("--vocab", type=int, default=65, help="vocabulary of the timed steps (65: shakespeare-char)")
    p.add_argument("--dry-run", action="store_true", help="a tiny shape on the CPU: checks the script, measures nothing")
    p.add_argument("--out", default="outputs", help="folder of bench_gpu.json/.md (default: outputs)")
    args = p.parse_args(argv)
    overrides = {**(DRY_RUN if args.dry_run else {}), **dict(parse_override(s) for s in args.set)}
    base = Config.load(args.config, overrides)
    device = "cpu" if args.dry_run else "cuda"
    rows, results = [], {}
    data = batches(base, args.vocab, args.steps + args.warmup)
    for precision in args.precisions.split(","):
        cfg = base.replace(d_type="fp16" if precision == "fp16" else "fp32", c_device_gpu_tensor=int(precision == "tf32"))
        select_device(cfg)
        peak = matmul_peak(backend.xp.float16 if precision == "fp16" else backend.xp.float32,
                           n=256 if args.dry_run else 4096, seconds=0.2 if args.dry_run else 1.0)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(time_ours(cfg, args.vocab, data, args.warmup))
            t = time_torch(cfg, args.vocab, data, args.warmup, precision, device)
            if t is not None:
                theirs.append(t)
        flops = GPT(cfg, args.vocab).flops_per_token()["training"]
        best, torch_best = max(ours), (max(theirs) if theirs else None)
        tokens_per_iter = cfg.batch_size * cfg.n_ctx
        results[precision] = {"peak_gflops": peak, "ours_tokens_per_second": best, "torch_tokens_per_second": torch_best,
                              "ours_ms_per_iter": 1e3 * tokens_per_iter / best, "ours_mfu": best * flops / 1e9 / peak,
                              "torch_mfu": torch_best * flops / 1e9 / peak if torch_best else None,
                              "ratio": best / torch_best if torch_best else None}
        rows.append(f"| {precision} | {best:,.0f} | {1e3 * tokens_per_iter / best:.1f} | {best * flops / 1e9 / peak:.0%} | "
                    + (f"{torch_best:,.0f} | {1e3 * tokens_per_iter / torch_best:.1f} | {torch_best * flops / 1e9 / peak:.0%} | "
                       f"**{best / torch_best:.2f}** |" if torch_best else "| | | |"))
        print(rows[-1], flush=True)
    training = None
    if args.train_iters:
        cfg = base.replace(d_type="fp16" if "fp16" in args.precisions else "fp32")
        select_device(cfg)
        training = {"iters": args.train_iters, "ours": train_to(cfg, args.train_iters, lambda _line: None),
                    "torch": train_torch_to(cfg, args.train_iters, device, cfg.d_type == "fp16")}
    m = machine()
    table = (f"GPU training speed, {base.n_layers} layers x {base.n_heads} heads x {base.n_emb} wide, block {base.n_ctx}, "
             f"batch {base.batch_size}, {m['device']} ({m['date']}){' DRY RUN on the CPU' if args.dry_run else ''}:\n\n"
             "| precision | baby tok/s | baby ms/iter | baby MFU | PyTorch tok/s | PyTorch ms/iter | PyTorch MFU | ratio |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    if training:
        o, t = training["ours"], training["torch"]
        table += (f"\n\nTraining {args.train_iters} iterations ({cfg.d_type}): baby validation loss {o['val_loss']:.4f} in "
                  f"{o['train_seconds']:.0f} s of training"
                  + (f"; PyTorch eager {t['val_loss']:.4f} in {t['train_seconds']:.0f} s" if t else ""))
    save("gpu", {"config": args.config, "overrides": args.set, "dry_run": args.dry_run, "machine": m,
                 "precisions": results, "training": training}, table, args.out)
    print(table)
    return 0
