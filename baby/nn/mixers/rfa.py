"""rfa: recurrent focused attention. Each query attends to the W = s_window most recent keys (itself
included) plus one memory slot summarising every key/value that has left the window:

    window(t) = {t-W+1, ..., t}
    n_t = t-W+1 (earlier positions),  mk_t = mean_{j<=t-W} k_j,  mv_t = mean_{j<=t-W} v_j
    s_{t,j} = q_t . k_j * scale  for j in window(t),    s_{t,mem} = q_t . mk_t * scale  (if n_t > 0)
    y_t = sum_{j in window(t)} p_{t,j} v_j + p_{t,mem} mv_t,   p = softmax over the W + 1 scores

The memory is recurrent: while decoding it is the running sums of keys and values and their count,
updated as keys leave the window, so a new token costs O(W) and the state is O(W), however long the
sequence. Training computes the same thing (the same window and the same memory, not an
approximation of either): the queries are cut into blocks of W; block b sees the 2W keys of blocks
b-1 and b, masked down to each query's window, so the scores are (T/W) x W x 2W = 2 T W, never T x T;
the memory means are prefix sums.
"""
from __future__ import annotations

from typing import Any

import numpy

from baby import backend
from baby.nn.context import Context
from baby.nn.core import register
from baby.nn.layers import softmax_, softmax_backward_
from baby.nn.mixers.head_attention import HeadAttention
from baby.nn.mixers.kit import blocked_value, cached_mask, suffix_sum, training_valid
from baby.nn.settings import Setting


def pad_time(x: Any, before: int, after: int) -> Any:
    """Zeros before and after along the time axis (axis 2) of a (B, H, T, ...) array."""
    widths = [(0, 0)] * x.ndim
    widths[2] = (before, after)
    return backend.xp.pad(x, widths)


def key_windows(x: Any, block: int, n_blocks: int) -> Any:
    """(B, H, W + n*c, D) keys padded so that query block b's window starts at b*c ->
    (B, H, n, c + W, D). Either one block (c = T <= W) or blocks of c = W, where block b's window is
    the concatenation of W-blocks b and b+1."""
    if n_blocks == 1:
        return x[:, :, None]
    b, h, _, d = x.shape
    parts = x.reshape(b, h, n_blocks + 1, block, d)
    return backend.xp.concatenate([parts[:, :, :-1], parts[:, :, 1:]], axis=3)


def fold_windows(dx: Any, block: int, n_blocks: int) -> Any:
    """Backward of key_windows: add up each padded position's gradient from every window holding it."""
    if n_blocks == 1:
        return dx[:, :, 0]
    b, h, _, _, d = dx.shape
    out = backend.xp.zeros((b, h, n_blocks + 1, block, d), dtype=dx.dtype)
    out[:, :, :-1] += dx[:, :, :, :block]
    out[:, :, 1:] += dx[:, :, :, block:]
    return out.reshape(b, h, (n_blocks + 1) * block, d)


@register("mixer", "rfa", settings=(
    Setting("s_window", int, 0, "rfa: keys each query attends to, itself included; older ones live on "
            "in a recurrent memory slot (0: n_ctx // 4, at least 1)", 0, 1 << 20),
))
class FocusedAttention(HeadAttention):
    inside_view = "window"
    hf_families = ()

    @classmethod
    def score_floats(cls, cfg: Any, n_ctx: int) -> float:
        return cfg.n_heads * (min(cfg.s_window or max(1, n_ctx // 4), n_ctx) + 1)  # its window and memory slot

    def __init__(self, cfg: Any, rng: numpy.random.Generator) -> None:
        super().__init__(cfg, rng)
        self.window = cfg.s_window or max(1, cfg.n_ctx // 4)

    def attend_heads(self, q: Any, k: Any, v: Any, ctx: Context) -> Any:
        xp = backend.xp
        w = self.window
        b, h, t, d = q.shape
        valid = training_valid(ctx)
        ok = (xp.ones((b, 1, t, 1), dtype=q.dtype) if valid is None
              else valid[:, None, :, None].astype(q.dtype))
        state = ctx.module_state(self) if ctx.decoding else {}
        if "k" in state:  # earlier keys still inside the window of the first new query
            k, v = xp.concatenate([state["k"], k], axis=2), xp.concatenate([state["v"], v], axis=2)
            ok = xp.concatenate([state["ok"], ok], axis=2)
        kept = k.shape[2] - t  # P: positions before the first query (0 in training)

        # memory: prefix sums of keys/values (in at least float32), with row 0 holding what left the
        # window before this call
        acc = numpy.promote_types(q.dtype, numpy.float32)
        zero = xp.zeros((b, h, 1, d), dtype=acc)
        sum_k = xp.cumsum(xp.concatenate([state.get("mk", zero), k * ok], axis=2), axis=2, dtype=acc)
        sum_v = xp.cumsum(xp.concatenate([state.get("mv", zero), v * ok], axis=2), axis=2, dtype=acc)
        count = xp.cumsum(xp.concatenate([state.get("mn", zero[:, :1, :, :1]), ok], axis=2), axis=2, dtype=acc)
        # query i (position kept + i) remembers the positions <= kept + i - W: prefix row kept + i - W + 1
        rows = xp.maximum(xp.arange(t) + kept - w + 1, 0)
        n = count[:, :, rows]
        inv_n = xp.where(n > 0, 1.0 / xp.maximum(n, 1.0), 0.0)
        mem_k, mem_v = (sum_k[:, :, rows] * inv_n).astype(q.dtype), (sum_v[:, :, rows] * inv_n).astype(q.dtype)
        inv_n = inv_n.astype(q.dtype)
        if ctx.decoding:  # keep the last W-1 positions; the rest joins the memory
            leave = max(k.shape[2] - (w - 1), 0)
            state.update(k=k[:, :, leave:], v=v[:, :, leave:], ok=ok[:, :, leave:],
                         mk=sum_k[:, :, leave:leave + 1], mv=sum_v[:, :, leave:leave + 1],
                         mn=count[:, :, leave:leave + 1])

        # window: blocks of c queries, each seeing c + W keys; padded position p is key p - (W - P)
        c = t if t <= w else w
        nb = -(-t // c)
        lead, tail = w - kept, nb * c - t
        kw = key_windows(pad_time(k, lead, tail), c, nb)
        vw = key_windows(pad_time(v, lead, tail), c, nb)
        okw = key_windows(pad_time(ok, lead, tail), c, nb)[..., 0]  # (B, 1, nb, c + W)
        qb = pad_time(q, 0, tail).reshape(b, h, nb, c, d)
        mem_kb = pad_time(mem_k, 0, tail).reshape(b, h, nb, c, d)
        mem_vb = pad_time(mem_v, 0, tail).reshape(b, h, nb, c, d)
        has_mem = pad_time(n > 0, 0, tail).reshape(b, 1, nb, c, 1)

        s = xp.concatenate([qb @ kw.swapaxes(-1, -2), (qb * mem_kb).sum(axis=-1, keepdims=True)], axis=-1)
        s *= self.scale
        s += self.bias(c, okw, has_mem)
        p = softmax_(s)
        if valid is not None:  # padding queries output 0, as in HeadAttention
            p *= pad_time(ok, 0, tail).reshape(b, 1, nb, c, 1)
        y = p[..., :-1] @ vw + p[..., -1:] * mem_vb
        if not ctx.decoding:
            self.attn_cache = qb, kw, vw, mem_kb, mem_vb, inv_n, ok, p
            if ctx.capture is not None:
                ctx.note(self, **self.dense_probs(p, t), values=v, memory_values=mem_v,
                         heads=y.reshape(b, h, nb * c, d)[:, :, :t])
        return y.reshape(b, h, nb * c, d)[:, :, :t]

    def dense_probs(self, p: Any, t: int) -> dict[str, Any]:
        """The blocked probabilities of a full forward laid out over key positions, for baby.inspect:
        window_probs (B, H, T, T), memory_probs (B, H, T) (the memory slot's share), the window W.
        Block i's columns are padded positions i*c ... i*c + c + W - 1, i.e. keys i*c - W ... ."""
        xp = backend.xp
        w = self.window
        b, h, nb, c, _ = p.shape
        dense = xp.zeros((b, h, nb * c, w + nb * c), dtype=p.dtype)
        for i in range(nb):
            dense[:, :, i * c:(i + 1) * c, i * c:i * c + c + w] = p[:, :, i, :, :-1]
        return {"window_probs": dense[:, :, :t, w:w + t], "memory_probs": p[..., -1].reshape(b, h, nb * c)[:, :, :t],
                "window": w}

    def bias(self, c: int, okw: Any, has_mem: Any) -> Any:
        """(B, 1, nb, c, c + W + 1) additive bias: window keys j of query r need 1 <= j - r <= W
        (relative to the block) and must exist; the last column, the memory slot, needs n > 0."""
        xp = backend.xp
        w = self.window

        def inside() -> Any:
            rel = xp.arange(c + w)[None, :] - xp.arange(c)[:, None]
            return (rel >= 1) & (rel <= w)

        blocked = blocked_value(backend.dtype)
        window = cached_mask("window", (c, w), inside) + ((1 - okw) * blocked)[:, :, :, None, :]
        memory = xp.where(has_mem, 0.0, blocked).astype(backend.dtype)
        return xp.concatenate([window, xp.broadcast_to(memory, window.shape[:-1] + (1,))], axis=-1)

    def attend_heads_backward(self, dy: Any) -> tuple[Any, Any, Any]:
        # d: s = [q kw^T, q . mk] * scale + bias, p = softmax(s), y = p_win vw + p_mem mv:
        #    dvw = p_win^T dy, dmv = p_mem dy, dp = [dy vw^T, dy . mv], ds = p * (dp - rowsum(p * dp)) * scale,
        #    dq = ds_win kw + ds_mem mk, dkw = ds_win^T q, dmk = ds_mem q; windows fold back onto their positions
        #    (fold_windows) and mk_t = sum_{j<=t-W} k_j / n_t gives each j <= t-W dmk_t / n_t (memory_backward)
        qb, kw, vw, mem_kb, mem_vb, inv_n, ok, p = self.attn_cache
        self.attn_cache = None
        w = self.window
        b, h, nb, c, d = qb.shape
        t = dy.shape[2]
        dyb = pad_time(dy, 0, nb * c - t).reshape(qb.shape)
        p_win, p_mem = p[..., :-1], p[..., -1:]
        dvw = p_win.swapaxes(-1, -2) @ dyb
        dmem_v = p_mem * dyb
        ds = softmax_backward_(p, backend.xp.concatenate(
            [dyb @ vw.swapaxes(-1, -2), (dyb * mem_vb).sum(axis=-1, keepdims=True)], axis=-1))
        ds *= self.scale
        ds_win, ds_mem = ds[..., :-1], ds[..., -1:]
        dqb = ds_win @ kw + ds_mem * mem_kb
        dkw = ds_win.swapaxes(-1, -2) @ qb
        dmem_k = ds_mem * qb

        def unblock(x: Any) -> Any:
            return x.reshape(b, h, nb * c, d)[:, :, :t]

        dk = fold_windows(dkw, c, nb)[:, :, w:w + t] + self.memory_backward(unblock(dmem_k) * inv_n) * ok
        dv = fold_windows(dvw, c, nb)[:, :, w:w + t] + self.memory_backward(unblock(dmem_v) * inv_n) * ok
        return unblock(dqb), dk, dv

    def memory_backward(self, dsum: Any) -> Any:
        """Query i's memory sum holds keys j <= i - W, so key j gets the sum of dsum_i over i >= j + W."""
        # d: sum_i = sum_{j <= i-W} k_j:  dk_j = sum_{i >= j+W} dsum_i, a suffix sum shifted by W
        out = backend.xp.zeros_like(dsum)
        w, t = self.window, dsum.shape[2]
        if t > w:
            out[:, :, :t - w] = suffix_sum(dsum, axis=2)[:, :, w:]
        return out

    def mixing_flops(self, n_ctx: int) -> float:
        """QK^T and PV over the window and the memory slot, per token."""
        return 4.0 * (min(self.window, n_ctx) + 1) * self.n_heads * self.head_dim
