"""moe: mixture of experts with top-k routing and a load-balancing loss.

Router: p = softmax(x W_r (+ b_r)) / r_temp) over E = n_experts experts. Each token goes to its
k = n_top most probable experts, each an mlp (expand to r_hidden x n_emb, GELU, project back), and
    y = sum over its chosen experts e of p_e * expert_e(x).
The chosen probabilities are NOT renormalised to sum to 1: with k = E this is exactly the dense
softmax mixture of the original, and with k = 1 the router still gets a gradient through p_e (a
renormalised top-1 weight would be the constant 1).

Only chosen experts run: the (token, slot) pairs are sorted by expert, so each expert sees one
contiguous block of rows and the loop goes over the E experts, never over tokens.

Load balancing (Switch Transformer, Fedus et al. 2021), over the tokens of the forward (padding excluded):
    aux = r_balance * E * sum_e f_e * P_e
    f_e = share of the N*k routing slots that went to expert e   (a count: carries no gradient)
    P_e = mean router probability of expert e                     (differentiable)
It equals r_balance when routing is uniform. f_e is piecewise constant in the inputs (zero derivative
wherever it is defined), so d aux / d p[n, e] = r_balance * E * f_e / N is the exact gradient, which
``backward`` adds. The aux loss exists in training mode only (``extra_loss()`` is 0 in eval, so
validation losses compare across variants)."""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import Network, register
from baby.nn.layers import Linear, gelu, gelu_backward, normal, param, residual_std, softmax, softmax_backward
from baby.nn.settings import Setting, require


@register("network", "moe", settings=(
    Setting("n_experts", int, 4, "moe: number of experts E", 1, 1024),
    Setting("n_top", int, 2, "moe: experts per token k (k = n_experts: the dense mixture)", 1, 1024),
    Setting("r_balance", float, 0.01, "moe: weight of the load-balancing loss (0: off)", 0.0, 10.0,
            role="optimisation"),
))
class MixtureOfExperts(Network):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        require(cfg.n_top <= cfg.n_experts,
                f"n_top={cfg.n_top} must not exceed n_experts={cfg.n_experts} (each token picks n_top distinct experts)")

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        self.check_config(cfg)
        n_exp, c, h = cfg.n_experts, cfg.n_emb, cfg.hidden
        self.n_experts, self.n_top = n_exp, cfg.n_top
        self.balance, self.temp = cfg.r_balance, cfg.r_temp
        self.router = Linear(rng, c, n_exp, bias=cfg.c_bias)
        self.w_up = normal(rng, (n_exp, c, h))
        self.b_up = param(numpy.zeros((n_exp, h))) if cfg.c_bias else None
        self.w_down = normal(rng, (n_exp, h, c), residual_std(cfg))
        self.b_down = param(numpy.zeros((n_exp, c))) if cfg.c_bias else None
        self.tokens_per_expert = numpy.zeros(n_exp, dtype=numpy.int64)  # of the last forward (host)
        self.aux: Any = 0.0
        self.cache: Any = None

    # ---- one expert on its block of rows ----------------------------------------------------------

    def _expert(self, e: int, xs: Any) -> tuple[Any, Any, Any, Any]:
        """Expert e's mlp on rows xs (m, C). Returns (output, pre-activation, tanh term, activation)."""
        h = xs @ self.w_up.data[e]
        if self.b_up is not None:
            h += self.b_up.data[e]
        a, t = gelu(h)
        out = a @ self.w_down.data[e]
        if self.b_down is not None:
            out += self.b_down.data[e]
        return out, h, t, a

    def _expert_backward(self, e: int, xs: Any, h: Any, t: Any, a: Any, dout: Any) -> Any:
        # d: the mlp backward on expert e's rows: out = gelu(xs W_up + b_up) W_down + b_down
        self.w_down.grad[e] += a.T @ dout
        if self.b_down is not None:
            self.b_down.grad[e] += dout.sum(axis=0)
        dh = gelu_backward(h, t, dout @ self.w_down.data[e].T)
        self.w_up.grad[e] += xs.T @ dh
        if self.b_up is not None:
            self.b_up.grad[e] += dh.sum(axis=0)
        return dh @ self.w_up.data[e].T

    # ---- forward / backward -------------------------------------------------------------------------

    def forward(self, x: Any, ctx: Context) -> Any:
        xp = backend.xp
        b, t, c = x.shape
        n, k = b * t, self.n_top
        probs = softmax(self.router(x).reshape(n, self.n_experts) / self.temp)
        chosen = xp.argsort(-probs, axis=-1)[:, :k]  # (N, k) expert ids, most probable first
        gates = xp.take_along_axis(probs, chosen, axis=-1)  # (N, k), not renormalised (see above)
        # Group the N*k (token, slot) pairs by expert: slot i = token * k + j.
        order = xp.argsort(chosen.reshape(-1))
        token_of = order // k
        counts = backend.to_host(xp.bincount(chosen.reshape(-1), minlength=self.n_experts))
        bounds = numpy.concatenate([[0], numpy.cumsum(counts)]).tolist()
        xs = x.reshape(n, c)[token_of]  # (N*k, C) rows in expert order
        out_sorted = xp.empty_like(xs)
        parts = []
        for e in range(self.n_experts):
            lo, hi = bounds[e], bounds[e + 1]
            if lo == hi:
                parts.append(None)
                continue
            out, h, t_gelu, a = self._expert(e, xs[lo:hi])
            out_sorted[lo:hi] = out
            parts.append((h, t_gelu, a))
        slot_out = xp.empty_like(out_sorted)
        slot_out[order] = out_sorted  # back to (token, slot) order: a permutation, no sums needed
        slot_out = slot_out.reshape(n, k, c)
        y = (slot_out * gates[..., None]).sum(axis=1)
        self.tokens_per_expert = counts
        self.aux, balance_grad = 0.0, None
        if self.training and not ctx.decoding and self.balance > 0:
            self.aux, balance_grad = self._balance(probs, chosen, ctx.valid)
            balance_grad = balance_grad * ctx.grad_scale  # scaled like the loss's own gradient (fp16)
        if not ctx.decoding:
            self.cache = (x.shape, probs, chosen, gates, order, bounds, xs, parts, slot_out, balance_grad)
        return y.reshape(b, t, c)

    def _balance(self, probs: Any, chosen: Any, valid: Any) -> tuple[Any, Any]:
        """Switch load-balancing loss and its gradient w.r.t. the router probabilities."""
        xp = backend.xp
        n, n_exp = probs.shape
        weight = xp.ones(n, dtype=probs.dtype) if valid is None else valid.reshape(-1).astype(probs.dtype)
        n_real = xp.maximum(weight.sum(), 1.0)
        slots = xp.zeros_like(probs)
        slots[xp.arange(n)[:, None], chosen] = 1.0
        f = (slots * weight[:, None]).sum(axis=0) / (n_real * self.n_top)
        mean_p = (probs * weight[:, None]).sum(axis=0) / n_real
        scale = self.balance * n_exp
        aux = scale * (f * mean_p).sum()
        return aux, (scale / n_real) * weight[:, None] * f[None, :]

    def _balance_grad(self) -> Any:
        """d aux / d probs of the last forward, or None without an aux loss (a hook for the tests)."""
        return self.cache[-1]

    def backward(self, dy: Any) -> Any:
        # d: y = sum_{e chosen} p_e f_e(x), p = softmax(x W_r / temp): dp_e = <dy, f_e(x)> for the chosen e (else 0)
        #    + d aux / dp, dlogits = p * (dp - rowsum(p * dp)) / temp; expert e gets p_e dy on its rows, and a
        #    token's input gradient sums its k slots and the router's
        xp = backend.xp
        shape, probs, chosen, gates, order, bounds, xs, parts, slot_out, _ = self.cache
        balance_grad = self._balance_grad()
        self.cache = None
        b, t, c = shape
        n, k = b * t, self.n_top
        dy = dy.reshape(n, 1, c)
        # router: the gates are probabilities, plus the balancing loss's direct gradient
        dprobs = xp.zeros_like(probs)
        dprobs[xp.arange(n)[:, None], chosen] = (dy * slot_out).sum(axis=-1)
        if balance_grad is not None:
            dprobs += balance_grad
        dlogits = softmax_backward(probs, dprobs) / self.temp
        dx = self.router.backward(dlogits.reshape(b, t, self.n_experts))
        # experts, in the sorted order of the forward
        dout_sorted = (dy * gates[..., None]).reshape(n * k, c)[order]
        dxs = xp.zeros_like(xs)
        for e, saved in enumerate(parts):
            if saved is not None:
                lo, hi = bounds[e], bounds[e + 1]
                dxs[lo:hi] = self._expert_backward(e, xs[lo:hi], *saved, dout_sorted[lo:hi])
        dslot = xp.empty_like(dxs)
        dslot[order] = dxs
        return dx + dslot.reshape(b, t, k, c).sum(axis=2)

    def extra_loss(self) -> float:
        return self.aux  # a device scalar: read on the host only at the log cadence

    def mixing_flops(self, n_ctx: int) -> float:
        # The model counts 2-D weight matrices only (here: the router); the experts' 3-D weights are
        # counted here, for the k experts a token actually uses.
        _, c, h = self.w_up.shape
        return 2.0 * self.n_top * 2 * c * h
