"""python -m baby bench scaling: how one mixer layer's cost per token grows with sequence length T.

For T = 256, 1k, 4k, 16k with the tokens per batch held constant (B = tokens / T), time one forward +
backward of ONE mixer module (no model around it) and divide by B·T. A mixer that is linear in T keeps
a flat time per token (slope ~0 on a log-log plot); quadratic attention's grows about linearly with T
(slope ~1) once the T x T scores dominate. Writes outputs/bench_scaling.json and a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend
from baby.config import Config
from baby.nn import variants
from baby.nn.context import Context

MIXERS = ("induction", "conv", "mha", "aft")
LENGTHS = (256, 1024, 4096, 16384)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m baby bench scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--mixers", default=",".join(MIXERS), help="mixer names joined by ',' (missing ones are skipped)")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="sequence lengths T joined by ','")
    p.add_argument("--tokens", type=int, default=16384, help="tokens per batch (B = tokens / T)")
    p.add_argument("--width", type=int, default=384, help="n_emb")
    p.add_argument("--heads", type=int, default=4, help="n_heads (and induction heads)")
    p.add_argument("--vocab", type=int, default=8000, help="token ids are uniform in [0, vocab)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (the minimum is kept)")
    p.add_argument("--max-score-gib", type=float, default=8.0,
                   help="skip quadratic attention where its score arrays would exceed this many GiB")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads on the CPU (1: robust timings on a shared CPU)")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--out", default="outputs/bench_scaling.json")
    return p.parse_args(argv)


def score_gib(mixer: str, batch: int, heads: int, length: int) -> float:
    """What the mixer declares it keeps per token (``score_floats``: H*T for quadratic attention),
    three times over (forward scores, probabilities, the backward's score gradient), in float32 GiB."""
    floats = variants.lookup("mixer", mixer).cls.score_floats(Config({"n_heads": heads, "n_emb": 8 * heads}), length)
    return 3 * batch * length * floats * 4 / 2**30


def time_layer(mixer: str, length: int, args: argparse.Namespace) -> float:
    """Best-of-n seconds for one forward + backward of a fresh layer on B = tokens / T sequences."""
    batch = max(1, args.tokens // length)
    cfg = Config({"c_attention": mixer, "n_emb": args.width, "n_heads": args.heads, "n_induction_heads": args.heads,
                  "n_ctx": length, "n_layers": 1, "c_bias": False, "c_position": "learned"})
    rng = numpy.random.default_rng(0)
    module = variants.lookup("mixer", mixer).cls(cfg, rng)
    x = backend.asarray(rng.standard_normal((batch, length, args.width)), backend.dtype)
    dy = backend.asarray(rng.standard_normal((batch, length, args.width)), backend.dtype)
    ids = backend.asarray(rng.integers(0, args.vocab, (batch, length)))
    positions = backend.xp.broadcast_to(backend.xp.arange(length)[None, :], (batch, length))
    best = math.inf
    for i in range(args.repeats + 1):
        backend.sync()
        start = time.perf_counter()
        module.forward(x, Context(ids=ids, positions=positions))  # a new Context: the index is rebuilt
        module.backward(dy)
        backend.sync()
        if i:  # the first run warms caches and allocators
            best = min(best, time.perf_counter() - start)
    return best


def slope(lengths: list[int], per_token: list[float]) -> float:
    """Least-squares slope of log(time per token) against log(T)."""
    if len(lengths) < 2:
        return float("nan")
    return float(numpy.polyfit(numpy.log(lengths), numpy.log(per_token), 1)[0])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    backend.use(args.device, cpu_cores=args.threads or None)
    mixers = [m for m in args.mixers.split(",") if m]
    lengths = [int(t) for t in args.lengths.split(",")]
    available = set(variants.names("mixer"))
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for mixer in mixers:
        if mixer not in available:
            skipped.append(f"{mixer}: not registered")
            print(f"scaling: {skipped[-1]}")
            continue
        row: dict[str, Any] = {"mixer": mixer, "us_per_token": {}}
        for length in lengths:
            batch = max(1, args.tokens // length)
            if score_gib(mixer, batch, args.heads, length) > args.max_score_gib:
                skipped.append(f"{mixer} at T={length}: ~{score_gib(mixer, batch, args.heads, length):.0f} GiB of "
                               f"attention scores (> {args.max_score_gib:g})")
                print(f"scaling: skip {skipped[-1]}")
                continue
            seconds = time_layer(mixer, length, args)
            row["us_per_token"][length] = round(seconds / (batch * length) * 1e6, 3)
            print(f"scaling {mixer:>10} T={length:<6} B={batch:<4} {row['us_per_token'][length]:9.2f} us/token",
                  flush=True)
        measured = sorted(row["us_per_token"])
        row["slope"] = round(slope(measured, [row["us_per_token"][t] for t in measured]), 3)
        if len(measured) >= 2:
            row["last_over_first"] = round(row["us_per_token"][measured[-1]] / row["us_per_token"][measured[0]], 3)
        rows.append(row)
    report = {"bench": "scaling", "device": backend.device_name, "versions": backend.versions(),
              "settings": vars(args), "what": "one mixer layer, forward + backward, seconds / (B*T), best of repeats",
              "skipped": skipped, "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    head = "| mixer | " + " | ".join(f"T={t}" for t in lengths) + " | slope | last/first |"
    lines = [head, "|---" * (len(lengths) + 3) + "|"]
    for row in rows:
        cells = [f"{row['us_per_token'][t]:.1f}" if t in row["us_per_token"] else "skipped" for t in lengths]
        lines.append(f"| {row['mixer']} | " + " | ".join(cells) + f" | {row['slope']:.2f} | "
                     f"{row.get('last_over_first', float('nan')):.2f} |")
    table = "\n".join(lines) + "\n"
    notes = "".join(f"- skipped {s}\n" for s in skipped)
    out.with_suffix(".md").write_text(
        f"Time per token (µs) of one layer, forward + backward, {args.tokens} tokens per batch, n_emb {args.width}, "
        f"{args.heads} heads, on {backend.device_name}. Slope: log-log fit of time per token against T.\n\n"
        + table + ("\n" + notes if notes else ""))
    print(table + notes)
    return 0
