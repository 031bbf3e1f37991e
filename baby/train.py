"""The training loop: micro-batches with gradient accumulation, AdamW with warmup + cosine decay,
clipping, periodic validation, progress lines, resumable checkpoints and the numbers of the report.

Everything random in a step is keyed by (seed, step): the batch order by (seed, epoch) in
``data.Batches`` and dropout by ``backend.rng(seed, 1, step)``. A checkpoint therefore needs only
the weights, the optimizer moments and the step to continue exactly where the run stopped.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy

from baby import backend
from baby.config import Config, parse_warmup, parse_word_counts
from baby.data import Batches, eval_batches
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from baby.optim import AdamW, lr_at

Log = Callable[[str], None]


def unigram_entropy(tokens: numpy.ndarray) -> float:
    """Entropy (nats/token) of the token frequencies: the loss of a model that ignores context."""
    counts = numpy.bincount(tokens)
    p = counts[counts > 0] / len(tokens)
    return float(-(p * numpy.log(p)).sum())


class Interrupted(RuntimeError):
    """Raised by ``stop_at`` (tests simulate a killed run with it)."""


class Trainer:
    def __init__(self, cfg: Config, model: GPT, train_tokens: numpy.ndarray, val_tokens: numpy.ndarray,
                 log: Log = print, checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 words_per_token: float = 0.0, on_words: Callable[[str], None] | None = None) -> None:
        self.cfg, self.model, self.log, self.checkpoint = cfg, model, log, checkpoint
        self.val_tokens = val_tokens
        self.batches = Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle, cfg.c_sequence)
        self.per_epoch = max(1, self.batches.per_epoch() // cfg.n_accumulate)
        self.total_steps = cfg.n_steps or cfg.n_epochs * self.per_epoch
        self.warmup = parse_warmup(cfg.s_warmup, self.total_steps)
        self.eval_every = cfg.n_eval_every or max(1, self.total_steps // 10)
        self.checkpoint_every = cfg.n_checkpoint_every or self.eval_every
        self.log_every = cfg.n_log_every or max(1, self.total_steps // 50)
        self.tokens_per_step = cfg.batch_size * cfg.n_accumulate * cfg.n_ctx
        self.opt = AdamW(model.parameters(), cfg.r_learn, (cfg.r_beta1, cfg.r_beta2), cfg.r_eps, cfg.r_decay)
        self.step = 0
        self.seconds = 0.0  # training time only (evaluation and checkpoints excluded)
        self.curves: dict[str, list[float]] = {"step": [], "train_loss": [], "val_loss": [], "lr": [],
                                               "tokens_per_second": []}
        self.lines: list[str] = []
        # learning-curve checkpoints: words seen = training tokens consumed x words per token
        self.words_per_token, self.on_words = words_per_token, on_words
        self.word_marks = parse_word_counts(cfg.s_checkpoint_words) if on_words else []

    # ---- one step ------------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step over n_accumulate micro-batches; returns the mean training loss."""
        cfg, model = self.cfg, self.model
        model.train()
        self.opt.zero_grad()
        total = 0.0
        for micro in range(cfg.n_accumulate):
            x, y = self.batches.batch(self.step * cfg.n_accumulate + micro)
            ctx = model.context(x, rng=backend.rng(cfg.seed, 1, self.step, micro))
            logits = model.forward(x, ctx)
            loss, dlogits = cross_entropy(logits, y)
            model.backward(dlogits)
            total += float(loss) + model.extra_loss()
        if cfg.n_accumulate > 1:  # the mean over micro-batches, auxiliary-loss gradients included
            self.opt.flat_grad *= 1.0 / cfg.n_accumulate
        self.opt.clip(cfg.r_clip)
        self.opt.step(self.lr())
        self.step += 1
        return total / cfg.n_accumulate

    def lr(self) -> float:
        c = self.cfg
        return lr_at(self.step, c.r_learn, c.r_learn_min, self.warmup, self.total_steps)

    def evaluate(self) -> float:
        model = self.model
        model.eval()
        losses = [float(cross_entropy(model.forward(x), y)[0])
                  for x, y in eval_batches(self.val_tokens, self.cfg.n_ctx, self.cfg.batch_size, self.cfg.n_eval_batches)]
        model.train()
        return float(numpy.mean(losses))

    # ---- the loop --------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.lines.append(line)
        self.log(line)

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until total_steps (or raise Interrupted at ``stop_at``, after its checkpoint)."""
        if self.step == 0:
            self.say(f"training {self.total_steps} steps ({self.per_epoch} per epoch, "
                     f"{self.tokens_per_step} tokens per step, warmup {self.warmup})")
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            backend.sync()
            self.seconds += time.perf_counter() - t0
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {self.step}; lower r_learn")
            window_loss += loss
            window_steps += 1
            last = self.step == self.total_steps
            evaluating = self.step % self.eval_every == 0 or last
            if self.step % self.log_every == 0 or evaluating:
                elapsed = time.perf_counter() - window_start
                speed = window_steps * self.tokens_per_step / max(elapsed, 1e-9)
                eta = (self.total_steps - self.step) * elapsed / window_steps
                self.say(f"step {self.step}/{self.total_steps} | loss {window_loss / window_steps:.4f} | "
                         f"lr {self.lr():.2e} | {speed:,.0f} tok/s | ETA {format_seconds(eta)}")
                self.record(window_loss / window_steps, speed)
                window_loss, window_steps = 0.0, 0
            if evaluating:
                val = self.evaluate()
                self.curves["val_loss"][-1] = val
                self.say(f"step {self.step}: validation loss {val:.4f}")
            self.mark_words()
            if self.checkpoint and (self.step % self.checkpoint_every == 0 and not last):
                self.checkpoint(self.state_dict())
            if stop_at is not None and self.step >= stop_at and not last:
                raise Interrupted(f"stopped at step {self.step}")
            if window_steps == 0:
                window_start = time.perf_counter()
        return self.summary()

    @property
    def words_seen(self) -> int:
        return int(self.step * self.tokens_per_step * self.words_per_token)

    def mark_words(self) -> None:
        """Save a learning-curve checkpoint for every word count passed in this step."""
        seen = self.words_seen
        previous = int((self.step - 1) * self.tokens_per_step * self.words_per_token)
        for label, words in self.word_marks:
            if previous < words <= seen:
                self.say(f"step {self.step}: {seen:,} words seen, checkpoint {label}")
                self.on_words(label)

    def record(self, train_loss: float, speed: float) -> None:
        c = self.curves
        c["step"].append(self.step)
        c["train_loss"].append(train_loss)
        c["val_loss"].append(float("nan"))
        c["lr"].append(self.lr())
        c["tokens_per_second"].append(speed)

    def summary(self) -> dict[str, Any]:
        vals = [v for v in self.curves["val_loss"] if math.isfinite(v)]
        flops = self.model.flops_per_token()
        tokens = self.step * self.tokens_per_step
        speed = tokens / self.seconds if self.seconds else 0.0
        return {
            "steps": self.step, "total_steps": self.total_steps, "words_seen": self.words_seen, "batches_per_epoch": self.per_epoch,
            "epochs": self.step / self.per_epoch, "tokens_per_step": self.tokens_per_step,
            "tokens_trained": tokens, "train_seconds": self.seconds,
            "seconds_per_step": self.seconds / max(self.step, 1), "tokens_per_second": speed,
            "achieved_gflops": speed * flops["training"] / 1e9,
            "final_train_loss": self.curves["train_loss"][-1] if self.curves["train_loss"] else None,
            "final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None,
            "curves": self.curves, "log": self.lines,
        }

    # ---- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        opt = self.opt.state_dict()
        return {"step": self.step, "seconds": self.seconds, "curves": self.curves, "lines": self.lines,
                "adam_t": opt["t"], "adam_m": backend.to_host(opt["m"]), "adam_v": backend.to_host(opt["v"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.curves, self.lines = state["curves"], list(state["lines"])
        self.opt.load_state_dict({"t": state["adam_t"], "m": state["adam_m"], "v": state["adam_v"]})


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fit(cfg: Config, train_tokens: numpy.ndarray, val_tokens: numpy.ndarray, n_vocab: int,
        log: Log = print) -> tuple[GPT, dict[str, Any]]:
    """Build a model for ``cfg`` and train it on token streams: the one-call API for benchmarks."""
    model = GPT(cfg, n_vocab)
    trainer = Trainer(cfg, model, train_tokens, val_tokens, log=log)
    return model, trainer.run()
