"""python -m baby bench mqar: which sequence mixers can recall? Zoology's MQAR grid on the CPU.

Each cell trains a fresh 2-layer model without a feed-forward network (``c_network ""``, as in Zoology's
Figure 2) on MQAR examples of length N with D key-value pairs, then reports argmax accuracy on held-out
examples. Accuracy near 1 means the mixer can look up "the value that followed this key"; chance is
about 1/D. Writes outputs/bench_mqar.json (every setting, steps, times, accuracies) and a markdown table.

Sizes are scaled down from Zoology's (V = 8192, 100k examples, up to 64 epochs, lr sweep) so that the
whole grid runs in under 30 minutes on 2 CPU cores: vocabulary 512, one learning rate, and each cell
trains until validation accuracy reaches 0.99, or for at most --steps steps or --budget seconds (the
cosine schedule follows whichever of the two is closer to its end). Fresh examples every step.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend
from baby.config import Config
from baby.evaluate.mqar import IGNORE, accuracy, multiquery_ar
from baby.nn import variants
from baby.nn.model import GPT
from baby.optim import AdamW, lr_at
from baby.train import train_step

CELLS = ((64, 4), (128, 8), (256, 16))
WIDTHS = (64, 128)
MIXERS = ("induction", "mha", "aft", "gla")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m baby bench mqar", description=__doc__.split("\n\n")[0])
    p.add_argument("--mixers", default=",".join(MIXERS),
                   help="mixers joined by ',', each a c_attention value such as conv+induction (missing ones are marked)")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="model widths d joined by ','")
    p.add_argument("--cells", default=",".join(f"{n}:{d}" for n, d in CELLS), help="N:D pairs joined by ','")
    p.add_argument("--vocab", type=int, default=512, help="MQAR vocabulary V (Zoology: 8192)")
    p.add_argument("--steps", type=int, default=2000, help="maximum optimizer steps per cell")
    p.add_argument("--tokens-per-batch", type=int, default=8192, help="batch size = this / N examples")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warmup, then cosine to lr/10)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--test", type=int, default=1000, help="held-out examples per cell")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validation checks (early stop)")
    p.add_argument("--stop-at", type=float, default=0.99, help="stop a cell once validation accuracy reaches this")
    p.add_argument("--budget", type=float, default=75.0,
                   help="wall-clock seconds of training per cell (the grid of 24 cells then fits in 30 minutes)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (1: small matrices gain little from more, and 1 is robust on a busy CPU)")
    p.add_argument("--random-non-queries", action="store_true",
                   help="fill the blanks with random tokens (Zoology's default; its Figure 2 runs without)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_mqar.json")
    return p.parse_args(argv)


def model_config(mixer: str, width: int, seq_len: int, seed: int) -> Config:
    """Zoology's Figure 2 model: 2 layers, no MLP, one attention head, learned positions."""
    return Config({"c_attention": mixer, "c_network": "", "n_layers": 2, "n_emb": width, "n_heads": 1,
                   "n_ctx": seq_len, "c_position": "learned", "r_dropout": 0.0, "seed": seed})


def evaluate(model: GPT, inputs: numpy.ndarray, labels: numpy.ndarray, batch: int) -> float:
    correct = total = 0
    model.eval()
    for start in range(0, len(inputs), batch):
        logits = model.forward(backend.asarray(inputs[start:start + batch]))
        c, t = accuracy(backend.to_host(logits), labels[start:start + batch])
        correct, total = correct + c, total + t
    model.train()
    return correct / max(total, 1)


def run_cell(mixer: str, width: int, seq_len: int, n_pairs: int, args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed
    data = dict(seq_len=seq_len, n_pairs=n_pairs, vocab=args.vocab, random_non_queries=args.random_non_queries)
    batch = max(1, args.tokens_per_batch // seq_len)
    test_x, test_y = multiquery_ar(args.test, seed=seed + 1, **data)
    val_x, val_y = multiquery_ar(256, seed=seed + 2, **data)
    model = GPT(model_config(mixer, width, seq_len, seed), n_vocab=args.vocab)
    opt = AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
    warmup = max(1, args.steps // 20)
    chunk = 50  # steps of training examples generated at a time (fresh examples every step)
    start, step, val_acc, stopped, curve = time.perf_counter(), 0, 0.0, "steps", []
    while step < args.steps:
        if step % chunk == 0:
            train_x, train_y = multiquery_ar(chunk * batch, seed=seed + 1000 + step, **data)
        rows = slice((step % chunk) * batch, (step % chunk + 1) * batch)
        ids, targets = backend.asarray(train_x[rows]), backend.asarray(train_y[rows])
        # The schedule runs on whichever limit is closer, steps or seconds, so that it decays fully either way.
        progress = max(step / args.steps, (time.perf_counter() - start) / args.budget)
        lr = lr_at(int(progress * args.steps), args.lr, args.lr / 10, warmup, args.steps)
        loss = train_step(model, opt, [(ids, targets, None)], lr, clip=1.0, ignore=IGNORE).loss
        step += 1
        out_of_time = time.perf_counter() - start > args.budget
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            val_acc = evaluate(model, val_x, val_y, batch)
            curve.append([step, round(float(loss), 4), round(val_acc, 4)])
            if val_acc >= args.stop_at:
                stopped = "early stop"
                break
            if out_of_time:
                stopped = "time budget"
                break
    train_s = time.perf_counter() - start
    test_acc = evaluate(model, test_x, test_y, batch)
    return {"mixer": mixer, "d": width, "N": seq_len, "D": n_pairs, "accuracy": round(test_acc, 4),
            "val_accuracy": round(val_acc, 4), "steps": step, "batch": batch, "stopped_by": stopped,
            "train_seconds": round(train_s, 1), "seconds": round(time.perf_counter() - start, 1),
            "params": model.n_params(), "curve (step, train loss, val acc)": curve}


def markdown(results: list[dict[str, Any]], mixers: list[str], missing: list[str], widths: list[int],
             cells: list[tuple[int, int]]) -> str:
    head = "| mixer | " + " | ".join(f"N={n}, D={d}, d={w}" for n, d in cells for w in widths) + " |"
    lines = [head, "|---" * (1 + len(cells) * len(widths)) + "|"]
    table = {(r["mixer"], r["N"], r["d"]): r for r in results}
    for mixer in mixers:
        if mixer in missing:
            lines.append(f"| {mixer} | " + " | ".join("not registered" for _ in cells for _ in widths) + " |")
            continue
        cols = []
        for n, _ in cells:
            for w in widths:
                r = table.get((mixer, n, w))
                cols.append("-" if r is None else f"{r['accuracy']:.3f}" + ("" if r["stopped_by"] != "time budget" else "*"))
        lines.append(f"| {mixer} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    backend.set_cpu_threads(args.threads)
    mixers = [m for m in args.mixers.split(",") if m]
    widths = [int(w) for w in args.widths.split(",")]
    cells = [tuple(int(v) for v in c.split(":")) for c in args.cells.split(",")]
    available = set(variants.names("mixer"))
    missing = [m for m in mixers if not set(m.split("+")) <= available]  # "conv+induction": each part registered
    for m in missing:
        print(f"mqar: mixer {m!r} is not registered; marked as missing")
    results, total = [], time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for n, d in cells:
        for w in widths:
            for mixer in mixers:
                if mixer in missing:
                    continue
                r = run_cell(mixer, w, n, d, args)
                results.append(r)
                print(f"mqar {mixer:>10} N={n:<4} D={d:<3} d={w:<4} acc {r['accuracy']:.3f} "
                      f"({r['steps']} steps, {r['stopped_by']}, {r['seconds']:.0f} s)", flush=True)
                report = {"bench": "mqar", "device": backend.device_name, "versions": backend.versions(),
                          "settings": {k: v for k, v in vars(args).items()}, "model": {
                              "n_layers": 2, "c_network": "", "n_heads (mha)": 1, "c_position": "learned",
                              "c_norm": "layer", "r_dropout": 0.0, "optimizer": "AdamW betas (0.9, 0.99), clip 1.0",
                              "schedule": "linear warmup 5% of steps, cosine to lr/10 over min(steps, budget seconds)"},
                          "generator": "Zoology multiquery_ar (power_a 0.01, keys [1,V/2), values [V/2,V))",
                          "missing": missing, "total_seconds": round(time.perf_counter() - total, 1),
                          "results": results}
                out.write_text(json.dumps(report, indent=1))  # rewritten after every cell: partial runs survive
    table = markdown(results, mixers, missing, widths, cells)
    out.with_suffix(".md").write_text(
        f"MQAR accuracy (V={args.vocab}, up to {args.steps} steps, {args.tokens_per_batch} tokens per batch; "
        f"* = stopped by the time budget). Total {time.perf_counter() - total:.0f} s on {backend.device_name}.\n\n"
        + table)
    print(table)
    return 0
