"""The CPU speed suite of ``python -m baby bench train`` (run without --config): baby against PyTorch
eager on the shapes people run, side by side in one process, alternating sides, same batches and
threads, at 1 and 2 threads:

- training tokens/s and share of the sgemm peak (measured in the same run, per thread count) for
  nanoGPT's CPU shape, the BabyLM 5M presets and the conv + induction 4M preset;
- generation tokens/s with the KV cache (200 new tokens after a 32-token prompt, batch 1, greedy),
  against the same weights in ``transformers`` with its own cache;
- BLiMP scoring pairs/s on the 5M models (BOS + sentence, summed log-probs, batches of 64);
- a row beside a busy process: one core kept busy by another process, 2 threads asked.

PyTorch's side: for GPT the nanoGPT-style module of ``bench.train``, for LLaMA ``transformers``'
LlamaForCausalLM (no hand-written PyTorch LLaMA here); conv + induction has no PyTorch version.
Writes outputs/bench_cpu.json and .md.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy

from baby import backend, device
from baby.bench.common import machine, machine_line, save, sgemm_peak
from baby.bench.train import batches, parse_args, run_config, time_ours, time_torch
from baby.config import Config
from baby.nn.model import GPT

TRAIN_ROWS = (("nanoGPT CPU", "configs/cpu.json", 65, 40), ("BabyLM GPT 5M", "configs/babylm-gpt-5m.json", 8000, 6),
              ("BabyLM LLaMA 5M", "configs/babylm-llama-5m.json", 8000, 6),
              ("conv + induction 4M", "configs/conv-induction-4m.json", 8000, 2))
TWIN_ROWS = TRAIN_ROWS[1:3]  # models transformers has a class for: generation and scoring
PROMPT, NEW_TOKENS = 32, 200


def load(path: str, threads: int, **changes: Any) -> Config:
    cfg = Config.load(path, {"c_device_cpu_cores": threads, "c_device_cpu_yield": 0, "r_dropout": 0.0, **changes})
    device.select(cfg)
    return cfg


def hf_twin(model: GPT) -> Any:
    """The same weights in the transformers class of the model (GPT2LMHeadModel, LlamaForCausalLM)."""
    import torch  # noqa: PLC0415 - optional, benchmark only
    import transformers  # noqa: PLC0415

    from baby.hf.layout import hf_config, to_hf_tensors  # noqa: PLC0415

    settings = hf_config(model.cfg, model.n_vocab)
    settings.pop("baby")
    config = transformers.AutoConfig.for_model(**settings)
    twin = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    ours = {name: backend.to_host(p.data).astype(numpy.float32) for name, p in model.named_parameters()}
    state = {k: torch.from_numpy(numpy.ascontiguousarray(v)) for k, v in to_hf_tensors(model.cfg, ours).items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(("lm_head.weight", "attn.bias", "attn.masked_bias")) for k in missing):
        raise RuntimeError(f"transformers twin: missing {missing}, unexpected {unexpected}")
    twin.tie_weights()
    return twin.eval()


def time_hf_training(cfg: Config, n_vocab: int, data: list[numpy.ndarray], warmup: int, threads: int) -> float:
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    twin = hf_twin(GPT(cfg, n_vocab)).train()
    opt = torch.optim.AdamW(twin.parameters(), lr=cfg.r_learn, betas=(cfg.r_beta1, cfg.r_beta2), weight_decay=cfg.r_decay)
    start = 0.0
    for i, batch in enumerate(torch.from_numpy(b.astype(numpy.int64)) for b in data):
        if i == warmup:
            start = time.perf_counter()
        logits = twin(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_vocab), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), cfg.r_clip)
        opt.step()
    return (len(data) - warmup) * cfg.batch_size * cfg.n_ctx / (time.perf_counter() - start)


def train_row(name: str, path: str, n_vocab: int, steps: int, threads: int, repeats: int) -> dict[str, Any]:
    cfg = load(path, threads)
    data = batches(cfg, n_vocab, steps + 1)
    peak = sgemm_peak()
    flops = GPT(cfg, n_vocab).flops_per_token()["training"]
    ours, theirs, one_model = [], [], []
    for _ in range(repeats):
        load(path, threads)
        ours.append(time_ours(cfg, n_vocab, data, 1))
        if threads > 1:  # the layout before replicas, side by side: one model, threads inside each operation
            one_model.append(time_ours(cfg.replace(c_device_cpu_parallel="ops"), n_vocab, data, 1))
        if cfg.c_attention == "mha" and cfg.c_network == "mlp":
            theirs.append(time_torch(cfg, n_vocab, data, 1, threads))
        elif cfg.c_network == "swi" and cfg.c_position == "rope":
            theirs.append(time_hf_training(cfg, n_vocab, data, 1, threads))
    best = max(ours)
    torch_best = max((t for t in theirs if t), default=None)
    return {"row": name, "config": path, "threads": threads, "params": GPT(cfg, n_vocab).n_params(),
            "sgemm_peak_gflops": peak, "ours": best, "ours_all": ours, "torch": torch_best, "torch_all": theirs,
            "ours_one_model": max(one_model, default=None), "ours_one_model_all": one_model,
            "ours_peak_share": best * flops / 1e9 / peak,
            "torch_peak_share": None if torch_best is None else torch_best * flops / 1e9 / peak,
            "ratio": None if torch_best is None else best / torch_best}


def generation_row(name: str, path: str, threads: int, repeats: int) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from baby.generate import generate  # noqa: PLC0415

    torch.set_num_threads(threads)
    cfg = load(path, threads, n_ctx=256)  # 32 + 200 positions fit: no re-prefill on either side
    model = GPT(cfg, 8000)
    twin = hf_twin(model)
    prompt = numpy.random.default_rng(0).integers(4, 8000, PROMPT)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(generate(model, prompt, NEW_TOKENS, temperature=0.0).tokens_per_second)
        with torch.inference_mode():
            ids = torch.from_numpy(prompt[None].astype(numpy.int64))
            start = time.perf_counter()
            out = twin.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)
            theirs.append((out.shape[1] - PROMPT) / (time.perf_counter() - start))
    return {"row": name, "config": path, "threads": threads, "ours": max(ours), "torch": max(theirs),
            "ours_all": ours, "torch_all": theirs, "ratio": max(ours) / max(theirs)}


def blimp_sentences(limit: int) -> list[tuple[str, str]] | None:
    from baby.evaluate.blimp import load_blimp  # noqa: PLC0415
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "blimp_filtered_babylm"
    if not folder.is_dir():
        return None
    return [(p.good, p.bad) for p in load_blimp(folder, limit)]


def scoring_row(name: str, path: str, threads: int, repeats: int, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from baby.evaluate.scoring import encode_sentences, sequence_logprobs  # noqa: PLC0415
    from baby.tokenizers import train_tokenizer  # noqa: PLC0415

    torch.set_num_threads(threads)
    cfg = load(path, threads)
    sentences = [s for pair in pairs for s in pair]
    tokenizer = train_tokenizer("bpe", "\n".join(sentences), n_vocab=2000)
    sequences, _ = encode_sentences(tokenizer, sentences)
    model = GPT(cfg, 8000)
    twin = hf_twin(model)
    ours, theirs, agree = [], [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        mine = sequence_logprobs(model, sequences, 64, pad_id=tokenizer.pad_id)
        ours.append(len(pairs) / (time.perf_counter() - start))
        start = time.perf_counter()
        reference = torch_logprobs(twin, sequences)
        theirs.append(len(pairs) / (time.perf_counter() - start))
        agree = float(numpy.max(numpy.abs(mine - reference)))
    return {"row": name, "config": path, "threads": threads, "pairs": len(pairs), "ours": max(ours),
            "torch": max(theirs), "ours_all": ours, "torch_all": theirs, "ratio": max(ours) / max(theirs),
            "max_logprob_difference": agree}


def torch_logprobs(twin: Any, sequences: list[numpy.ndarray], batch_size: int = 64) -> numpy.ndarray:
    """The same scores in PyTorch: right-padded batches, log-softmax, the targets' sum."""
    import torch  # noqa: PLC0415

    out = numpy.empty(len(sequences))
    with torch.inference_mode():
        for lo in range(0, len(sequences), batch_size):
            chunk = sequences[lo:lo + batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.int64)
            mask = torch.zeros((len(chunk), width), dtype=torch.int64)
            for i, s in enumerate(chunk):
                ids[i, :len(s)] = torch.from_numpy(s)
                mask[i, :len(s)] = 1
            logp = torch.log_softmax(twin(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            picked = logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            out[lo:lo + len(chunk)] = picked.sum(dim=1).double().numpy()
    return out


def busy_row(path: str, n_vocab: int, steps: int) -> dict[str, Any]:
    """Training speed while another process keeps one core busy: 1 thread, 2 threads forced, and
    the default (2 asked, c_device_cpu_yield on)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        out: dict[str, Any] = {"row": "CPU preset beside a busy process", "config": path}
        for label, threads in (("1 thread", 1), ("2 threads", 2)):
            cfg = load(path, threads)
            out[label] = time_ours(cfg, n_vocab, batches(cfg, n_vocab, steps + 1), 1)
        cfg = Config.load(path, {"c_device_cpu_cores": 2})
        threads, notice = device.cpu_threads(cfg)
        cfg = load(path, threads)
        out["default"] = time_ours(cfg, n_vocab, batches(cfg, n_vocab, steps + 1), 1)
        out["default_threads"], out["notice"] = threads, notice
        return out
    finally:
        spinner.kill()
        spinner.wait()


def run_suite(out_dir: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    scale = 0.25 if quick else 1.0
    result: dict[str, Any] = {"machine": machine(), "train": [], "generation": [], "scoring": []}
    for threads in (1, 2):
        for name, path, n_vocab, steps in TRAIN_ROWS:
            result["train"].append(train_row(name, path, n_vocab, max(2, math.ceil(steps * scale)), threads, repeats))
            print(_train_line(result["train"][-1]), flush=True)
    try:
        import transformers  # noqa: F401, PLC0415
        have_twin = True
    except ImportError:
        have_twin = False
    pairs = blimp_sentences(20 if quick else 100)
    for threads in (1, 2):
        for name, path, _, _ in TWIN_ROWS if have_twin else ():
            result["generation"].append(generation_row(name, path, threads, repeats))
            print(_ratio_line("generation", result["generation"][-1], "tokens/s"), flush=True)
            if pairs:
                result["scoring"].append(scoring_row(name, path, threads, repeats, pairs))
                print(_ratio_line("BLiMP scoring", result["scoring"][-1], "pairs/s"), flush=True)
    result["busy"] = busy_row(TRAIN_ROWS[0][1], TRAIN_ROWS[0][2], 10 if quick else 40)
    table = markdown(result)
    save("cpu", result, table, out_dir)
    print(table)
    return result


def _train_line(row: dict[str, Any]) -> str:
    theirs = f"{row['torch']:,.0f}" if row["torch"] else "n/a"
    ratio = f"{row['ratio']:.2f}" if row["ratio"] else "n/a"
    return f"train {row['row']}, {row['threads']} thread(s): baby {row['ours']:,.0f} tokens/s, PyTorch {theirs}, ratio {ratio}"


def _ratio_line(what: str, row: dict[str, Any], unit: str) -> str:
    return (f"{what} {row['row']}, {row['threads']} thread(s): baby {row['ours']:,.1f} {unit}, "
            f"PyTorch {row['torch']:,.1f}, ratio {row['ratio']:.2f}")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"CPU speed against PyTorch eager, {machine_line(result['machine'])}; best of alternating "
             "repeats, same batches and threads on both sides:", "",
             "| training | threads | baby tokens/s | PyTorch tokens/s | ratio | baby / PyTorch of sgemm peak "
             "| baby, one model (c_device_cpu_parallel=ops) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["train"]:
        theirs = f"{r['torch']:,.0f}" if r["torch"] else "no PyTorch version"
        ratio = f"**{r['ratio']:.2f}**" if r["ratio"] else "-"
        shares = f"{r['ours_peak_share']:.0%} / " + (f"{r['torch_peak_share']:.0%}" if r["torch"] else "-")
        one = r.get("ours_one_model")
        one_model = f"{one:,.0f} (replicas {r['ours'] / one:.2f}x)" if one else "-"
        lines.append(f"| {r['row']} | {r['threads']} | {r['ours']:,.0f} | {theirs} | {ratio} | {shares} | {one_model} |")
    for key, title, unit in (("generation", f"generation ({NEW_TOKENS} new tokens, KV cache, batch 1)", "tokens/s"),
                             ("scoring", "BLiMP scoring", "pairs/s")):
        if result[key]:
            lines += ["", f"| {title} | threads | baby {unit} | PyTorch {unit} | ratio |", "|---|---|---|---|---|"]
            lines += [f"| {r['row']} | {r['threads']} | {r['ours']:,.1f} | {r['torch']:,.1f} | **{r['ratio']:.2f}** |"
                      for r in result[key]]
    b = result["busy"]
    lines += ["", f"Beside a process that keeps one core busy ({b['config']}): 1 thread {b['1 thread']:,.0f} tokens/s, "
              f"2 threads {b['2 threads']:,.0f}, the default (2 asked, c_device_cpu_yield=1: {b['default_threads']} used) "
              f"{b['default']:,.0f}."]
    return "\n".join(lines)


__all__ = ["hf_twin", "main", "run_suite", "torch_logprobs"]


def main(argv: list[str]) -> int:
    """``python -m baby bench train``: the CPU suite, or with ``--config`` one model (``bench.train``)."""
    args = parse_args(argv)
    if args.config:
        return run_config(args)
    run_suite(args.out, 1 if args.quick else max(1, args.repeats - 1), args.quick)
    return 0
