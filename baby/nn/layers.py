"""The building blocks every model uses: linear, embedding, norms, activations, dropout, loss.

Conventions: activations are (B, T, C) in ``backend.dtype``; a Linear stores its weight as
(in, out) so that ``y = x @ W + b``. Initialisation runs on the host with NumPy (identical weights on
CPU and GPU for the same seed) and is then moved to the device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend
from baby.nn.core import Module, Parameter, register
from baby.nn.settings import Setting


def param(array: numpy.ndarray, decay: bool = False) -> Parameter:
    return Parameter(backend.asarray(array, backend.dtype), decay=decay)


def normal(rng: numpy.random.Generator, shape: tuple[int, ...], std: float = 0.02) -> Parameter:
    return param(rng.normal(0.0, std, shape), decay=True)


def residual_std(cfg: Any) -> float:
    """GPT-2's init for a projection that writes into the residual stream: 0.02 / sqrt(2 * layers),
    so the sum over layers does not grow with depth. Every mixer and network uses it."""
    return 0.02 / math.sqrt(2 * max(cfg.n_layers, 1))


def matmul2d(x: Any, w: Any) -> Any:
    """x (..., in) @ w (in, out) as a single 2-D GEMM over all leading positions."""
    lead = x.shape[:-1]
    return backend.matmul(x.reshape(-1, x.shape[-1]), w).reshape(*lead, w.shape[-1])


class Linear(Module):
    """y = x @ W (+ b) over the last axis; any leading shape."""

    def __init__(self, rng: numpy.random.Generator, n_in: int, n_out: int, bias: bool = True,
                 std: float = 0.02) -> None:
        self.weight = normal(rng, (n_in, n_out), std)
        self.bias = param(numpy.zeros(n_out)) if bias else None
        self.x: Any = None

    def forward(self, x: Any) -> Any:
        self.x = x
        # one (B*T, in) x (in, out) GEMM: a 3-D @ 2-D matmul would run B small GEMMs instead
        y = matmul2d(x, self.weight.data)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy: Any) -> Any:
        # d: y = x @ W + b:  dW = x^T @ dy and db = sum(dy) over all positions, dx = dy @ W^T
        x2 = self.x.reshape(-1, self.x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        self.weight.grad += backend.matmul(x2.T, dy2)
        if self.bias is not None:
            self.bias.grad += dy2.sum(axis=0)
        self.x = None
        return matmul2d(dy, self.weight.data.T)


class Embedding(Module):
    """Rows of a (V, C) table; backward scatter-adds (repeated ids must all count)."""

    def __init__(self, rng: numpy.random.Generator, n_rows: int, n_dim: int, std: float = 0.02) -> None:
        self.weight = normal(rng, (n_rows, n_dim), std)
        self.ids: Any = None

    def forward(self, ids: Any) -> Any:
        self.ids = ids
        return self.weight.data[ids]

    def backward(self, dy: Any) -> None:
        # d: y_n = W[ids_n]:  dW[i] = sum of dy_n over every n with ids_n = i (a scatter-add: repeats add up)
        backend.scatter_add(self.weight.grad, self.ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))
        self.ids = None


def add_in_order(parts: list[Any]) -> Any:
    """The sum of the row blocks' partial sums, added in row order (a run repeats bit for bit)."""
    return sum(parts[1:], parts[0])


def normalise(forward_rows: Any, x: Any) -> tuple[Any, tuple[Any, Any]]:
    """A norm's forward over row blocks: ``forward_rows(x, xhat, scale, y)`` fills the normalised
    rows, the per-row scale (kept in >= fp32: squares overflow fp16 above 256) and the output.
    Returns (y, (xhat, scale)) for the backward."""
    xp = backend.xp
    xhat = xp.empty(x.shape, dtype=x.dtype)
    scale = xp.empty(x.shape[:-1] + (1,), dtype=backend.accumulator(x.dtype))
    y = xp.empty(x.shape, dtype=x.dtype)
    backend.blockwise(forward_rows, x, xhat, scale, y)
    return y, (xhat, scale)


class LayerNorm(Module):
    """(x - mean) / std * gain + bias over the last axis."""

    def __init__(self, n_dim: int, eps: float = 1e-5) -> None:
        self.gain = param(numpy.ones(n_dim))
        self.bias = param(numpy.zeros(n_dim))
        self.eps = eps
        self.cache: Any = None

    def forward(self, x: Any) -> Any:
        y, self.cache = normalise(self._forward_rows, x)
        return y

    def _forward_rows(self, x: Any, xhat_out: Any, rstd: Any, y: Any) -> None:
        xp = backend.xp
        x = x.astype(rstd.dtype, copy=False)
        xhat = x - x.mean(axis=-1, keepdims=True)
        var = xp.einsum("...i,...i->...", xhat, xhat)[..., None]  # no squared temporary
        var *= 1.0 / x.shape[-1]
        var += self.eps
        xp.sqrt(var, out=rstd)
        xp.divide(1.0, rstd, out=rstd)
        xhat *= rstd
        xhat_out[...] = xhat
        xp.multiply(xhat_out, self.gain.data, out=y)
        y += self.bias.data

    def backward(self, dy: Any) -> Any:
        # d: xhat = (x - mean(x)) * rstd, y = xhat * gain + bias; with g = dy * gain:
        #    dgain = sum(dy * xhat), dbias = sum(dy), dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        xhat, rstd = self.cache
        self.cache = None
        dx = backend.xp.empty(dy.shape, dtype=dy.dtype)
        parts = backend.blockwise(self._backward_rows, dy, xhat, rstd, dx)
        self.gain.grad += add_in_order([dgain for dgain, _ in parts])
        self.bias.grad += add_in_order([dbias for _, dbias in parts])
        return dx

    def _backward_rows(self, dy: Any, xhat: Any, rstd: Any, dx_out: Any) -> tuple[Any, Any]:
        lead, acc = tuple(range(dy.ndim - 1)), backend.accumulator(dy.dtype)
        dgain, dbias = (dy * xhat).sum(axis=lead, dtype=acc), dy.sum(axis=lead, dtype=acc)
        g = dy * self.gain.data
        proj = backend.xp.einsum("...i,...i->...", g, xhat, dtype=acc)[..., None]
        proj *= 1.0 / dy.shape[-1]
        dx = g - g.mean(axis=-1, keepdims=True, dtype=acc)
        dx -= xhat * proj
        dx *= rstd
        dx_out[...] = dx
        return dgain, dbias


class RMSNorm(Module):
    """x / rms(x) * gain (LLaMA): no centring, no bias."""

    def __init__(self, n_dim: int, eps: float = 1e-6) -> None:
        self.gain = param(numpy.ones(n_dim))
        self.eps = eps
        self.cache: Any = None

    def forward(self, x: Any) -> Any:
        y, self.cache = normalise(self._forward_rows, x)
        return y

    def _forward_rows(self, x: Any, xhat: Any, r: Any, y: Any) -> None:
        xp = backend.xp
        x32 = x.astype(r.dtype, copy=False)
        r[...] = 1.0 / xp.sqrt((x32 * x32).mean(axis=-1, keepdims=True) + self.eps)
        xhat[...] = x32 * r
        xp.multiply(xhat, self.gain.data, out=y)

    def backward(self, dy: Any) -> Any:
        # d: xhat = x * r, r = 1 / sqrt(mean(x^2) + eps), y = xhat * gain; with g = dy * gain:
        #    dgain = sum(dy * xhat), dx = r * (g - xhat * mean(g * xhat))  (LayerNorm without the centring)
        xhat, r = self.cache
        self.cache = None
        dx = backend.xp.empty(dy.shape, dtype=dy.dtype)
        self.gain.grad += add_in_order(backend.blockwise(self._backward_rows, dy, xhat, r, dx))
        return dx

    def _backward_rows(self, dy: Any, xhat: Any, r: Any, dx: Any) -> Any:
        dgain = (dy * xhat).sum(axis=tuple(range(dy.ndim - 1)), dtype=r.dtype)
        g = dy * self.gain.data
        dx[...] = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True, dtype=r.dtype))
        return dgain


# Norms are registered so that c_norm picks one; they take the width as their only argument.
register("norm", "layer")(LayerNorm)
register("norm", "rms")(RMSNorm)


class Dropout(Module):
    """Inverted dropout; the mask comes from the step's generator so a resumed run draws the same."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.mask: Any = None

    def forward(self, x: Any, rng: Any) -> Any:
        if not self.training or self.rate <= 0.0 or rng is None:
            self.mask = None
            return x
        keep = rng.random(x.shape, dtype=backend.xp.float32) >= self.rate
        self.mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self.mask

    def backward(self, dy: Any) -> Any:
        # d: y = x * mask (mask = keep / (1 - rate), fixed in the forward): dx = dy * mask
        return dy if self.mask is None else dy * self.mask


# ---- activations: value and derivative side by side -------------------------------------------

GELU_C = math.sqrt(2.0 / math.pi)
GELU_FORM = "tanh"  # the approximation gelu() computes (GPT-2's "gelu_new"); model files record it


def gelu(x: Any) -> tuple[Any, Any]:
    """tanh-approximated GELU; returns (y, tanh term) for gelu_backward. In-place steps: this and its
    backward are memory-bound, and every temporary is a pass over the (B*T, hidden) activations."""
    xp = backend.xp
    kernel = backend.fused("gelu") if x.dtype != xp.float64 else None
    if kernel is not None:  # CuPy: one fused pass, computed in fp32 (fp64 keeps the exact path)
        return kernel(x)
    if x.dtype == xp.float16:  # x^3 overflows fp16 beyond |x| ~ 40 (and inf * 0 is NaN in backward)
        y, t = gelu(x.astype(xp.float32))
        return y.astype(xp.float16), t.astype(xp.float16)
    y, t = xp.empty_like(x), xp.empty_like(x)
    backend.blockwise(_gelu_rows, x, y, t)
    return y, t


def _gelu_rows(x: Any, y: Any, t: Any) -> None:
    xp = backend.xp
    xp.multiply(x, x, out=t)
    t *= 0.044715
    t += 1.0
    t *= x
    t *= GELU_C
    xp.tanh(t, out=t)
    xp.add(t, 1.0, out=y)
    y *= x
    y *= 0.5


def gelu_backward(x: Any, t: Any, dy: Any) -> Any:
    """dy * [0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)] with t = tanh(c (x + a x^3))."""
    kernel = backend.fused("gelu_backward") if x.dtype != backend.xp.float64 else None
    if kernel is not None:
        return kernel(x, t, dy)
    if x.dtype == backend.xp.float16:
        f32 = backend.xp.float32
        return gelu_backward(x.astype(f32), t.astype(f32), dy.astype(f32)).astype(dy.dtype)
    d = backend.xp.empty_like(dy)
    backend.blockwise(_gelu_backward_rows, x, t, dy, d)
    return d


def _gelu_backward_rows(x: Any, t: Any, dy: Any, d: Any) -> None:
    xp = backend.xp
    xp.multiply(x, x, out=d)
    d *= 3 * 0.044715 * GELU_C
    d += GELU_C
    d *= x
    d *= 1.0 - t * t
    d += t
    d += 1.0
    d *= 0.5
    d *= dy


def sigmoid(x: Any) -> Any:
    xp = backend.xp
    return 0.5 * (1.0 + xp.tanh(0.5 * x))  # stable for large |x|


def silu(x: Any) -> tuple[Any, Any]:
    """x * sigmoid(x); returns (y, sigmoid) for silu_backward."""
    s = sigmoid(x)
    return x * s, s


def silu_backward(x: Any, s: Any, dy: Any) -> Any:
    # d: y = x s, s = sigmoid(x), s' = s (1 - s):  dx = dy (s + x s (1 - s)) = dy s (1 + x (1 - s))
    return dy * s * (1.0 + x * (1.0 - s))


def softmax_(x: Any, axis: int = -1) -> Any:
    """Softmax in place (attention scores are the largest arrays: no copies)."""
    if axis in (-1, x.ndim - 1):
        backend.blockwise(_softmax_rows_, x)
    else:
        _softmax_rows_(x, axis)
    return x


def _softmax_rows_(x: Any, axis: int = -1) -> None:
    x -= x.max(axis=axis, keepdims=True)
    backend.xp.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True, dtype=backend.accumulator(x.dtype))


def softmax(x: Any, axis: int = -1) -> Any:
    return softmax_(x.copy(), axis)


def softmax_backward_(p: Any, dp: Any, axis: int = -1) -> Any:
    """In place: dp becomes the gradient through p = softmax(s), p * (dp - <dp, p>)."""
    # d: p = softmax(s): dp_i/ds_j = p_i (delta_ij - p_j), so ds = p * (dp - rowsum(p * dp))
    if axis in (-1, dp.ndim - 1) and p.shape == dp.shape:
        backend.blockwise(_softmax_backward_rows_, p, dp)
    else:
        _softmax_backward_rows_(p, dp, axis)
    return dp


def _softmax_backward_rows_(p: Any, dp: Any, axis: int = -1) -> None:
    dp -= (dp * p).sum(axis=axis, keepdims=True, dtype=backend.accumulator(dp.dtype))
    dp *= p


def softmax_backward(p: Any, dp: Any, axis: int = -1) -> Any:
    return softmax_backward_(p, dp.copy(), axis)


def cross_entropy(logits: Any, targets: Any, ignore: int = -1, grad_scale: Any = 1.0) -> tuple[Any, Any]:
    """Mean token cross-entropy and its gradient w.r.t. logits, in one pass.

    Targets equal to ``ignore`` contribute nothing (padding, unlabelled MQAR positions). The gradient
    is multiplied by ``grad_scale`` (the loss scale of fp16 training) before it is rounded to the
    logits' dtype: softmax(z)/N for N = 4096 positions lies below fp16's smallest number, so an
    unscaled fp16 gradient would be mostly zeros. fp16 logits are processed in fp32.
    Returns (loss as a 0-d device array, summed in float64, dlogits); nothing is read on the host.

        L = (1/N) sum_n [log sum_v exp z_nv - z_n,y_n],   dL/dz_nv = (softmax(z_n)_v - [v = y_n]) / N
    """
    # d: L = mean_n (log sum_v exp z_nv - z_n,y_n):  dz = (softmax(z) - onehot(y)) / count, 0 on ignored rows
    xp = backend.xp
    flat = logits.reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    valid = t != ignore
    count = xp.maximum(valid.sum(), 1)  # a device scalar: no host sync
    weight = valid * (grad_scale / count)
    dlogits = xp.empty(flat.shape, dtype=logits.dtype)
    parts = backend.blockwise(_cross_entropy_rows, xp.ascontiguousarray(flat), t, valid, weight, dlogits)
    loss = add_in_order(parts) / count
    return loss, dlogits.reshape(logits.shape)


def _cross_entropy_rows(z: Any, t: Any, valid: Any, weight: Any, dz: Any) -> Any:
    """One block of rows of cross_entropy: writes dz, returns the block's summed loss (float64)."""
    xp = backend.xp
    rows = xp.arange(t.shape[0])
    safe_t = xp.where(valid, t, 0)
    # one (N, V) buffer, updated in place: the logits of a large vocabulary are the biggest array
    e = dz if dz.dtype != xp.float16 else xp.empty(z.shape, dtype=xp.float32)  # fp16 logits in fp32
    xp.subtract(z, z.max(axis=-1, keepdims=True), out=e)
    picked = e[rows, safe_t]
    xp.exp(e, out=e)
    total = e.sum(axis=-1)
    loss = ((xp.log(total) - picked) * valid).sum(dtype=xp.float64)
    e *= (weight / total).astype(e.dtype)[:, None]  # softmax, scaled per row
    e[rows, safe_t] -= weight.astype(e.dtype)
    if e is not dz:
        dz[...] = e
    return loss


def log_softmax(logits: Any) -> Any:
    xp = backend.xp
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


__all__ = ["Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "gelu", "gelu_backward", "silu",
           "silu_backward", "sigmoid", "softmax", "softmax_", "softmax_backward", "softmax_backward_", "cross_entropy", "log_softmax",
           "param", "normal", "residual_std", "Setting"]
