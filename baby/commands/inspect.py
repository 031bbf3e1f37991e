"""inspect: the inside views of a run on a prompt (attention, induction, conv, next tokens), as JSON and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from baby import charts
from baby.config import ConfigError
from baby.generate import check_sampling, check_text, empty_prompt, sampling_ids
from baby.inside import sampling_view, save_views, views
from baby.runs import FINETUNED, Run, RunStore


def inspect(guid: str, prompt: str, out: str | Path, root: str | Path = ".", top_k: int = 5,
                sample_tokens: int = 0, temperature: float = 0.8, sample_top_k: int = 0, top_p: float = 1.0,
                seed: int | None = None, finetuned: bool = False, checkpoint: str = "",
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """The views of a saved run on ``prompt`` (cut to its last n_ctx tokens), written under ``out``;
    with ``sample_tokens`` also the probability of each token sampled after it."""
    check_sampling(temperature, sample_top_k, top_p, seed, sample_tokens)
    check_text(prompt, "--prompt")
    if not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k={top_k!r}: must be an integer >= 1")
    run = Run(RunStore(root), guid, FINETUNED if finetuned else "")
    model = run.model(checkpoint)
    tok = run.tokenizer
    ids = (list(tok.encode(prompt)) if prompt else empty_prompt(tok))[-model.cfg.n_ctx:]

    def decode(i: int) -> str:
        return tok.decode([i])

    data = views(model, ids, decode, min(top_k, model.n_vocab))
    data.update(guid=guid, prompt=prompt)
    if sample_tokens:
        data["sampling"] = sampling_view(model, ids, decode, sample_tokens, temperature, sample_top_k, top_p,
                                         run.cfg.seed if seed is None else seed, **sampling_ids(tok))
    files = save_views(data, out)
    if charts.figure_class() is None:
        log("notice: matplotlib is not installed: the views are written as JSON only (pip install matplotlib)")
    for path in files:
        log(f"wrote {path}")
    return data
