"""Sampling from a trained model, with incremental decoding (KV cache / recurrent state).

With the cache, each new token costs one position's forward. A window never holds more than n_ctx
positions: when it is full, the state is dropped and the last n_ctx tokens are run again (a
"re-prefill"), which is exactly what an uncached model sees at that point - positions never wrap
around, so cached and uncached generation agree token for token, also past n_ctx.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy

from baby import backend
from baby.config import ConfigError
from baby.nn.model import GPT
from baby.tokenizers import Tokenizer


@dataclass
class Generation:
    tokens: list[int]
    prompt_tokens: int
    seconds: float
    used_cache: bool
    prefills: int = 0
    notices: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)  # of each sampled token, as it was drawn

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


def filter_logits(logits: numpy.ndarray, temperature: float, top_k: int, top_p: float) -> numpy.ndarray:
    """Probabilities (float64, host) after temperature, top-k and nucleus (top-p) filtering."""
    z = logits.astype(numpy.float64) / max(temperature, 1e-8)
    if 0 < top_k < z.size:
        kth = numpy.partition(z, -top_k)[-top_k]
        z = numpy.where(z < kth, -numpy.inf, z)
    p = numpy.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = numpy.argsort(-p, kind="stable")
        cumulative = numpy.cumsum(p[order])
        keep = cumulative - p[order] < top_p  # the smallest set whose mass reaches top_p
        mask = numpy.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = numpy.where(mask, p, 0.0)
        p /= p.sum()
    return p


def pick(logits: numpy.ndarray, temperature: float, top_k: int, top_p: float,
         rng: numpy.random.Generator) -> tuple[int, float]:
    """(token, its probability under the filters); greedy reports the plain softmax probability."""
    if temperature <= 0:
        token = int(numpy.argmax(logits))
        return token, float(filter_logits(logits, 1.0, 0, 1.0)[token])
    p = filter_logits(logits, temperature, top_k, top_p)
    token = int(rng.choice(p.size, p=p))
    return token, float(p[token])


def generate(model: GPT, prompt: list[int] | numpy.ndarray, max_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
             banned: tuple[int, ...] = (), stop: tuple[int, ...] = (),
             on_token: Callable[[list[int]], None] | None = None) -> Generation:
    """Continue ``prompt`` (token ids) by up to ``max_tokens`` tokens. ``banned`` ids (unk, pad) are
    never sampled; sampling a ``stop`` id (eos) ends the generation, and it is kept as the last token.
    ``on_token`` is called with the tokens generated so far after each one (streaming to a terminal).
    A prompt longer than n_ctx is cut to its last n_ctx tokens, with a notice."""
    n_ctx = model.cfg.n_ctx
    ids = [int(i) for i in prompt]
    notices = []
    if len(ids) > n_ctx:
        notices.append(f"prompt of {len(ids)} tokens cut to its last n_ctx={n_ctx} tokens")
        ids = ids[-n_ctx:]
    if not ids:
        raise ValueError("generation needs at least one prompt token (use BOS for an empty prompt)")
    rng = numpy.random.default_rng(seed)
    was_training = model.training
    model.eval()
    prompt_len, prefills, state, filled = len(ids), 0, None, 0
    chances: list[float] = []
    start = time.perf_counter()
    # one new token is a one-row product per matrix: BLAS threads cost more than they save there
    # (2 threads generated 29 % fewer tokens/s than 1 on the BabyLM GPT 5M model, 2 % on LLaMA 5M)
    with backend.at_most_cpu_threads(1):
        try:
            for _ in range(max_tokens):
                if not use_cache:
                    window = ids[-n_ctx:]
                    logits = model.forward(backend.asarray(numpy.array([window])))
                elif state is None or filled == n_ctx:
                    window = ids[-n_ctx:]
                    state, filled = {}, len(window)
                    prefills += 1
                    batch = backend.asarray(numpy.array([window]))
                    logits = model.forward(batch, model.context(batch, start=0, state=state))
                else:
                    batch = backend.asarray(numpy.array([[ids[-1]]]))
                    logits = model.forward(batch, model.context(batch, start=filled, state=state))
                    filled += 1
                last = backend.to_host(logits[0, -1]).astype(numpy.float64)
                if banned:
                    last[list(banned)] = -numpy.inf
                token, chance = pick(last, temperature, top_k, top_p, rng)
                ids.append(token)
                chances.append(chance)
                if on_token is not None:
                    on_token(ids[prompt_len:])
                if ids[-1] in stop:
                    break
        finally:
            model.train(was_training)
    backend.sync()
    seconds = time.perf_counter() - start
    return Generation(ids[prompt_len:], prompt_len, seconds, use_cache, prefills, notices, chances)


# ---- what a command asks of generation: checked sampling settings, the ids never sampled, the record --

def sampling_ids(tokenizer: Tokenizer) -> dict[str, tuple[int, ...]]:
    """Never sample <unk>, <bos> or <pad>; <eos> ends a completion. A vocabulary of the original Little
    Baby has none of them: every id may be sampled and nothing but max_tokens ends a completion."""
    banned = (tokenizer.unk_id, tokenizer.bos_id, tokenizer.pad_id)
    return {"banned": tuple(i for i in banned if i is not None),
            "stop": (tokenizer.eos_id,) if tokenizer.eos_id is not None else ()}


def empty_prompt(tokenizer: Tokenizer) -> list[int]:
    """Training streams start every document with <bos>, so <bos> is the natural empty prompt. The
    original Little Baby has no <bos>: its generate() starts an empty prompt from id 0 (the first
    symbol of its sorted vocabulary), and so does this."""
    return [tokenizer.bos_id] if tokenizer.bos_id is not None else [0]


def completion_record(tokenizer: Tokenizer, prompt: str, gen: Any, max_tokens: int,
                      settings: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, "completion": tokenizer.decode(gen.tokens), "tokens": gen.tokens,
            "max_tokens": max_tokens, "seconds": gen.seconds, "tokens_per_second": gen.tokens_per_second,
            "kv_cache": gen.used_cache, "prefills": gen.prefills, "notices": gen.notices, **settings,
            "created": _dt.datetime.now().isoformat(timespec="seconds")}


def check_sampling(temperature: float, top_k: int, top_p: float, seed: int | None, max_tokens: int) -> None:
    checks = [
        (isinstance(max_tokens, int) and max_tokens >= 0, f"--max-tokens={max_tokens!r}: must be an integer >= 0"),
        (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0,
         f"--temperature={temperature!r}: must be a finite number >= 0 (0: greedy)"),
        (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1,
         f"--top-p={top_p!r}: allowed 0 < top-p <= 1 (1: off)"),
        (isinstance(top_k, int) and top_k >= 0, f"--top-k={top_k!r}: must be an integer >= 0 (0: off)"),
        (seed is None or (isinstance(seed, int) and 0 <= seed < 2 ** 63), f"--seed={seed!r}: must be an integer >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_text(text: str, what: str) -> None:
    """Text must be encodable: lone surrogates (from undecodable command-line bytes) are not characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(f"{what}: not valid Unicode at character {err.start} (a lone surrogate; "
                          "was it typed in a non-UTF-8 terminal?)") from None


class TextStream:
    """Writes the text of the tokens generated so far as it grows. A byte-level token can end inside
    a character: a trailing U+FFFD is held back until the next token completes it (or the end)."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None]) -> None:
        self.tokenizer, self.write, self.shown = tokenizer, write, 0

    def __call__(self, tokens: list[int], final: bool = False) -> None:
        text = self.tokenizer.decode(tokens)
        ready = text if final else text.rstrip("\ufffd")
        if len(ready) > self.shown:
            self.write(ready[self.shown:])
            self.shown = len(ready)
