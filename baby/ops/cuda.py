"""Fast CuPy bodies of the ops: fused elementwise kernels, one pass over memory where the reference
makes several, compiled on first use through ``backend.elementwise_kernel`` (backend.py is the only
file that imports CuPy; fp64 inputs run the reference, the kernels compute in fp32); and the softmax
and the loss in place, so that the largest arrays (attention scores, the logits of a large vocabulary)
are never copied on the GPU."""
from __future__ import annotations

from typing import Any

import baby.ops.activations as act  # the reference bodies, by module: the package imports this file
import baby.ops.optim as optim
import baby.ops.softmax as softmax
from baby import backend
from baby.ops.registry import fast

KERNELS = {
    # gelu (tanh form): y = 0.5 x (1 + t), t = tanh(c (x + a x^3)); one pass instead of ~8
    "gelu": ("T x", "T y, T t", """
        float xf = (float)x;
        float tf = tanhf(0.7978845608028654f * (xf + 0.044715f * xf * xf * xf));
        t = (T)tf;
        y = (T)(0.5f * xf * (1.0f + tf));"""),
    # its backward: dy [0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)]
    "gelu_backward": ("T x, T t, T dy", "T dx", """
        float xf = (float)x, tf = (float)t;
        float d = 0.5f * (1.0f + tf) + 0.5f * xf * (1.0f - tf * tf) * 0.7978845608028654f
                  * (1.0f + 3.0f * 0.044715f * xf * xf);
        dx = (T)(d * (float)dy);"""),
    # AdamW on the flat buffers, in place: m, v, then decoupled decay and the step
    "adamw": ("T g, T mask, float64 lr, float64 b1, float64 b2, float64 eps, float64 decay, float64 c1, float64 c2",
              "T w, T m, T v", """
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        w = w - lr * decay * mask * w;
        w = w - (lr / c1) * m / (sqrt(v / c2) + eps);"""),
}


def kernel(name: str) -> Any:
    return backend.elementwise_kernel(f"baby_{name}", *KERNELS[name])


@fast(act.gelu, "cupy")
def gelu(x: Any) -> tuple[Any, Any]:
    if x.dtype == backend.xp.float64:
        return act.gelu.reference(x)
    return kernel("gelu")(x)


@fast(act.gelu_backward, "cupy")
def gelu_backward(x: Any, t: Any, dy: Any) -> Any:
    if x.dtype == backend.xp.float64:
        return act.gelu_backward.reference(x, t, dy)
    return kernel("gelu_backward")(x, t, dy)


@fast(optim.adamw, "cupy")
def adamw(g: Any, decay_mask: Any, w: Any, m: Any, v: Any, lr: Any, b1: Any, b2: Any, eps: float, decay: float,
          c1: Any, c2: Any) -> None:
    if w.dtype != m.dtype or not all(isinstance(a, float | int) for a in (lr, b1, b2, c1, c2)):
        return optim.adamw.reference(g, decay_mask, w, m, v, lr, b1, b2, eps, decay, c1, c2)  # mixed precision
    kernel("adamw")(g, decay_mask, lr, b1, b2, eps, decay, c1, c2, w, m, v)
    return None


@fast(softmax.softmax_, "cupy")
def softmax_(s: Any, axis: int = -1) -> Any:
    xp = backend.xp
    s -= s.max(axis=axis, keepdims=True)
    xp.exp(s, out=s)
    s /= s.sum(axis=axis, keepdims=True, dtype=backend.accumulator(s.dtype))
    return s


@fast(softmax.softmax_backward_, "cupy")
def softmax_backward_(p: Any, dp: Any, axis: int = -1) -> Any:
    dp -= (dp * p).sum(axis=axis, keepdims=True, dtype=backend.accumulator(dp.dtype))
    dp *= p
    return dp


@fast(softmax.cross_entropy, "cupy")
def cross_entropy(logits: Any, targets: Any, ignore: int = -1, grad_scale: Any = 1.0) -> tuple[Any, Any]:
    """One (N, V) buffer, updated in place (fp16 logits in an fp32 one)."""
    xp = backend.xp
    z = logits.reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    valid = t != ignore
    count = xp.maximum(valid.sum(), 1)
    weight = valid * (grad_scale / count)
    rows, safe_t = xp.arange(t.shape[0]), xp.where(valid, t, 0)
    e = xp.empty(z.shape, dtype=backend.accumulator(z.dtype))
    xp.subtract(z, z.max(axis=-1, keepdims=True), out=e)
    picked = e[rows, safe_t]
    xp.exp(e, out=e)
    total = e.sum(axis=-1)
    loss = ((xp.log(total) - picked) * valid).sum(dtype=xp.float64) / count
    e *= (weight / total).astype(e.dtype)[:, None]  # softmax, scaled per row
    e[rows, safe_t] -= weight.astype(e.dtype)
    return loss, (e if e.dtype == logits.dtype else e.astype(logits.dtype)).reshape(logits.shape)
