"""The ops layer: every elementwise and row-wise operation of the package, beneath the modules.

Each op is written once as its **reference body**, the formula as a textbook states it (plain ``xp``
expressions, forward and backward side by side, the derivation in a ``# d:`` comment): see
activations.py, norms.py, softmax.py, attention.py and optim.py. Some also have **fast bodies**,
the same math in fewer passes over memory: cpu.py for NumPy (in place, ``out=``, row blocks over
baby's thread pool), cuda.py for CuPy (fused kernels). Modules call the ops and read as math.

registry.py decides which body runs: the fast body of the array library in use, or the reference.
``use("reference")`` (the config's ``c_ops``) or the environment variable ``BABY_OPS=reference`` runs
every op on its reference body; tests/test_ops.py holds the two equal, op by op and for whole models.
"""
from __future__ import annotations

from baby.ops import cpu as _cpu  # noqa: F401 - registers the NumPy fast bodies
from baby.ops import cuda as _cuda  # noqa: F401 - registers the CuPy fast bodies
from baby.ops.activations import (
    GATES,
    GELU_A,
    GELU_C,
    GELU_FORM,
    dropout,
    dropout_backward,
    gelu,
    gelu_backward,
    glu,
    glu_backward,
    sigmoid,
    silu,
    silu_backward,
)
from baby.ops.attention import attend, attend_backward, rope
from baby.ops.norms import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from baby.ops.optim import adamw, clip_, grad_norm
from baby.ops.registry import ENV, MODES, OPS, mode, use, using
from baby.ops.softmax import cross_entropy, log_softmax, softmax, softmax_, softmax_backward, softmax_backward_

__all__ = ["ENV", "MODES", "OPS", "mode", "use", "using", "GATES", "GELU_A", "GELU_C", "GELU_FORM", "gelu",
           "gelu_backward", "sigmoid", "silu", "silu_backward", "glu", "glu_backward", "dropout", "dropout_backward",
           "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward", "softmax_", "softmax",
           "softmax_backward_", "softmax_backward", "log_softmax", "cross_entropy", "attend", "attend_backward", "rope",
           "adamw", "clip_", "grad_norm"]
