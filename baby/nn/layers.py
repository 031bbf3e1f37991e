"""The building blocks every model uses: linear, embedding, norms, activations, dropout, loss.

Conventions: activations are (B, T, C) in ``backend.dtype``; a Linear stores its weight as
(in, out) so that ``y = x @ W + b``. Initialisation runs on the host with NumPy (identical weights on
CPU and GPU for the same seed) and is then moved to the device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from baby import backend, ops
from baby.nn.core import Module, Parameter, register
from baby.nn.settings import Setting
from baby.ops import (
    GELU_FORM,
    cross_entropy,
    gelu,
    gelu_backward,
    log_softmax,
    sigmoid,
    silu,
    silu_backward,
    softmax,
    softmax_,
    softmax_backward,
    softmax_backward_,
)


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


class LayerNorm(Module):
    """(x - mean) / std * gain + bias over the last axis."""

    def __init__(self, n_dim: int, eps: float = 1e-5) -> None:
        self.gain = param(numpy.ones(n_dim))
        self.bias = param(numpy.zeros(n_dim))
        self.eps = eps
        self.cache: Any = None

    def forward(self, x: Any) -> Any:
        y, self.cache = ops.layer_norm(x, self.gain.data, self.bias.data, self.eps)
        return y

    def backward(self, dy: Any) -> Any:
        # d: xhat = (x - mean(x)) * rstd, y = xhat * gain + bias; with g = dy * gain:
        #    dgain = sum(dy * xhat), dbias = sum(dy), dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        (xhat, rstd), self.cache = self.cache, None
        dx, dgain, dbias = ops.layer_norm_backward(dy, xhat, rstd, self.gain.data)
        self.gain.grad += dgain
        self.bias.grad += dbias
        return dx


class RMSNorm(Module):
    """x / rms(x) * gain (LLaMA): no centring, no bias."""

    def __init__(self, n_dim: int, eps: float = 1e-6) -> None:
        self.gain = param(numpy.ones(n_dim))
        self.eps = eps
        self.cache: Any = None

    def forward(self, x: Any) -> Any:
        y, self.cache = ops.rms_norm(x, self.gain.data, self.eps)
        return y

    def backward(self, dy: Any) -> Any:
        # d: xhat = x * r, r = 1 / sqrt(mean(x^2) + eps), y = xhat * gain; with g = dy * gain:
        #    dgain = sum(dy * xhat), dx = r * (g - xhat * mean(g * xhat))  (LayerNorm without the centring)
        (xhat, r), self.cache = self.cache, None
        dx, dgain = ops.rms_norm_backward(dy, xhat, r, self.gain.data)
        self.gain.grad += dgain
        return dx


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
        y, self.mask = ops.dropout(x, self.rate, rng)
        return y

    def backward(self, dy: Any) -> Any:
        # d: y = x * mask (mask = keep / (1 - rate), fixed in the forward): dx = dy * mask
        return dy if self.mask is None else ops.dropout_backward(dy, self.mask)


# The activations, softmax and the loss are ops (baby/ops/): imported above, so ``layers.gelu`` etc. still work.
__all__ = ["Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "gelu", "gelu_backward", "silu",
           "silu_backward", "sigmoid", "softmax", "softmax_", "softmax_backward", "softmax_backward_", "cross_entropy",
           "log_softmax", "param", "normal", "residual_std", "matmul2d", "GELU_FORM", "Setting"]
