"""Fast NumPy bodies of the ops: the same math as the references in fewer passes over memory (in
place, ``out=``, no copies), over blocks of rows sized to the L2 cache (``backend.blockwise``: every
pass of a body over a block reads the cache, not memory; one block after another on one thread, shared
among the pool's threads when the work is large). Each is held equal to its reference by
tests/test_ops.py; BABY_OPS=reference (or c_ops=reference) runs the references instead.

Blocks are fixed by the shape, the cache and the thread count, and partial sums are added in row order
(``add_in_order``), so a run repeats bit for bit. float32 row sums use einsum (``row_sum``), whose
order of addition differs from NumPy's pairwise sum in the last bits; float64 keeps the pairwise sum.
"""
from __future__ import annotations

from typing import Any

import numpy

import baby.ops.activations as act  # the reference bodies, by module: the package imports this file
import baby.ops.attention as attention
import baby.ops.norms as norms
import baby.ops.optim as optim
import baby.ops.softmax as softmax
from baby import backend, pool
from baby.ops.registry import fast


def add_in_order(parts: list[Any]) -> Any:
    """The sum of the row blocks' partial sums, added in row order (a run repeats bit for bit)."""
    return sum(parts[1:], parts[0])


# ---- activations ----------------------------------------------------------------------------------


@fast(act.gelu)
def gelu(x: Any) -> tuple[Any, Any]:
    if x.dtype == numpy.float16:  # x^3 overflows fp16 beyond |x| ~ 40 (and inf * 0 is NaN in backward)
        y, t = gelu(x.astype(numpy.float32))
        return y.astype(numpy.float16), t.astype(numpy.float16)
    y, t = numpy.empty_like(x), numpy.empty_like(x)
    backend.blockwise(_gelu_rows, x, y, t)
    return y, t


def _gelu_rows(x: Any, y: Any, t: Any) -> None:
    numpy.multiply(x, x, out=t)
    t *= act.GELU_A
    t += 1.0
    t *= x
    t *= act.GELU_C
    numpy.tanh(t, out=t)
    numpy.add(t, 1.0, out=y)
    y *= x
    y *= 0.5


@fast(act.gelu_backward)
def gelu_backward(x: Any, t: Any, dy: Any) -> Any:
    if x.dtype == numpy.float16:
        f32 = numpy.float32
        return gelu_backward(x.astype(f32), t.astype(f32), dy.astype(f32)).astype(dy.dtype)
    d = numpy.empty_like(dy)
    backend.blockwise(_gelu_backward_rows, x, t, dy, d)
    return d


def _gelu_backward_rows(x: Any, t: Any, dy: Any, d: Any) -> None:
    numpy.multiply(x, x, out=d)
    d *= 3 * act.GELU_A * act.GELU_C
    d += act.GELU_C
    d *= x
    sech2 = numpy.multiply(t, t)
    d *= numpy.subtract(1.0, sech2, out=sech2)  # 1 - t^2, in one temporary
    d += t
    d += 1.0
    d *= 0.5
    d *= dy


@fast(act.glu)
def glu(fused: Any, gate: str) -> tuple[Any, Any]:
    y = numpy.empty(fused.shape[:-1] + (fused.shape[-1] // 2,), dtype=fused.dtype)
    s = numpy.empty_like(y)
    a = s if gate == "sigmoid" else numpy.empty_like(y)
    fused = numpy.ascontiguousarray(fused)
    backend.blockwise(lambda f, y_, s_, a_: _glu_rows(f, y_, s_, a_, gate), fused, y, s, a)
    return y, (fused, a, s, gate)


def _glu_rows(fused: Any, y: Any, s: Any, a: Any, gate: str) -> None:
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    numpy.multiply(pre, 0.5, out=s)  # sigmoid(pre) = 0.5 (1 + tanh(pre / 2)), in place
    numpy.tanh(s, out=s)
    s += 1.0
    s *= 0.5
    if gate == "swish":
        numpy.multiply(pre, s, out=a)  # silu(pre) = pre * sigmoid(pre)
    numpy.multiply(value, a, out=y)


@fast(act.glu_backward)
def glu_backward(cache: Any, dy: Any) -> Any:
    fused, a, s, gate = cache
    dfused = numpy.empty(fused.shape, dtype=dy.dtype)
    backend.blockwise(lambda f, a_, s_, dy_, d: _glu_backward_rows(f, a_, s_, dy_, d, gate),
                      fused, a, s, numpy.ascontiguousarray(dy), dfused)
    return dfused


def _glu_backward_rows(fused: Any, a: Any, s: Any, dy: Any, dfused: Any, gate: str) -> None:
    half = fused.shape[-1] // 2
    value, pre = fused[..., :half], fused[..., half:]
    numpy.multiply(dy, a, out=dfused[..., :half])
    dpre = numpy.multiply(dy, value, out=dfused[..., half:])  # dact, then dpre = dact * act'(pre) in place
    dpre *= s
    factor = numpy.subtract(1.0, s)
    if gate == "swish":  # act' = s (1 + pre (1 - s))
        factor *= pre
        factor += 1.0
    dpre *= factor  # sigmoid: act' = s (1 - s)


# ---- norms ------------------------------------------------------------------------------------------


def _normalise(forward_rows: Any, x: Any) -> tuple[Any, tuple[Any, Any]]:
    """A norm's forward over row blocks: ``forward_rows(x, xhat, scale, y)`` fills the normalised
    rows, the per-row scale (kept in >= fp32) and the output. Returns (y, (xhat, scale))."""
    xhat = numpy.empty(x.shape, dtype=x.dtype)
    scale = numpy.empty(x.shape[:-1] + (1,), dtype=backend.accumulator(x.dtype))
    y = numpy.empty(x.shape, dtype=x.dtype)
    backend.blockwise(forward_rows, x, xhat, scale, y)
    return y, (xhat, scale)


@fast(norms.layer_norm)
def layer_norm(x: Any, gain: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    def rows(x: Any, xhat: Any, rstd: Any, y: Any) -> None:
        n = 1.0 / x.shape[-1]
        work = xhat if xhat.dtype == rstd.dtype else numpy.empty(x.shape, rstd.dtype)  # fp16: centred in fp32
        numpy.subtract(x, row_sum(x) / x.shape[-1], out=work)
        var = numpy.einsum("...i,...i->...", work, work)[..., None]  # no squared temporary
        var *= n
        var += eps
        numpy.sqrt(var, out=rstd)
        numpy.divide(1.0, rstd, out=rstd)
        work *= rstd
        if work is not xhat:
            xhat[...] = work
        numpy.multiply(xhat, gain, out=y)
        y += bias
    return _normalise(rows, x)


@fast(norms.layer_norm_backward)
def layer_norm_backward(dy: Any, xhat: Any, rstd: Any, gain: Any) -> tuple[Any, Any, Any]:
    def rows(dy: Any, xhat: Any, rstd: Any, dx: Any) -> tuple[Any, Any]:
        lead, acc, n = tuple(range(dy.ndim - 1)), rstd.dtype, 1.0 / dy.shape[-1]
        scratch = dy * xhat
        dgain, dbias = scratch.sum(axis=lead, dtype=acc), dy.sum(axis=lead, dtype=acc)
        if dx.dtype != acc:  # fp16: in fp32, rounded once at the end
            scratch = numpy.empty(dy.shape, acc)
        work = dx if dx.dtype == acc else numpy.empty(dy.shape, acc)
        g = numpy.multiply(dy, gain, out=work)  # g = dy * gain, then dx in the same buffer
        proj = numpy.einsum("...i,...i->...", g, xhat, dtype=acc)[..., None]
        proj *= n
        g -= row_sum(g) / dy.shape[-1]
        g -= numpy.multiply(xhat, proj, out=scratch)
        g *= rstd
        if work is not dx:
            dx[...] = work
        return dgain, dbias

    dx = numpy.empty(dy.shape, dtype=dy.dtype)
    parts = backend.blockwise(rows, dy, xhat, rstd, dx)
    return dx, add_in_order([dgain for dgain, _ in parts]), add_in_order([dbias for _, dbias in parts])


@fast(norms.rms_norm)
def rms_norm(x: Any, gain: Any, eps: float) -> tuple[Any, Any]:
    def rows(x: Any, xhat: Any, r: Any, y: Any) -> None:
        ms = row_sum(x, x)  # no squared temporary
        ms /= x.shape[-1]
        ms += eps
        numpy.sqrt(ms, out=r)
        numpy.divide(1.0, r, out=r)
        numpy.multiply(x, r, out=xhat)
        numpy.multiply(xhat, gain, out=y)
    return _normalise(rows, x)


@fast(norms.rms_norm_backward)
def rms_norm_backward(dy: Any, xhat: Any, r: Any, gain: Any) -> tuple[Any, Any]:
    def rows(dy: Any, xhat: Any, r: Any, dx: Any) -> Any:
        acc = r.dtype
        scratch = dy * xhat
        dgain = scratch.sum(axis=tuple(range(dy.ndim - 1)), dtype=acc)
        if dx.dtype != acc:
            scratch = numpy.empty(dy.shape, acc)
        work = dx if dx.dtype == acc else numpy.empty(dy.shape, acc)
        g = numpy.multiply(dy, gain, out=work)
        proj = row_sum(g, xhat)
        proj /= dy.shape[-1]
        g -= numpy.multiply(xhat, proj, out=scratch)
        g *= r
        if work is not dx:
            dx[...] = work
        return dgain

    dx = numpy.empty(dy.shape, dtype=dy.dtype)
    return dx, add_in_order(backend.blockwise(rows, dy, xhat, r, dx))


# ---- softmax and the loss -------------------------------------------------------------------------


@fast(softmax.softmax_)
def softmax_(x: Any, axis: int = -1) -> Any:
    if axis in (-1, x.ndim - 1):
        backend.blockwise(_softmax_rows_, x)
    else:
        _softmax_rows_(x, axis)
    return x


def _softmax_rows_(x: Any, axis: int = -1) -> None:
    last = axis in (-1, x.ndim - 1)
    x -= row_max(x) if last else x.max(axis=axis, keepdims=True)
    numpy.exp(x, out=x)
    x /= row_sum(x) if last else x.sum(axis=axis, keepdims=True, dtype=backend.accumulator(x.dtype))


def row_max(x: Any) -> Any:
    """max over the last axis (kept). NumPy's max reduction pays ~80 ns a row on rows shorter than a
    few hundred values (attention scores: 3,072 rows of 64 took 260 us); its vectorised argmax and a
    gather give the same value in 110 us."""
    if x.shape[-1] > 1024:
        return x.max(axis=-1, keepdims=True)
    return numpy.take_along_axis(x, x.argmax(axis=-1)[..., None], axis=-1)


def row_sum(x: Any, y: Any = None) -> Any:
    """sum over the last axis (kept) of x, or of x * y without the product's temporary, in >= fp32.
    einsum's inner loop runs rows of 64 four times faster than sum's pairwise one, in another order:
    the last bits of a float32 sum may differ. float64 (the dtype of the checks) keeps the pairwise sum."""
    if x.dtype == numpy.float64:
        return (x if y is None else x * y).sum(axis=-1, keepdims=True)
    acc = backend.accumulator(x.dtype)
    total = numpy.einsum("...i->...", x, dtype=acc) if y is None else numpy.einsum("...i,...i->...", x, y, dtype=acc)
    return total[..., None]


@fast(softmax.softmax_backward_)
def softmax_backward_(p: Any, dp: Any, axis: int = -1) -> Any:
    if axis in (-1, dp.ndim - 1) and p.shape == dp.shape:
        backend.blockwise(_softmax_backward_rows_, p, dp)
    else:
        _softmax_backward_rows_(p, dp, axis)
    return dp


def _softmax_backward_rows_(p: Any, dp: Any, axis: int = -1) -> None:
    if axis in (-1, dp.ndim - 1):
        dp -= row_sum(dp, p)
    else:
        dp -= (dp * p).sum(axis=axis, keepdims=True, dtype=backend.accumulator(dp.dtype))
    dp *= p


@fast(softmax.cross_entropy)
def cross_entropy(logits: Any, targets: Any, ignore: int = -1, grad_scale: Any = 1.0) -> tuple[Any, Any]:
    flat = logits.reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    valid = t != ignore
    count = numpy.maximum(valid.sum(), 1)
    weight = valid * (grad_scale / count)
    dlogits = numpy.empty(flat.shape, dtype=logits.dtype)
    parts = backend.blockwise(_cross_entropy_rows, numpy.ascontiguousarray(flat), t, valid, weight, dlogits)
    return add_in_order(parts) / count, dlogits.reshape(logits.shape)


def _cross_entropy_rows(z: Any, t: Any, valid: Any, weight: Any, dz: Any) -> Any:
    """One block of rows: writes dz, returns the block's summed loss (float64)."""
    rows = numpy.arange(t.shape[0])
    safe_t = numpy.where(valid, t, 0)
    # one (N, V) buffer, updated in place: the logits of a large vocabulary are the biggest array
    e = dz if dz.dtype != numpy.float16 else numpy.empty(z.shape, dtype=numpy.float32)  # fp16 logits in fp32
    numpy.subtract(z, z.max(axis=-1, keepdims=True), out=e)
    picked = e[rows, safe_t]
    numpy.exp(e, out=e)
    total = row_sum(e)[:, 0]
    loss = ((numpy.log(total) - picked) * valid).sum(dtype=numpy.float64)
    e *= (weight / total).astype(e.dtype)[:, None]  # softmax, scaled per row
    e[rows, safe_t] -= weight.astype(e.dtype)
    if e is not dz:
        dz[...] = e
    return loss


# ---- attention --------------------------------------------------------------------------------------


@fast(attention.attend)
def attend(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
    """Blocks of sequences whose scores fit in the cache run all of attention in turn (on the pool's
    threads when the work is large), so the softmax's passes read the cache."""
    lead = numpy.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    if not lead:
        return _attend(q, k, v, bias, scale)
    p = numpy.empty(lead + (q.shape[-2], k.shape[-2]), dtype=numpy.result_type(q, k))
    y = numpy.empty(lead + (q.shape[-2], v.shape[-1]), dtype=p.dtype)
    n = len(lead)
    _over_sequences(lambda lo, hi: _attend(*(_sequences(a, lo, hi, n) for a in (q, k, v, bias)), scale,
                                           *(_sequences(a, lo, hi, n) for a in (p, y))), lead[0], p)
    return y, p


def _over_sequences(fn: Any, n_rows: int, p: Any) -> None:
    """fn(lo, hi) over blocks of sequences whose probabilities ``p`` fit in the cache, in parallel where
    it pays (decoding: one query a sequence, small work, runs whole)."""
    step = pool.cache_rows(p.nbytes / n_rows) if p.nbytes > pool.SPLIT_BYTES else n_rows

    def cached(lo: int, hi: int) -> None:
        for a in range(lo, hi, step):
            fn(a, min(a + step, hi))

    if backend.splits(n_rows, 4 * p.size):
        backend.over_rows(cached, n_rows, 4 * p.size)
    else:
        cached(0, n_rows)


def _attend(q: Any, k: Any, v: Any, bias: Any, scale: float, p: Any = None, y: Any = None) -> tuple[Any, Any]:
    s = backend.matmul(q, k.swapaxes(-1, -2), out=p)
    s *= scale
    s += bias
    p = softmax_(s)
    return backend.matmul(p, v, out=y), p


@fast(attention.attend_backward)
def attend_backward(dy: Any, q: Any, k: Any, v: Any, p: Any, scale: float) -> tuple[Any, Any, Any]:
    lead = p.shape[:-2]
    if not lead:
        return _attend_backward(dy, q, k, v, p, scale)
    grads = [numpy.empty(lead + x.shape[-2:], dtype=p.dtype) for x in (q, k, v)]
    n = len(lead)
    _over_sequences(lambda lo, hi: _attend_backward(*(_sequences(a, lo, hi, n) for a in (dy, q, k, v, p)), scale,
                                                    *(_sequences(g, lo, hi, n) for g in grads)), lead[0], p)
    return grads[0], grads[1], grads[2]


def _attend_backward(dy: Any, q: Any, k: Any, v: Any, p: Any, scale: float, dq: Any = None, dk: Any = None,
                     dv: Any = None) -> tuple[Any, Any, Any]:
    dv = backend.matmul(p.swapaxes(-1, -2), dy, out=dv)
    ds = softmax_backward_(p, backend.matmul(dy, v.swapaxes(-1, -2)))
    ds *= scale
    return backend.matmul(ds, k, out=dq), backend.matmul(ds.swapaxes(-1, -2), q, out=dk), dv


def _sequences(a: Any, lo: int, hi: int, n_lead: int) -> Any:
    """Sequences lo:hi (the first of ``n_lead`` batch axes) of an operand of attention; an operand
    that broadcasts along that axis (a shared mask, size 1) is every block's whole."""
    if a.ndim < n_lead + 2 or a.shape[a.ndim - n_lead - 2] == 1:
        return a
    return a[(slice(None),) * (a.ndim - n_lead - 2) + (slice(lo, hi),)]


@fast(attention.rope)
def rope(x: Any, cos: Any, sin: Any, inverse: bool = False, out: Any = None) -> Any:
    """As full-width products, y = x * [cos | cos] + [x2 | x1] * [-sin | sin]: NumPy's inner loops then
    run whole rows (the halves' rows of D/2 values cost a loop each; 1.4 -> 1.0 ms on (16, 4, 128, 64))."""
    half = x.shape[-1] // 2
    c2 = numpy.concatenate([cos, cos], axis=-1)
    s2 = numpy.concatenate([sin, -sin] if inverse else [-sin, sin], axis=-1)
    shape = numpy.broadcast_shapes(x.shape, c2.shape)
    out = numpy.multiply(x, c2, out=out if out is not None else numpy.empty(shape, numpy.result_type(x, cos)))
    swapped = numpy.empty(shape, out.dtype)
    swapped[..., :half] = x[..., half:]
    swapped[..., half:] = x[..., :half]
    swapped *= s2
    out += swapped
    return out


# ---- the optimizer ----------------------------------------------------------------------------------


@fast(optim.adamw)
def adamw(g: Any, decay_mask: Any, w: Any, m: Any, v: Any, lr: Any, b1: Any, b2: Any, eps: float, decay: float,
          c1: Any, c2: Any) -> None:
    scalars = all(isinstance(a, (float, int)) for a in (lr, b1, b2, c1, c2))

    def rows(g: Any, mask: Any, w: Any, m: Any, v: Any) -> None:
        if not scalars:  # mixed precision: 0-d float64 factors, whose products stay float64 until the update
            _adamw_wide(g, mask, w, m, v)
            return
        s1, s2 = numpy.empty_like(w), numpy.empty_like(w)  # two cache-sized temporaries for every step
        m *= b1
        m += numpy.multiply(g, 1 - b1, out=s1)
        v *= b2
        numpy.multiply(g, g, out=s1)
        v += numpy.multiply(s1, 1 - b2, out=s1)
        if decay:
            numpy.multiply(mask, lr * decay, out=s1)
            w -= numpy.multiply(s1, w, out=s1)
        numpy.divide(v, c2, out=s2)
        numpy.sqrt(s2, out=s2)
        s2 += eps
        numpy.multiply(m, lr / c1, out=s1)
        w -= numpy.divide(s1, s2, out=s1)

    def _adamw_wide(g: Any, mask: Any, w: Any, m: Any, v: Any) -> None:
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        if decay:
            w -= (lr * decay) * mask * w
        denom = numpy.sqrt(v / c2)
        denom += eps
        w -= ((lr / c1) * m / denom).astype(w.dtype)

    backend.blockwise(rows, g, decay_mask, w, m, v)


@fast(optim.clip_)
def clip_(g: Any, norm: Any, max_norm: float) -> Any:
    """No pass over the gradients at all below the threshold (most steps): their factor is exactly 1."""
    factor = numpy.where(norm > max_norm, numpy.minimum(1.0, max_norm / (norm + 1e-6)), 1.0).astype(g.dtype)
    if factor != 1:
        g *= factor
    return g


@fast(optim.grad_norm)
def grad_norm(g: Any) -> Any:
    def rows(g: Any) -> Any:
        g = g.astype(numpy.float64, copy=False)
        return numpy.dot(g, g)
    return numpy.sqrt(add_in_order(backend.blockwise(rows, g)))
