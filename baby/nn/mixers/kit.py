"""The kit every sequence mixer builds from, each piece written once: head split/merge, the blocked
score value, masks and the masked softmax, rotary position tables, the time-axis histories of
decoding (a preallocated KV history and a sliding window of recent inputs), prefix means and suffix
sums, and the per-head softmax gate of moh/swh. The init scale of residual projections is
``layers.residual_std`` (the networks use it too). Attention's core (``attend``, ``attend_backward``)
and the rotation ``rope`` are ops (baby/ops/attention.py), handed on from here so that every mixer
finds its pieces in one place.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.layers import Linear
from baby.ops import attend, attend_backward, rope, softmax, softmax_, softmax_backward  # noqa: F401 - handed on

# ---- head reshapes --------------------------------------------------------------------------------


def split_heads(x: Any, n_heads: int) -> Any:
    """(B, T, H*D) -> (B, H, T, D) as a view (matmul reads the strides directly)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(y: Any) -> Any:
    """(B, H, T, D) -> (B, T, H*D)."""
    b, h, t, d = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, t, h * d)


# ---- masks ------------------------------------------------------------------------------------------

_MASKS: dict[tuple[Any, ...], Any] = {}


def blocked_value(dtype: Any) -> float:
    """A large finite negative: a row with every key blocked (a pad query) stays finite."""
    return float(numpy.finfo(dtype).min) / 4


def cached_mask(name: str, shape: tuple[int, ...], build: Any) -> Any:
    """A constant additive mask built once per (name, shape, dtype, library): ``build()`` returns a
    boolean array, True where a query may see a key."""
    key = (name, shape, numpy.dtype(backend.dtype).str, backend.xp.__name__)
    bias = _MASKS.get(key)
    if bias is None:
        bias = backend.xp.where(build(), 0.0, blocked_value(backend.dtype)).astype(backend.dtype)
        _MASKS[key] = bias
    return bias


def padding_bias(valid: Any, rank: int) -> Any:
    """Additive bias blocking padding keys: (B, Tk) bool -> (B, 1, ..., 1, Tk) of ``rank`` axes."""
    shape = (valid.shape[0],) + (1,) * (rank - 2) + (valid.shape[1],)
    return ((~valid).reshape(shape) * blocked_value(backend.dtype)).astype(backend.dtype)


def training_valid(ctx: Context) -> Any:
    """The (B, T) padding mask of a full forward, or None. While decoding there is none: prompts are
    not padded then (the KV cache and recurrent states would have to remember it)."""
    return None if ctx.decoding else ctx.valid


def causal_bias(n_queries: int, n_keys: int, ctx: Context | None = None, rank: int = 4) -> Any:
    """Additive (.., Tq, Tk) bias: 0 where query i may see key j, very negative elsewhere. Queries are
    the last Tq of the Tk positions (a KV cache holds the earlier ones). Padding keys are blocked;
    ``rank`` is the number of axes of the scores the bias is added to."""
    def visible() -> Any:
        xp = backend.xp
        i = xp.arange(n_queries)[:, None] + (n_keys - n_queries)
        return xp.arange(n_keys)[None, :] <= i

    bias = cached_mask("causal", (n_queries, n_keys), visible)
    valid = training_valid(ctx) if ctx is not None else None
    return bias if valid is None else bias + padding_bias(valid, rank)


def masked_softmax_(s: Any, mask: Any, axis: int = -1) -> Any:
    """Softmax in place over ``axis`` of scores ``s`` where ``mask`` is True; blocked entries get
    exactly 0 (exp of the blocked value underflows), so they get no weight and no gradient."""
    s[...] = backend.xp.where(mask, s, blocked_value(s.dtype))
    return softmax_(s, axis)


# ---- attention core: ``attend`` and ``attend_backward`` are ops (baby/ops/attention.py) -------------------


# ---- rotary positions -------------------------------------------------------------------------------


ROPE_BASE = 10000.0  # theta of LLaMA and GPT-NeoX (model files record it)


def rope_tables(positions: Any, dim: int, base: float = ROPE_BASE) -> tuple[Any, Any]:
    """cos and sin of shape (B or 1, 1, T, dim/2) for the rotate-half convention of LLaMA/GPT-NeoX."""
    xp = backend.xp
    if positions.ndim == 2 and positions.shape[0] > 1 and positions.strides[0] == 0:
        positions = positions[:1]  # every row counts alike (no padding): one row of tables, broadcast over B
    inv = 1.0 / base ** (xp.arange(0, dim // 2, dtype=xp.float64) * 2.0 / dim)
    angles = positions.astype(xp.float64)[:, None, :, None] * inv
    return xp.cos(angles).astype(backend.dtype), xp.sin(angles).astype(backend.dtype)


# rope(x, cos, sin, inverse) itself is an op (baby/ops/attention.py)


# ---- time-axis histories of decoding ------------------------------------------------------------


def history_append(state: dict[str, Any], capacity: int, axis: int, k: Any, v: Any) -> tuple[Any, Any]:
    """Append new keys/values along time ``axis`` to a preallocated history of ``capacity`` positions;
    return all keys/values so far. The model re-prefills instead of letting it pass ``capacity``
    (n_ctx), so positions never wrap around."""
    xp = backend.xp
    if "k" not in state:
        shape = k.shape[:axis] + (capacity,) + k.shape[axis + 1:]
        state["k"], state["v"], state["n"] = xp.empty(shape, dtype=k.dtype), xp.empty(shape, dtype=v.dtype), 0
    n, t = state["n"], k.shape[axis]
    if n + t > capacity:
        raise RuntimeError(f"history of {capacity} positions overflowed; the model must re-prefill")
    lead = (slice(None),) * axis
    state["k"][lead + (slice(n, n + t),)] = k
    state["v"][lead + (slice(n, n + t),)] = v
    state["n"] = n + t
    return state["k"][lead + (slice(0, n + t),)], state["v"][lead + (slice(0, n + t),)]


def recent_window(state: dict[str, Any] | None, key: Any, x: Any, n: int) -> Any:
    """(B, n + T, C): the ``n`` inputs before x (zeros at the start; while decoding, the last n of the
    earlier calls, kept under ``key`` of ``state``) followed by x. Causal convolutions read this."""
    xp = backend.xp
    history = None if state is None else state.get(key)
    if history is None:
        history = xp.zeros((x.shape[0], n) + x.shape[2:], dtype=x.dtype)
    padded = xp.concatenate([history, x], axis=1)
    if state is not None:
        state[key] = padded[:, padded.shape[1] - n:].copy()
    return padded


# ---- prefix means ---------------------------------------------------------------------------------


def suffix_sum(x: Any, axis: int = 1) -> Any:
    """s[t] = sum over t' >= t: the backward of a prefix sum (cumsum)."""
    xp = backend.xp
    return xp.flip(xp.cumsum(xp.flip(x, axis=axis), axis=axis), axis=axis)


def prefix_mean(w: Any, v: Any, eps: float, state: dict[str, Any] | None) -> tuple[Any, Any]:
    """y_t = sum_{j<=t} w_j v_j / (eps + sum_{j<=t} w_j), per channel, for (B, T, C) w >= 0 and v.

    The sums are accumulated in at least float32 (fp16 would overflow and lose the small terms).
    With ``state`` (decoding) the running sums of earlier calls are added and the new totals kept:
    two (B, C) arrays, whatever the length so far. Returns (y in v's dtype, the safe denominator for
    backward); where nothing has any weight yet (only padding so far, eps = 0) y is 0. ``w`` may be
    wider than ``v`` (aft's weights reach 5e8: fp32 even when the activations are fp16)."""
    xp = backend.xp
    acc = numpy.promote_types(w.dtype, numpy.float32)
    num = xp.cumsum(w * v, axis=1, dtype=acc)
    den = xp.cumsum(w, axis=1, dtype=acc)
    if state is not None:
        if "num" in state:
            num += state["num"][:, None]
            den += state["den"][:, None]
        state["num"], state["den"] = num[:, -1], den[:, -1]
    den = den + eps if eps else xp.where(den > 0, den, 1.0)
    return (num / den).astype(v.dtype), den


def prefix_mean_backward(dy: Any, w: Any, v: Any, y: Any, den: Any) -> tuple[Any, Any]:
    """Gradients of ``prefix_mean`` w.r.t. w and v. With num_t, den_t the prefix sums:
    dnum_t = dy_t / den_t, dden_t = -dy_t y_t / den_t; a prefix sum's backward is a suffix sum, so
    dv_j = w_j R_j and dw_j = v_j R_j + Q_j with R, Q the suffix sums of dnum and dden."""
    dnum = dy / den
    r = suffix_sum(dnum)
    q = suffix_sum(-dnum * y)
    return (v * r + q).astype(w.dtype), (w * r).astype(v.dtype)


# ---- the per-head gate of moh and swh ---------------------------------------------------------------


def heads_first(g: Any) -> Any:
    """(B, T, H) per-token head weights -> (B, H, T, 1), to scale (B, H, T, D) head outputs."""
    return g.transpose(0, 2, 1)[..., None]


def heads_last(s: Any) -> Any:
    """(B, H, T, 1) -> (B, T, H): the inverse of heads_first."""
    return s[..., 0].transpose(0, 2, 1)


class HeadGate(Linear):
    """One weight per head and token read from the block input: z = (x W_g + b_g) / r_temp,
    g = softmax(z). Called, it is the plain Linear (the logits before the temperature)."""

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        super().__init__(rng, cfg.n_emb, cfg.n_heads, bias=cfg.c_bias)
        self.temp = cfg.r_temp

    def scores(self, x: Any) -> tuple[Any, Any]:
        """(z, g), both (B, T, H)."""
        z = self(x) / self.temp
        return z, softmax(z)

    def scores_backward(self, g: Any, dg: Any) -> Any:
        """Gradient w.r.t. the block input from dL/dg (adds into W_g, b_g)."""
        # d: z = (x W_g + b_g) / temp, g = softmax(z): dz = g * (dg - rowsum(g * dg)), / temp into the linear
        return self.backward(softmax_backward(g, dg) / self.temp)
