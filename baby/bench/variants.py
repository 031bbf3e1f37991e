"""python -m baby bench variants --kind attention|network --config X: the variants of one slot side by
side on the same text, the same steps and the same seed (so the same batches in the same order).

For each variant: parameters, validation loss after training, training tokens/s (training time only,
evaluation excluded), and greedy generation tokens/s with and without the KV cache / recurrent state,
plus whether both generations gave the same tokens. By default generation stops when the window is
full (n_ctx - 1 new tokens after the one-token prompt): past n_ctx the cached generator re-prefills the
last n_ctx tokens for every new token, so both sides would time the same full forwards.
Writes outputs/bench_variants_<kind>.json and .md (with the machine and the date).
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from baby import device
from baby.bench.common import machine, save
from baby.config import Config, ConfigError, parse_override
from baby.corpus import DEFAULT_INPUT, encode_documents, read_documents
from baby.data import split_stream
from baby.generate import empty_prompt, generate
from baby.nn import variants
from baby.tokenizers import train_tokenizer
from baby.train import fit

# The slots of SEEDS.md section 1, in its order; other registered names may be asked for by --variants.
ATTENTION = ("mha", "moh", "gqa", "swh", "gla", "rfa", "aft")
NETWORK = ("mlp", "moe", "lor", "swi", "gln", "ggl", "nft")
SLOTS = {"attention": ("mixer", "c_attention", ATTENTION), "network": ("network", "c_network", NETWORK)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m baby bench variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, choices=sorted(SLOTS), help="which slot to vary")
    p.add_argument("--config", required=True, help="settings JSON shared by every variant, e.g. configs/cpu.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per variant (0: the config's n_steps)")
    p.add_argument("--variants", default="", help="names joined by ',' (default: the seven of the slot that "
                                                     "are registered)")
    p.add_argument("--input", nargs="+", default=[DEFAULT_INPUT], help="training text")
    p.add_argument("--gen-tokens", type=int, default=0,
                   help="tokens generated per timing (0: fill the window, n_ctx - 1)")
    p.add_argument("--out", default="outputs", help="folder of the JSON and markdown results")
    return p.parse_args(argv)


def variant_names(kind: str, requested: str) -> list[str]:
    registry_kind, _, default = SLOTS[kind]
    known = variants.names(registry_kind)
    if not requested:
        return [n for n in default if n in known]
    names = [n for n in requested.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--variants: {', '.join(unknown)} not registered as {registry_kind}; "
                          f"allowed {', '.join(known)}")
    return names


def time_generation(model: Any, prompt: list[int], tokens: int, use_cache: bool,
                    repeats: int = 3) -> tuple[float, list[int]]:
    """Best tokens/s of a few identical greedy generations (short runs are noisy), and their tokens."""
    gens = [generate(model, prompt, tokens, temperature=0.0, use_cache=use_cache) for _ in range(repeats)]
    return max(g.tokens_per_second for g in gens), gens[0].tokens


def run_variant(cfg: Config, data: dict[str, Any], gen_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    # a short untimed run first, so one-time costs (allocations, mask tables) are not in the speed
    fit(cfg.replace(n_steps=2, n_eval_batches=1), data["train"], data["val"], data["n_vocab"], log=lambda _line: None)
    model, summary = fit(cfg, data["train"], data["val"], data["n_vocab"], log=lambda _line: None)
    cached, cached_ids = time_generation(model, data["prompt"], gen_tokens, True)
    plain, plain_ids = time_generation(model, data["prompt"], gen_tokens, False)
    return {"params": model.n_params(), "val_loss": summary["final_val_loss"],
            "train_loss": summary["final_train_loss"], "train_tokens_per_second": summary["tokens_per_second"],
            "train_seconds": summary["train_seconds"], "flops_per_token": model.flops_per_token(),
            "generate_tokens_per_second_cache": cached, "generate_tokens_per_second_no_cache": plain,
            "cache_speedup": cached / plain if plain else None, "same_tokens_with_and_without_cache":
            cached_ids == plain_ids, "seconds": time.perf_counter() - start}


def markdown(kind: str, cfg: Config, results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    m = info["machine"]
    head = (f"Variants of the {kind} slot: {cfg.n_layers} layers x {cfg.n_emb} wide, {cfg.n_heads} heads, "
            f"block {cfg.n_ctx}, batch {cfg.batch_size}, {info['steps']} steps of {info['tokens_per_step']} "
            f"tokens on {', '.join(info['inputs'])} ({cfg.c_tokenizer} tokens, seed {cfg.seed}); "
            f"generation: {info['gen_tokens']} greedy tokens.\n"
            f"Machine: {m['cpu']} ({m['cores']} cores), {m['device']}, {m['date']}.\n")
    rows = ["| variant | parameters | val loss | train tok/s | gen tok/s cached | gen tok/s uncached | "
            "cache speedup | same tokens |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['params']:,} | {r['val_loss']:.4f} | {r['train_tokens_per_second']:,.0f} | "
                    f"{r['generate_tokens_per_second_cache']:,.0f} | {r['generate_tokens_per_second_no_cache']:,.0f} | "
                    f"{r['cache_speedup'] or 0:.2f}x | {'yes' if r['same_tokens_with_and_without_cache'] else 'NO'} |")
    return head + "\n" + "\n".join(rows)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    _, key, _ = SLOTS[args.kind]
    extra = dict(parse_override(s) for s in args.set)
    if args.steps:
        extra["n_steps"] = args.steps
    base = Config.load(args.config, extra)
    names = variant_names(args.kind, args.variants)
    device.select(base)
    docs = read_documents(args.input)
    tokenizer = train_tokenizer(base.c_tokenizer, "\n".join(docs), n_vocab=base.n_vocab)
    tokens, _ = encode_documents(tokenizer, docs)
    train, val = split_stream(tokens, base.r_split, base.n_ctx)
    data = {"train": train, "val": val, "n_vocab": tokenizer.n_vocab, "prompt": empty_prompt(tokenizer)}
    gen_tokens = args.gen_tokens or max(1, base.n_ctx - len(data["prompt"]))
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        cfg = base.replace(**{key: name})
        r = results[name] = run_variant(cfg, data, gen_tokens)
        print(f"{name:>6}: {r['params']:>10,} params | val loss {r['val_loss']:.4f} | train "
              f"{r['train_tokens_per_second']:>9,.0f} tok/s | generate {r['generate_tokens_per_second_cache']:,.0f} "
              f"tok/s cached, {r['generate_tokens_per_second_no_cache']:,.0f} uncached ({r['seconds']:.0f} s)",
              flush=True)
    info = {"kind": args.kind, "config": args.config, "overrides": args.set,
            "inputs": [str(p) for p in args.input], "steps": base.n_steps or "n_epochs worth",
            "tokens_per_step": base.batch_size * base.n_accumulate * base.n_ctx, "gen_tokens": gen_tokens,
            "train_tokens": int(len(train)), "val_tokens": int(len(val)), "n_vocab": tokenizer.n_vocab,
            "machine": machine(), "settings": base.to_dict()}
    table = markdown(args.kind, base, results, info)
    path = save(f"variants_{args.kind}", {**info, "results": results}, table, args.out)
    print(table)
    print(f"wrote {path}")
    return 0


__all__ = ["main"]
