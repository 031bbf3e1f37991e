"""The training loop: micro-batches with gradient accumulation, AdamW with warmup + cosine decay,
clipping, periodic validation, progress lines, resumable checkpoints and the numbers of the report.

Everything random in a step is keyed by (seed, step): the batch order by (seed, epoch) in
``data.Batches`` and dropout by ``backend.rng(seed, 1, step)``. A checkpoint therefore needs only
the weights, the optimizer moments and the step to continue exactly where the run stopped.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy

from baby import backend
from baby.config import Config, parse_warmup, parse_word_counts
from baby.data import Batches, eval_batches
from baby.distributed import Communicator
from baby.health import Health
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from baby.optim import AdamW, LossScale, lr_at
from baby.replicas import Replicas, for_training

Log = Callable[[str], None]


def unigram_entropy(tokens: numpy.ndarray) -> float:
    """Entropy (nats/token) of the token frequencies: the loss of a model that ignores context."""
    counts = numpy.bincount(tokens)
    p = counts[counts > 0] / len(tokens)
    return float(-(p * numpy.log(p)).sum())


class Interrupted(RuntimeError):
    """Raised by ``stop_at`` (tests simulate a killed run with it)."""


class TrainingHalted(RuntimeError):
    """Training stopped before its end and said why in one line (the CLI prints it, exit 2 or 130)."""

    exit_status = 2


class Diverged(TrainingHalted):
    """The loss or the gradient norm became non-finite, or spiked far above its recent values; nothing
    non-finite (nothing of the spiked step) was written. ``step``: where training stopped."""

    def __init__(self, message: str, step: int = 0) -> None:
        super().__init__(message)
        self.step = step


class Stopped(TrainingHalted):
    """SIGINT or SIGTERM: a checkpoint of the current step was written."""

    exit_status = 130


@dataclass
class StepResult:
    """What one step leaves on the device: fetched only at the log cadence (no host sync per step)."""

    loss: Any  # mean training loss over the micro-batches, auxiliary losses included
    grad_norm: Any  # global gradient norm before clipping (unscaled)
    applied: Any = True  # False where fp16 gradients overflowed and the update was skipped
    health: Any = None  # the step's health figures (baby.health), when they were measured


def train_step(model: GPT, opt: AdamW, micro_batches: Iterable[tuple[Any, Any, Any]], lr: float,
               clip: float, ignore: int = -1, scaler: LossScale | None = None, comm: Any = None,
               health: Health | None = None, replicas: Replicas | None = None) -> StepResult:
    """The one training step of the package (train, the benchmarks and MQAR): forward, loss and
    backward over each (inputs, targets, dropout rng) micro-batch, the mean of their gradients,
    (the all-reduce over ranks), clipping to ``clip`` (0: off), then AdamW at learning rate ``lr``.
    With a ``scaler`` (fp16) the gradients are computed for scale x loss, unscaled in fp32 by the
    optimizer, and a step whose gradients overflowed is skipped (on the device, no host sync).
    With ``health`` the step also measures its health figures (left on the device in the result).
    With ``replicas`` (CPU) each micro-batch is cut into slices trained at once, one per replica."""
    model.train()
    opt.zero_grad()
    scale = scaler.scale if scaler is not None else 1.0
    total, count = 0.0, 0
    for x, y, rng in micro_batches:
        residual: list[list[Any]] | None = [] if health is not None else None
        if replicas is not None:
            loss = replicas.forward_backward(x, y, rng, ignore, scale, residual)
        else:
            ctx = model.context(x, rng=rng, grad_scale=scale)
            if residual is not None:
                ctx.residual = []
                residual.append(ctx.residual)
            logits = model.forward(x, ctx)
            loss, dlogits = cross_entropy(logits, y, ignore, grad_scale=scale)
            model.backward(dlogits)
            loss = loss + model.extra_loss()
        total = total + loss
        count += 1
        for rms in residual or ():
            health.add_residual(rms)  # type: ignore[union-attr]
    if replicas is not None:
        replicas.reduce()
    if count > 1:  # the mean over micro-batches, auxiliary-loss gradients included
        opt.flat_grad *= 1.0 / count
    if comm is not None:
        comm.all_reduce_mean(opt.flat_grad)
    applied = opt.unscale(scale) if scaler is not None else True
    if health is not None:
        health.before_step(opt)
    norm = opt.clip(clip)
    opt.step(lr, applied if scaler is not None else None)
    if scaler is not None:
        scaler.update(applied)
    return StepResult(total / max(count, 1), norm, applied, health.after_step(opt) if health is not None else None)


@dataclass(frozen=True)
class Schedule:
    per_epoch: int
    total_steps: int
    warmup: int


def schedule(cfg: Config, batches: Batches) -> Schedule:
    """Steps per epoch, steps in the run and warmup steps of ``cfg`` on these batches."""
    per_epoch = max(1, batches.per_epoch() // cfg.n_accumulate)
    total = cfg.n_steps or cfg.n_epochs * per_epoch
    return Schedule(per_epoch, total, parse_warmup(cfg.s_warmup, total))


class Trainer:
    def __init__(self, cfg: Config, model: GPT, train_tokens: numpy.ndarray, val_tokens: numpy.ndarray,
                 log: Log = print, checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 words_per_token: float = 0.0, on_words: Callable[[str], None] | None = None,
                 resume_hint: str = "", comm: Communicator | None = None,
                 rollback_points: Callable[[], list[int]] | None = None) -> None:
        self.cfg, self.model, self.log, self.checkpoint = cfg, model, log, checkpoint
        self.val_tokens = val_tokens
        self.comm = comm or Communicator()  # data parallelism: this rank trains its shard of each batch
        self.batches = Batches(train_tokens, cfg.n_ctx, cfg.batch_size, cfg.seed, cfg.c_shuffle, cfg.c_window_offset,
                               self.comm.rank, self.comm.size)
        plan = schedule(cfg, self.batches)
        self.per_epoch, self.total_steps, self.warmup = plan.per_epoch, plan.total_steps, plan.warmup
        self.eval_every = cfg.n_eval_every or max(1, self.total_steps // 10)
        self.checkpoint_every = cfg.n_checkpoint_every or self.eval_every
        self.log_every = cfg.n_log_every or max(1, self.total_steps // 50)
        self.tokens_per_step = cfg.batch_size * cfg.n_accumulate * cfg.n_ctx
        self.opt = AdamW(model.parameters(), cfg.r_learn, (cfg.r_beta1, cfg.r_beta2), cfg.r_eps, cfg.r_decay)
        self.scaler = LossScale() if self.opt.mixed else None  # fp16: dynamic loss scaling
        # CPU: one replica per thread, each training its slice of the batch (c_device_cpu_parallel)
        self.replicas = for_training(model, self.opt, cfg, cfg.batch_size // self.comm.size)
        self.step = 0
        self.seconds = 0.0  # training time only (evaluation and checkpoints excluded)
        self.curves: dict[str, list[Any]] = {"step": [], "train_loss": [], "val_loss": [], "lr": [],
                                             "tokens_per_second": [], "health": []}
        # training health (baby.health): measured on the logged steps only, read with the loss there
        self.health: Health | None = Health(model, self.opt)
        self.last_health: Any = None
        self.clipped: Any = 0  # device counter of the steps whose gradient norm was clipped
        self.lines: list[str] = []
        # learning-curve checkpoints: words seen = training tokens consumed x words per token
        self.words_per_token, self.on_words = words_per_token, on_words
        self.word_marks = parse_word_counts(cfg.s_checkpoint_words) if on_words else []
        self.resume_hint = resume_hint  # the command that continues this run, for the stop lines
        self.rollback_points = rollback_points  # the checkpoint steps a diverged run can go back to
        self.recent: list[tuple[float, float]] = []  # (loss, gradient norm) of the last 8 progress lines
        self.batch_offset = 0  # batches skipped by a rollback (--skip-batches): step s trains batch s + offset
        self.first_bad: Any = None  # device: (step, loss, grad norm) of the first non-finite step
        self.signal: int | None = None
        self.stopping = False  # a signal every rank has agreed on (the one rank: as soon as it comes)

    # ---- one step ------------------------------------------------------------------------------

    def micro_batches(self) -> Iterator[tuple[Any, Any, Any]]:
        cfg = self.cfg
        for micro in range(cfg.n_accumulate):
            x, y = self.batches.batch((self.step + self.batch_offset) * cfg.n_accumulate + micro)
            # several ranks: each shard draws its own dropout (one process keeps its historical keys)
            ranked = (self.comm.rank,) if self.comm.size > 1 else ()
            yield x, y, backend.rng(cfg.seed, 1, self.step, micro, *ranked)

    def train_step(self) -> StepResult:
        """One optimizer step over n_accumulate micro-batches; the result stays on the device."""
        comm = self.comm if self.comm.size > 1 else None
        measure = self.health if self.logs_after(self.step + 1) else None
        result = train_step(self.model, self.opt, self.micro_batches(), self.lr(), self.cfg.r_clip,
                            scaler=self.scaler, comm=comm, health=measure, replicas=self.replicas)
        self.step += 1
        self.watch(result)
        if result.health is not None:
            self.last_health = result.health
        return result

    def logs_after(self, step: int) -> bool:
        """Whether the loop prints a progress line after ``step`` (the steps whose health is measured)."""
        return step % self.log_every == 0 or step % self.eval_every == 0 or step == self.total_steps

    def watch(self, result: StepResult) -> None:
        """Remember the first non-finite step on the device; ``check_health`` reads it at sync points."""
        xp = backend.xp
        if self.cfg.r_clip > 0:
            self.clipped = self.clipped + (result.grad_norm > self.cfg.r_clip)
        # a skipped fp16 step (overflowed gradients, the scale halves) is not a divergence
        bad = ~(xp.isfinite(result.loss) & (xp.isfinite(result.grad_norm) | ~xp.asarray(result.applied)))
        now = xp.stack([xp.asarray(self.step, dtype=xp.float64), xp.asarray(result.loss, dtype=xp.float64),
                        xp.asarray(result.grad_norm, dtype=xp.float64)])
        if self.first_bad is None:
            self.first_bad = xp.where(bad, now, xp.asarray([-1.0, 0.0, 0.0]))
        else:
            self.first_bad = xp.where(bad & (self.first_bad[0] < 0), now, self.first_bad)

    def recovery_hint(self) -> str:
        """Where a diverged run can go back to, and the command that does it."""
        if not self.resume_hint:
            return ""
        points = self.rollback_points() if self.rollback_points else []
        if not points:
            return f"; resume from the last checkpoint with: {self.resume_hint} --set r_learn=<lower>"
        return (f"; rollback points: step{'s' if len(points) > 1 else ''} {', '.join(map(str, points))}; continue from "
                f"one with: {self.resume_hint} --from-step {points[0]} --set r_learn=<lower> "
                "(add --skip-batches to skip the batches between it and this step)")

    def check_health(self, val_loss: float | None = None) -> None:
        """Raise Diverged if any step so far went non-finite (one host read, at the log cadence)."""
        if self.first_bad is not None:
            step, loss, norm = (float(v) for v in backend.to_host(self.first_bad))
            if step >= 0:
                raise Diverged(f"training diverged at step {int(step)}: loss {loss}, gradient norm {norm}; "
                               f"nothing non-finite was saved{self.recovery_hint()}", self.step)
        if val_loss is not None and not math.isfinite(val_loss):
            raise Diverged(f"training diverged by step {self.step}: validation loss {val_loss}; "
                           f"nothing non-finite was saved{self.recovery_hint()}", self.step)

    def check_spike(self, loss: float, grad_norm: Any) -> None:
        """Raise Diverged when the loss of this progress line is far above the mean of the recent ones
        (r_spike_loss nats) or the gradient norm far above their median (r_spike_norm times): a spike
        is stopped before a checkpoint saves it, while the rollback points still hold weights from
        before it (PaLM rolls back about 100 steps before a spike and skips the batches after)."""
        cfg, norm = self.cfg, float(backend.to_host(grad_norm))
        if len(self.recent) >= 4:
            losses, norms = [r[0] for r in self.recent], sorted(r[1] for r in self.recent)
            mean, median = sum(losses) / len(losses), norms[len(norms) // 2]
            spread = math.sqrt(sum((x - mean) ** 2 for x in losses) / len(losses))
            what = ""  # a noisy run (one small batch per line) must rise above its own noise too: 4 sigma
            if cfg.r_spike_loss > 0 and loss > mean + max(cfg.r_spike_loss, 4 * spread):
                what = (f"loss {loss:.4f} against a mean of {mean:.4f} over the last {len(losses)} lines "
                        f"(r_spike_loss={cfg.r_spike_loss:g})")
            elif cfg.r_spike_norm > 0 and math.isfinite(norm) and norm > cfg.r_spike_norm * median:
                what = f"gradient norm {norm:.4g} against a median of {median:.4g} (r_spike_norm={cfg.r_spike_norm:g})"
            if what:
                raise Diverged(f"loss spike at step {self.step}: {what}; nothing of it was saved{self.recovery_hint()}",
                               self.step)
        if math.isfinite(norm):
            self.recent = (self.recent + [(loss, norm)])[-8:]

    def lr(self) -> float:
        c = self.cfg
        return lr_at(self.step, c.r_learn, c.r_learn_min, self.warmup, self.total_steps, c.r_decay_share)

    def evaluate(self) -> float:
        model = self.model
        model.eval()
        loss = self.replicas.loss if self.replicas is not None else (lambda x, y: cross_entropy(model.forward(x), y)[0])
        batches = eval_batches(self.val_tokens, self.cfg.n_ctx, self.cfg.batch_size, self.cfg.n_eval_batches)
        losses = [float(loss(x, y)) for x, y in batches]
        model.train()
        return float(numpy.mean(losses))

    # ---- the loop --------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.lines.append(line)
        self.log(line)

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until total_steps (or raise Interrupted at ``stop_at``, after its checkpoint).

        SIGINT/SIGTERM finish the current step, write a checkpoint of it and raise Stopped. A
        non-finite loss or gradient norm raises Diverged at the next sync point (a progress line,
        an evaluation, a checkpoint), before anything of the diverged weights is written."""
        if self.step == 0:
            self.say(f"training {self.total_steps} steps ({self.per_epoch} per epoch, "
                     f"{self.tokens_per_step} tokens per step, warmup {self.warmup})")
            if self.checkpoint:  # a run killed before its first interval can still be resumed
                self.checkpoint(self.state_dict())
        with self.signals_caught():
            self.loop(stop_at)
        return self.summary()

    def loop(self, stop_at: int | None) -> None:
        window_loss, window_steps, watch = 0.0, 0, backend.Stopwatch()
        while self.step < self.total_steps:
            result = self.train_step()
            window_loss = window_loss + result.loss
            window_steps += 1
            last = self.step == self.total_steps
            evaluating = self.step % self.eval_every == 0 or last
            if self.logs_after(self.step):
                self.check_health()
                loss = self.agree(window_loss) / window_steps
                self.check_spike(loss, result.grad_norm)
                elapsed = watch.seconds()  # the window's training time (the one sync of the window)
                self.seconds += elapsed
                speed = window_steps * self.tokens_per_step / max(elapsed, 1e-9)
                eta = (self.total_steps - self.step) * elapsed / window_steps
                self.say(f"step {self.step}/{self.total_steps} | loss {loss:.4f} | "
                         f"lr {self.lr():.2e} | {speed:,.0f} tok/s | ETA {format_seconds(eta)}")
                self.record(loss, speed)
                window_loss, window_steps = 0.0, 0
            if evaluating:
                val = self.evaluate()
                self.check_health(val)
                self.curves["val_loss"][-1] = val
                self.say(f"step {self.step}: validation loss {val:.4f}")
            self.mark_words()
            if self.checkpoint and self.step % self.checkpoint_every == 0 and not last:
                self.check_health()
                self.checkpoint(self.state_dict())
            if self.comm.size == 1:
                self.stopping = self.signal is not None
            if self.stopping and not last:
                self.seconds += watch.seconds() if window_steps else 0.0
                self.check_health()
                if self.checkpoint:
                    self.checkpoint(self.state_dict())
                name = signal.Signals(self.signal).name
                saved = "checkpoint written" if self.checkpoint else "nothing saved (finetuning keeps no checkpoint)"
                then = f"; resume with: {self.resume_hint}" if self.resume_hint and self.checkpoint else ""
                raise Stopped(f"stopped by {name} at step {self.step}/{self.total_steps}: {saved}{then}")
            if stop_at is not None and self.step >= stop_at and not last:
                raise Interrupted(f"stopped at step {self.step}")
            if window_steps == 0:  # evaluation and checkpoints are not training time
                watch = backend.Stopwatch()
        self.check_health()

    def agree(self, window_loss: Any) -> float:
        """The window's loss summed over steps, averaged over the ranks in the same collective that
        lets a signal seen by any rank stop them all after this step (one per progress line)."""
        if self.comm.size == 1:
            return float(backend.to_host(window_loss))
        xp = backend.xp
        both = xp.asarray([0.0, 0.0 if self.signal is None else 1.0], dtype=xp.float64)
        both[0] = window_loss
        self.comm.all_reduce_mean(both)
        loss, asked = (float(v) for v in backend.to_host(both))
        if asked > 0:
            self.stopping, self.signal = True, self.signal or signal.SIGTERM
        return loss

    @contextlib.contextmanager
    def signals_caught(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask the loop to stop after the current step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum: int, _frame: Any) -> None:
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signum

        previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @property
    def words_seen(self) -> int:
        return int(self.step * self.tokens_per_step * self.words_per_token)

    def mark_words(self) -> None:
        """Save a learning-curve checkpoint for every word count passed in this step."""
        seen = self.words_seen
        previous = int((self.step - 1) * self.tokens_per_step * self.words_per_token)
        for label, words in self.word_marks:
            if previous < words <= seen:
                self.check_health()
                self.say(f"step {self.step}: {seen:,} words seen, checkpoint {label}")
                self.on_words(label)

    def record(self, train_loss: float, speed: float) -> None:
        c = self.curves
        c["step"].append(self.step)
        c["train_loss"].append(train_loss)
        c["val_loss"].append(None)
        c["lr"].append(self.lr())
        c["tokens_per_second"].append(speed)
        if self.health is not None and self.last_health is not None:
            c["health"].append({"step": self.step, **self.health.read(self.last_health),
                                "clipped_steps": self.clipped_steps})
            self.last_health = None

    @property
    def clipped_steps(self) -> int:
        return int(backend.to_host(self.clipped)) if not isinstance(self.clipped, int) else self.clipped

    def summary(self) -> dict[str, Any]:
        vals = [v for v in self.curves["val_loss"] if v is not None and math.isfinite(v)]
        flops = self.model.flops_per_token()
        tokens = self.step * self.tokens_per_step
        speed = tokens / self.seconds if self.seconds else 0.0
        return {
            "steps": self.step, "total_steps": self.total_steps, "words_seen": self.words_seen,
            "batches_per_epoch": self.per_epoch,
            "epochs": self.step / self.per_epoch, "tokens_per_step": self.tokens_per_step,
            "tokens_trained": tokens, "train_seconds": self.seconds,
            "seconds_per_step": self.seconds / max(self.step, 1), "tokens_per_second": speed,
            "achieved_gflops": speed * flops["training"] / 1e9,
            "final_train_loss": self.curves["train_loss"][-1] if self.curves["train_loss"] else None,
            "final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None,
            "world_size": self.comm.size, "clipped_steps": self.clipped_steps, "curves": self.curves, "log": self.lines,
            **({"loss_scale": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    # ---- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        opt = self.opt.state_dict()
        state = {"step": self.step, "seconds": self.seconds, "curves": self.curves, "lines": self.lines,
                 "clipped_steps": self.clipped_steps, "batch_offset": self.batch_offset,
                 "adam_t": opt["t"], "adam_m": backend.to_host(opt["m"]), "adam_v": backend.to_host(opt["v"])}
        if self.scaler is not None:  # fp16: the fp32 masters and the loss scale resume exactly too
            state.update(adam_master=backend.to_host(opt["master"]), adam_applied=float(backend.to_host(opt["applied"])),
                         loss_scale=self.scaler.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.curves = {key: list(state["curves"].get(key, [])) for key in self.curves}
        self.lines = list(state["lines"])
        self.clipped = int(state.get("clipped_steps", 0))
        self.batch_offset = int(state.get("batch_offset", 0))
        self.opt.load_state_dict({"t": state["adam_t"], "m": state["adam_m"], "v": state["adam_v"],
                                  "master": state.get("adam_master"), "applied": state.get("adam_applied", state["adam_t"])})
        if self.scaler is not None and isinstance(state.get("loss_scale"), dict):
            self.scaler.load_state_dict(state["loss_scale"])


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fit(cfg: Config, train_tokens: numpy.ndarray, val_tokens: numpy.ndarray, n_vocab: int,
        log: Log = print) -> tuple[GPT, dict[str, Any]]:
    """Build a model for ``cfg`` and train it on token streams: the one-call API for benchmarks."""
    model = GPT(cfg, n_vocab)
    trainer = Trainer(cfg, model, train_tokens, val_tokens, log=log)
    return model, trainer.run()
