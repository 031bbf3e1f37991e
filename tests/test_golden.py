"""Golden end-to-end test (llm.c's test_gpt2.c habit): the same GPT written independently in PyTorch,
loaded from a model file that baby wrote, must give baby's logits, loss and every parameter gradient
in float64; then ten training steps of baby's Trainer (warmup, cosine decay, clipping, decoupled
weight decay on matrices only) must match torch.optim.AdamW on the same batches, loss by loss, and
end on the same weights. Two shapes: GPT-2 (LayerNorm, learned positions, mha with fused qkv, tanh
GELU mlp, biases, tied head) and LLaMA (RMSNorm, rotate-half RoPE, SwiGLU, no biases)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import backend
from baby.config import Config
from baby.formats import decode_tensor, load_weights, model_to_dict
from baby.nn.layers import cross_entropy
from baby.nn.model import GPT
from baby.runs import read_json, write_json
from baby.train import Trainer
from tests.conftest import TINY

torch = pytest.importorskip("torch")
F = torch.nn.functional

V = 13
SHAPES = {
    "gpt2": {"c_norm": "layer", "c_position": "learned", "c_attention": "mha", "c_network": "mlp",
             "c_bias": True, "c_tie": True},
    "llama": {"c_norm": "rms", "c_position": "rope", "c_attention": "mha", "c_network": "swi",
              "c_bias": False, "c_tie": True, "r_hidden": 2.6875, "r_beta2": 0.95},
}
TRAIN = {"r_dropout": 0.0, "n_steps": 10, "s_warmup": 3, "r_learn": 2e-2, "r_learn_min": 2e-3,
         "r_decay": 0.1, "r_clip": 1.0, "batch_size": 3}


# ---- the reference model, in PyTorch, from baby's tensor names ----------------------------------------


def reference_forward(w: dict[str, Any], cfg: Config, ids: Any) -> Any:
    """Logits (B, T, V) of the GPT described by ``cfg`` with the named tensors ``w``."""
    b, t = ids.shape
    c, h = cfg.n_emb, cfg.n_heads
    d = c // h

    def norm(x: Any, prefix: str) -> Any:
        if cfg.c_norm == "rms":
            return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w[prefix + ".gain"]
        return F.layer_norm(x, (c,), w[prefix + ".gain"], w[prefix + ".bias"], eps=1e-5)

    def linear(x: Any, prefix: str) -> Any:  # baby stores (in, out)
        y = x @ w[prefix + ".weight"]
        return y + w[prefix + ".bias"] if cfg.c_bias else y

    def rope(x: Any) -> Any:  # rotate-half (GPT-NeoX / LLaMA) over positions 0..t-1
        inv = 1.0 / 10000.0 ** (torch.arange(0, d // 2, dtype=torch.float64) * 2.0 / d)
        angles = torch.arange(t, dtype=torch.float64)[:, None] * inv
        cos, sin = torch.cos(angles), torch.sin(angles)
        x1, x2 = x[..., :d // 2], x[..., d // 2:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    x = w["tok.weight"][ids]
    if cfg.c_position == "learned":
        x = x + w["pos.weight"][:t]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in range(cfg.n_layers):
        att, ffn = f"blocks.{layer}.parts.0", f"blocks.{layer}.parts.1"
        q, k, v = linear(norm(x, att + ".norm"), att + ".inner.qkv").split(c, dim=-1)
        q, k, v = (a.view(b, t, h, d).transpose(1, 2) for a in (q, k, v))
        if cfg.c_position == "rope":
            q, k = rope(q), rope(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        y = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v
        x = x + linear(y.transpose(1, 2).reshape(b, t, c), att + ".inner.proj")
        hidden = norm(x, ffn + ".norm")
        if cfg.c_network == "swi":
            value, gate = linear(hidden, ffn + ".inner.up_gate").chunk(2, dim=-1)  # [up | gate]
            hidden = value * F.silu(gate)
        else:
            hidden = F.gelu(linear(hidden, ffn + ".inner.up"), approximate="tanh")
        x = x + linear(hidden, ffn + ".inner.down")
    return norm(x, "norm") @ w["tok.weight"].T  # tied head


def reference_lr(step: int, cfg: Config) -> float:
    """Linear warmup over s_warmup steps to r_learn, then cosine to r_learn_min at n_steps."""
    warmup, total, peak, floor = int(cfg.s_warmup), cfg.n_steps, cfg.r_learn, cfg.r_learn_min
    if step < warmup:
        return peak * (step + 1) / warmup
    return floor + 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) * (peak - floor)


# ---- the test --------------------------------------------------------------------------------------


def saved_model(cfg: Config, tmp_path: Path) -> tuple[GPT, dict[str, Any]]:
    """A baby model with every weight moved off its init (biases and gains included), written to a
    model file and read back: baby through its loader, the reference from the file's tensors."""
    source = GPT(cfg, n_vocab=V)
    rng = numpy.random.default_rng(2)
    for p in source.parameters():
        p.data += backend.asarray(0.1 * rng.standard_normal(p.shape))
    path = tmp_path / "model.json"
    write_json(path, model_to_dict(source))
    data = read_json(path)
    model = GPT(cfg, n_vocab=int(data["n_vocab"]), seed=99)  # other init: the loaded weights must win
    load_weights(model, data, str(path))
    tensors = {name: torch.tensor(decode_tensor(entry, name), dtype=torch.float64, requires_grad=True)
               for name, entry in data["tensors"].items()}
    assert set(tensors) == {name for name, _ in model.named_parameters()}
    return model, tensors


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_golden_against_pytorch(tmp_path: Path, shape: str) -> None:
    backend.use("cpu", d_type="fp64")
    try:
        check_golden(tmp_path, Config({**TINY, **SHAPES[shape], **TRAIN}))
    finally:
        backend.use("cpu", d_type="fp32")


def check_golden(tmp_path: Path, cfg: Config) -> None:
    model, w = saved_model(cfg, tmp_path)
    params = dict(model.named_parameters())
    tokens = numpy.random.default_rng(3).integers(0, V, 1200)
    trainer = Trainer(cfg, model, tokens, tokens[:300], log=lambda _line: None)

    # 1. logits, loss and every gradient of one batch
    x, y = trainer.batches.batch(0)
    logits = model.forward(x, model.context(x))
    loss, dlogits = cross_entropy(logits, y)
    model.backward(dlogits)
    ids, targets = torch.tensor(backend.to_host(x)).long(), torch.tensor(backend.to_host(y)).long()
    ref_logits = reference_forward(w, cfg, ids)
    ref_loss = F.cross_entropy(ref_logits.reshape(-1, V), targets.reshape(-1))
    ref_loss.backward()
    numpy.testing.assert_allclose(backend.to_host(logits), ref_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert float(loss) == pytest.approx(ref_loss.item(), rel=1e-12)
    for name, p in params.items():
        numpy.testing.assert_allclose(backend.to_host(p.grad), w[name].grad.numpy(), rtol=1e-10, atol=1e-13,
                                      err_msg=f"gradient of {name}")

    # 2. ten steps: baby's Trainer vs torch.optim.AdamW, same batches, lr schedule, clip and decay
    decayed = [w[n] for n, p in params.items() if p.decay]
    assert decayed and len(decayed) < len(params)  # matrices decay; biases, gains do not
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": cfg.r_decay},
                             {"params": [w[n] for n, p in params.items() if not p.decay], "weight_decay": 0.0}],
                            lr=cfg.r_learn, betas=(cfg.r_beta1, cfg.r_beta2), eps=cfg.r_eps)
    norms = []
    for step in range(cfg.n_steps):
        x, y = trainer.batches.batch(step)
        opt.zero_grad()
        ref_loss = F.cross_entropy(reference_forward(w, cfg, torch.tensor(backend.to_host(x)).long()).reshape(-1, V),
                                   torch.tensor(backend.to_host(y)).long().reshape(-1))
        ref_loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(w.values()), cfg.r_clip)))
        for group in opt.param_groups:
            group["lr"] = reference_lr(step, cfg)
        opt.step()
        assert float(trainer.train_step().loss) == pytest.approx(ref_loss.item(), rel=1e-10), f"loss at step {step}"
    clipped = sum(n > cfg.r_clip for n in norms)
    assert 0 < clipped < len(norms), f"clipping should be active on some steps only: norms {norms}"
    for name, p in params.items():
        numpy.testing.assert_allclose(backend.to_host(p.data), w[name].detach().numpy(), rtol=1e-9, atol=1e-12,
                                      err_msg=f"{name} after {cfg.n_steps} steps")
