"""inference: completions of a prompt by a trained run, each saved to its own file."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable

from baby.config import ConfigError
from baby.generate import TextStream, check_sampling, check_text, completion_record, empty_prompt, generate, sampling_ids
from baby.jsonio import FileFault
from baby.progress import Log, say
from baby.runs import FINETUNED, Run, RunError, RunStore


def inference(guid: str, prompt: str = "", max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
              top_p: float = 1.0, seed: int | None = None, use_cache: bool = True, root: str | Path = ".",
              finetuned: bool = False, checkpoint: str = "", log: Log = say, num_samples: int = 1,
              stream: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate ``num_samples`` completions (seeds seed, seed+1, ...), each saved to its own file.
    ``stream`` receives the text as it is generated (the CLI writes it to the terminal); without it
    the whole text is logged at the end. Returns the last record; with several samples, ``samples``
    holds them all."""
    store = RunStore(root)
    check_sampling(temperature, top_k, top_p, seed, max_tokens)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"--num-samples={num_samples!r}: must be an integer >= 1")
    check_text(prompt, "--prompt")
    run = Run(store, guid, FINETUNED if finetuned else "")
    model = run.model(checkpoint)
    ids = list(run.tokenizer.encode(prompt)) if prompt else empty_prompt(run.tokenizer)
    if run.tokenizer.unknown_count:
        log(f"notice: {run.tokenizer.unknown_count} prompt symbols are not in the vocabulary (<unk>)")
    seed = run.cfg.seed if seed is None else seed
    records, unsaved = [], []
    for sample in range(num_samples):
        if num_samples > 1:
            log(f"sample {sample + 1} of {num_samples} (seed {seed + sample})")
        shown = TextStream(run.tokenizer, stream) if stream is not None else None
        if stream is not None:
            stream(prompt)
        gen = generate(model, ids, max_tokens, temperature, top_k, top_p, seed + sample, use_cache,
                       **sampling_ids(run.tokenizer), on_token=shown)
        if shown is not None:
            shown(gen.tokens, final=True)
            stream("\n")
        for notice in gen.notices:
            log(f"notice: {notice}")
        record = completion_record(run.tokenizer, prompt, gen, max_tokens, {
            "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed + sample,
            "finetuned": finetuned, "checkpoint": checkpoint or None})
        if stream is None:
            log(prompt + record["completion"])
        records.append(record)
        try:
            path = save_completion(store, guid, record, finetuned)
        except (FileFault, OSError) as err:  # the text was printed; the failure is said at the end
            unsaved.append(str(err))
            record["path"] = None
            continue
        log(f"{len(gen.tokens)} tokens in {gen.seconds:.2f} s ({gen.tokens_per_second:,.1f} tokens/s, "
            f"cache {'on' if use_cache else 'off'}) -> {path}")
        record["path"] = str(path)
    if unsaved:  # printed but not kept: a script must be able to tell (exit status 2 from the CLI)
        raise RunError(f"the completion{'s' if len(unsaved) > 1 else ''} above {'were' if len(unsaved) > 1 else 'was'} "
                       f"printed but not saved: {unsaved[0]}")
    if num_samples > 1:
        return {**records[-1], "samples": records}
    return records[-1]


def save_completion(store: RunStore, guid: str, record: dict[str, Any], finetuned: bool) -> Path:
    """outputs/completion_<guid>[_finetuned]_<stamp>.json, created exclusively: inferences started in
    the same second each keep their own file (the stamp moves on by a second per collision)."""
    stamp = _dt.datetime.now()
    base = FINETUNED if finetuned else ""
    for _ in range(10_000):
        suffix = f"{base}_{stamp.strftime('%Y%m%d%H%M%S')}"
        if store.create("completion", guid, record, suffix):
            return store.path("completion", guid, suffix)
        stamp += _dt.timedelta(seconds=1)
    raise RunError(f"no free completion file name for run {guid}")
