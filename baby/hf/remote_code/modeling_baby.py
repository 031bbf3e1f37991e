"""A Little Baby model in PyTorch, for Hugging Face ``transformers`` (remote code).

Every sequence mixer and feed-forward network of the Little Baby, its norms and positions, written
once as small ``nn.Module``s whose docstrings give the formula. ``BabyConfig`` picks them: a block is
one residual part per mixer of ``config.mixers`` and one for ``config.network``. This is a second,
independent implementation of the forward pass of the NumPy package (whose tests hold the two equal),
so it reads as a reference: no caches, no fused kernels.

Conventions kept from the NumPy package, so that the tensors of ``model.safetensors`` are the run's
own, by name and layout: a linear map stores its weight as (in, out) and computes ``x @ W + b``; the
parameter names are the run's (``blocks.0.parts.1.inner.qkv.weight``).

Padding: ``attention_mask`` (1 real, 0 padding) is the run's ``valid`` mask. Positions count real
tokens only (a left-padded row starts at position 0 at its first real token), padding keys are never
attended to, and each mixer treats padding positions as the NumPy model does.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_baby import BabyConfig


def blocked(dtype: torch.dtype) -> float:
    """A score no key can win with; finite, so that a row of them (a padding query) stays finite."""
    return torch.finfo(dtype).min / 4


# ---- pieces every variant uses ------------------------------------------------------------------------

class Linear(nn.Module):
    """y = x @ W (+ b), W of shape (in, out) (the NumPy package's layout)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class LayerNorm(nn.Module):
    """(x - mean(x)) / sqrt(var(x) + eps) * gain + bias over the last axis."""

    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.gain, self.bias, self.eps = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n)), eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gain, self.bias, self.eps)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain (no centring, no bias)."""

    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.gain, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


def build_norm(kind: str, n: int, eps: float) -> nn.Module:
    return {"layer": LayerNorm, "rms": RMSNorm}[kind](n, eps)


def gelu(x: Tensor) -> Tensor:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): the tanh form (GPT-2's gelu_new)."""
    return F.gelu(x, approximate="tanh")


def prefix_mean(w: Tensor, v: Tensor, eps: float) -> Tensor:
    """y_t = sum_{j<=t} w_j v_j / (eps + sum_{j<=t} w_j) per channel; with eps = 0, y is 0 where no
    weight has arrived yet (a row that starts with padding)."""
    num, den = torch.cumsum(w * v, dim=1), torch.cumsum(w, dim=1)
    den = den + eps if eps else torch.where(den > 0, den, torch.ones_like(den))
    return num / den


class Inputs:
    """What every mixer may need besides its input: the token ids (B, T), the positions (B, T) and
    the valid mask (B, T) bool, or None when nothing is padded."""

    def __init__(self, ids: Tensor, positions: Tensor, valid: Tensor | None) -> None:
        self.ids, self.positions, self.valid = ids, positions, valid

    def keep(self, dtype: torch.dtype) -> Tensor | None:
        """(B, T, 1): 1 at real tokens, 0 at padding (None without padding)."""
        return None if self.valid is None else self.valid[..., None].to(dtype)


# ---- sequence mixers: attention --------------------------------------------------------------------

def rope(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotary positions, rotate-half convention (LLaMA, GPT-NeoX): the pair (x1_i, x2_i) of the two
    halves of the head is rotated by position * base^(-2i / D). Angles in float64, as the NumPy model."""
    d = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d // 2, dtype=torch.float64, device=x.device) * 2.0 / d)
    angles = positions.to(torch.float64)[:, None, :, None] * inv  # (B, 1, T, D/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """mha (and the base of gqa, moh, swh, rfa): causal multi-head softmax attention.

        [q | k | v] = x W_qkv + b,   H query heads, K key/value heads of width D (query head i reads K/V head i // (H/K))
        s_ij = q_i . k_j / (sqrt(D) r_temp)  for keys j <= i that are not padding
        y_i = softmax(s_i) v  (0 at a padding query),   out = mix(y) W_o + b_o

    ``mix`` is the identity here; moh and swh weigh the heads."""

    def __init__(self, config: BabyConfig, kv_heads: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.n_kv = kv_heads or config.n_heads
        self.rotary, self.rope_base = config.position == "rope", config.rope_base
        self.scale = 1.0 / (math.sqrt(self.head_dim) * config.r_temp)
        self.qkv = Linear(config.n_emb, (self.n_heads + 2 * self.n_kv) * self.head_dim, config.bias)
        self.proj = Linear(config.head_width, config.n_emb, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv, self.head_dim
        qkv = self.qkv(x).view(b, t, h + 2 * kv, d).transpose(1, 2)  # (B, H + 2K, T, D)
        q, k, v = qkv[:, :h], qkv[:, h:h + kv], qkv[:, h + kv:]
        if self.rotary:
            q, k = rope(q, inputs.positions, self.rope_base), rope(k, inputs.positions, self.rope_base)
        k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        y = self.attend(q, k, v, inputs)
        y = self.mix(x, y)
        return self.proj(y.transpose(1, 2).reshape(b, t, h * d))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, inputs: Inputs) -> Tensor:
        t = q.shape[2]
        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        bias = torch.where(causal, 0.0, blocked(q.dtype)).to(q.dtype)
        if inputs.valid is not None:
            bias = bias + torch.where(inputs.valid, 0.0, blocked(q.dtype)).to(q.dtype)[:, None, None, :]
        p = torch.softmax(q @ k.transpose(-1, -2) * self.scale + bias, dim=-1)
        y = p @ v
        if inputs.valid is not None:  # a padding query outputs 0
            y = y * inputs.valid[:, None, :, None]
        return y

    def mix(self, x: Tensor, y: Tensor) -> Tensor:
        """Combine the head outputs y (B, H, T, D) before the output projection."""
        return y


class GroupedQueryAttention(Attention):
    """gqa: H query heads share K < H key/value heads (``config.n_kv_heads``)."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config, kv_heads=config.n_kv_heads)


class MixtureOfHeads(Attention):
    """moh: g = softmax((x W_g + b_g) / r_temp) over heads; head h's output is scaled by H g_h
    (a uniform gate is exactly mha)."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config)
        self.gate = Linear(config.n_emb, config.n_heads, config.bias)
        self.temp = config.r_temp

    def mix(self, x: Tensor, y: Tensor) -> Tensor:
        g = torch.softmax(self.gate(x) / self.temp, dim=-1)  # (B, T, H)
        return y * (self.n_heads * g.transpose(1, 2)[..., None])


class SwitchHead(Attention):
    """swh: z = (x W_g + b_g) / r_temp; only head argmax_h z reaches the output projection (a hard choice:
    training passes the soft gate's gradient straight through; the forward is this)."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config)
        self.gate = Linear(config.n_emb, config.n_heads, config.bias)
        self.temp = config.r_temp

    def mix(self, x: Tensor, y: Tensor) -> Tensor:
        chosen = F.one_hot((self.gate(x) / self.temp).argmax(-1), self.n_heads).to(y.dtype)  # (B, T, H)
        return y * chosen.transpose(1, 2)[..., None]


class FocusedAttention(Attention):
    """rfa: query t attends to the W most recent keys (itself included) and one memory slot holding the
    mean key and value of every real position that has left the window:

        window(t) = {t-W+1, ..., t},   mk_t = mean_{j<=t-W} k_j,   mv_t = mean_{j<=t-W} v_j
        p = softmax(scale * [q_t . k_j for j in window(t), q_t . mk_t]),   y_t = p_win v + p_mem mv_t

    The memory slot exists once some real position has left the window."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config)
        self.window = config.window

    def attend(self, q: Tensor, k: Tensor, v: Tensor, inputs: Inputs) -> Tensor:
        b, h, t, d = q.shape
        w = self.window
        ok = torch.ones(b, 1, t, 1, dtype=q.dtype, device=q.device) if inputs.valid is None \
            else inputs.valid[:, None, :, None].to(q.dtype)

        def left_the_window(z: Tensor) -> Tensor:
            """Row t: the sum of z over positions <= t - W (a prefix sum shifted by W)."""
            return F.pad(torch.cumsum(z, dim=2), (0, 0, w, 0))[:, :, :t]

        count = left_the_window(ok)
        inv_n = torch.where(count > 0, 1.0 / count.clamp(min=1.0), torch.zeros_like(count))
        mem_k, mem_v = left_the_window(k * ok) * inv_n, left_the_window(v * ok) * inv_n
        # window: key j is seen by query i when i - W < j <= i and j is a real token
        i, j = torch.arange(t, device=q.device)[:, None], torch.arange(t, device=q.device)[None, :]
        seen = (j <= i) & (j > i - w) & (ok[:, :, None, :, 0] > 0)  # (B, 1, T, T)
        scores = torch.cat([q @ k.transpose(-1, -2), (q * mem_k).sum(-1, keepdim=True)], dim=-1) * self.scale
        usable = torch.cat([seen.expand(b, h, t, t), (count > 0).expand(b, h, t, 1)], dim=-1)
        p = torch.softmax(scores + torch.where(usable, 0.0, blocked(q.dtype)).to(q.dtype), dim=-1)
        if inputs.valid is not None:  # a padding query outputs 0
            p = p * ok
        return p[..., :t] @ v + p[..., t:] * mem_v


# ---- sequence mixers: prefix means (aft, gla) --------------------------------------------------------

class PrefixMean(nn.Module):
    """Query-free linear attention: [k | v] = x W_kv + b, per-channel weights w = f(k) >= 0,
    y_t = sum_{j<=t} w_j v_j / (eps + sum_{j<=t} w_j), out = y W_o + b_o. A padding position has a zero
    key and weight (it changes nothing) and outputs 0."""

    eps = 0.0

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.width = config.head_width
        self.kv = Linear(config.n_emb, 2 * self.width, config.bias)
        self.proj = Linear(self.width, config.n_emb, config.bias)

    def key_weights(self, k: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        kv = self.kv(x)
        k, v = kv[..., :self.width], kv[..., self.width:]
        keep = inputs.keep(x.dtype)
        if keep is not None:
            k = k * keep
        w = self.key_weights(k)
        if keep is not None:
            w = w * keep
        y = prefix_mean(w, v, self.eps)
        if keep is not None:
            y = y * keep
        return self.proj(y)


class AttentionFree(PrefixMean):
    """aft: w = exp(20 tanh(k / 20)), a soft-capped exp(k) (weights within [2e-9, 5e8]: no shift needed)."""

    key_cap = 20.0

    def key_weights(self, k: Tensor) -> Tensor:
        return torch.exp(self.key_cap * torch.tanh(k / self.key_cap))


class GatedLinearAttention(PrefixMean):
    """gla: a_t = sum_{i<K} u_i * k_{t-i} + c (a causal depthwise conv of K = n_gla_taps taps over the
    keys, zeros before the start), w = ReLU(a), eps = 1e-3 (an always-present zero value)."""

    eps = 1e-3

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config)
        self.taps = nn.Parameter(torch.zeros(config.n_gla_taps, self.width))
        self.shift = nn.Parameter(torch.zeros(self.width)) if config.bias else None

    def key_weights(self, k: Tensor) -> Tensor:
        n, t = self.taps.shape[0], k.shape[1]
        padded = F.pad(k, (0, 0, n - 1, 0))  # n - 1 zero keys before the first position
        a = sum(self.taps[i] * padded[:, n - 1 - i:n - 1 - i + t] for i in range(n))
        if self.shift is not None:
            a = a + self.shift
        return torch.relu(a)


# ---- sequence mixers: the seed's layer (conv, induction) ------------------------------------------

class DynamicConv(nn.Module):
    """conv: each position computes its own small kernels. For each dilation di in turn:

        w[t] = softmax over taps of (cur[t] W_k + b_k)      (G, k): one kernel per group of C/G channels
        out[t] = sum_j w[t, g, j] * cur[t - (k-1-j) di]      (zeros before the start)
        cur = cur + sigmoid(out W_gate + b) * out

    then out = cur W_o + b_o. Static kernels (``c_conv_static``) are b_k alone, the same at every
    position. Padding tokens are zeroed on the way in."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        c = config.n_emb
        self.groups, self.taps, self.dilations = config.n_conv_groups, config.n_conv_taps, config.conv_dilations
        self.static = config.c_conv_static
        if self.static:
            self.kernels = nn.ParameterList([nn.Parameter(torch.zeros(self.groups * self.taps)) for _ in self.dilations])
        else:
            self.kernels = nn.ModuleList([Linear(c, self.groups * self.taps) for _ in self.dilations])
        self.gates = nn.ModuleList([Linear(c, c, config.bias) for _ in self.dilations])
        self.proj = Linear(c, c, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        b, t, c = x.shape
        g, k = self.groups, self.taps
        keep = inputs.keep(x.dtype)
        cur = x if keep is None else x * keep
        for kernel, gate, di in zip(self.kernels, self.gates, self.dilations):
            logits = kernel.expand(b, t, g * k) if self.static else kernel(cur)
            w = torch.softmax(logits.view(b, t, g, k), dim=-1)
            reach = (k - 1) * di
            padded = F.pad(cur, (0, 0, reach, 0)).view(b, reach + t, g, c // g)
            out = sum(w[..., j, None] * padded[:, reach - (k - 1 - j) * di:][:, :t] for j in range(k))
            out = out.reshape(b, t, c)
            cur = cur + torch.sigmoid(gate(out)) * out
        return self.proj(cur)


class Induction(nn.Module):
    """induction: "what came after this token last time?". For position t, c_1..c_M are the last M
    earlier positions holding the same token id (newest first); per head of width D:

        q_t = h_t W_q,   k_j = h[c_j] W_k,   v_j = h[c_j + 1] W_v      (the token that FOLLOWED c_j)
        s_j = q_t . k_j / (sqrt(D) r_temp) for usable c_j (c_j + 1 < t, its follower real), s_sink = q_t . sink_key (same scale)
        y_t = sum_j p_j v_j + p_sink sink_value,   p = softmax(s_1..s_M, s_sink),   out = y W_o + b_o

    Without the sink a position with no usable candidate outputs 0. Padding matches nothing."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        c, h = config.n_emb, config.n_induction_heads
        self.n_heads, self.head_dim, self.m = h, c // h, config.n_induction_m
        self.scale = 1.0 / (math.sqrt(self.head_dim) * config.r_temp)
        self.qkv = Linear(c, 3 * c, config.bias)
        self.proj = Linear(c, c, config.bias)
        self.sink_key = nn.Parameter(torch.zeros(h, self.head_dim)) if config.c_induction_sink else None
        self.sink_value = nn.Parameter(torch.zeros(h, self.head_dim)) if config.c_induction_sink else None

    def candidates(self, inputs: Inputs) -> tuple[Tensor, Tensor]:
        """(B, T, M) the last M earlier positions with the same id (newest first, -1 for none) and
        whether each is usable."""
        ids, valid = inputs.ids, inputs.valid
        t = ids.shape[1]
        position = torch.arange(t, device=ids.device)
        same = (ids[:, :, None] == ids[:, None, :]) & (position[None, :] < position[:, None])[None]
        if valid is not None:  # padding matches nothing
            same = same & valid[:, :, None] & valid[:, None, :]
        earlier = torch.where(same, position[None, None, :], -1)  # (B, T, T): s where ids[s] == ids[t], s < t
        if t < self.m:
            earlier = F.pad(earlier, (0, self.m - t), value=-1)
        cand = earlier.topk(self.m, dim=-1).values  # the M largest positions, newest first
        usable = (cand >= 0) & (cand + 1 < position[None, :, None])
        if valid is not None:  # the follower must be a real token
            usable = usable & torch.gather(valid, 1, (cand + 1).clamp(0, t - 1).flatten(1)).view_as(cand)
        return cand, usable

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        b, t, c = x.shape
        h, d, m = self.n_heads, self.head_dim, self.m
        q, k, v = self.qkv(x).view(b, t, 3, h, d).unbind(2)  # (B, T, H, D) each
        cand, usable = self.candidates(inputs)

        def gather(z: Tensor, rows: Tensor) -> Tensor:  # z (B, T, H, D) at rows (B, T, M) -> (B, T, M, H, D)
            return torch.gather(z, 1, rows.reshape(b, t * m, 1, 1).expand(b, t * m, h, d)).view(b, t, m, h, d)

        kc, vc = gather(k, cand.clamp(min=0)), gather(v, cand + 1)
        scores = torch.einsum("bthd,btmhd->btmh", q, kc)
        slots = usable[..., None].expand(b, t, m, h)
        if self.sink_key is not None:
            scores = torch.cat([scores, torch.einsum("bthd,hd->bth", q, self.sink_key)[:, :, None]], dim=2)
            slots = torch.cat([slots, torch.ones_like(slots[:, :, :1])], dim=2)  # the sink is always usable
        p = torch.softmax(torch.where(slots, scores * self.scale, blocked(q.dtype)), dim=2)
        y = torch.einsum("btmh,btmhd->bthd", p[:, :, :m], vc)
        if self.sink_value is not None:
            y = y + p[:, :, m, :, None] * self.sink_value
        else:  # nothing usable and no sink: nothing to copy
            y = y * usable.any(-1)[:, :, None, None]
        return self.proj(y.reshape(b, t, c))


# ---- feed-forward networks ---------------------------------------------------------------------------

class MLP(nn.Module):
    """mlp: out = GELU(x W_up + b) W_down + b'."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.up = self.projection(config, config.n_emb, config.hidden)
        self.down = self.projection(config, config.hidden, config.n_emb)

    def projection(self, config: BabyConfig, n_in: int, n_out: int) -> nn.Module:
        return Linear(n_in, n_out, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        return self.down(gelu(self.up(x)))


class LowRankLinear(Linear):
    """y = x W + b + (alpha / r) (x A) B with A (in, r), B (r, out): a LoRA-adapted projection."""

    def __init__(self, n_in: int, n_out: int, rank: int, scale: float, bias: bool) -> None:
        super().__init__(n_in, n_out, bias)
        self.lora_a, self.lora_b = nn.Parameter(torch.zeros(n_in, rank)), nn.Parameter(torch.zeros(rank, n_out))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.scale * ((x @ self.lora_a) @ self.lora_b)


class LowRankMLP(MLP):
    """lor: mlp whose two projections are LoRA-adapted (rank n_rank, scale r_lora_alpha / n_rank)."""

    def projection(self, config: BabyConfig, n_in: int, n_out: int) -> nn.Module:
        return LowRankLinear(n_in, n_out, config.n_rank, config.r_lora_alpha / config.n_rank, config.bias)


class SwiGLU(nn.Module):
    """swi: [up | gate] = x W + b, out = (up * gate * sigmoid(gate)) W_down + b'."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.hidden = config.hidden
        self.up_gate = Linear(config.n_emb, 2 * config.hidden, config.bias)
        self.down = Linear(config.hidden, config.n_emb, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        up, gate = self.up_gate(x).split(self.hidden, dim=-1)
        return self.down(up * F.silu(gate))


class GatedLinear(nn.Module):
    """gln: [value | gate] = x W + b, out = value * sigmoid(gate) (n_emb -> n_emb, no expansion)."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.value_gate = Linear(config.n_emb, 2 * config.n_emb, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        value, gate = self.value_gate(x).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


class GroupedGatedLinear(nn.Module):
    """ggl: G groups of d = n_emb / G channels, each its own gated linear
    y_g = (x_g W_g + b_g) * sigmoid(x_g V_g + c_g); then a channel shuffle (channel g*d + j -> j*G + g).
    The weight is (n_emb, 2d): row block g is group g's [W_g | V_g]."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.groups, self.width = config.n_groups, config.n_emb // config.n_groups
        self.weight = nn.Parameter(torch.zeros(config.n_emb, 2 * self.width))
        self.bias = nn.Parameter(torch.zeros(2 * config.n_emb)) if config.bias else None

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        b, t, c = x.shape
        g, d = self.groups, self.width
        fused = torch.einsum("btgi,gio->btgo", x.view(b, t, g, d), self.weight.view(g, d, 2 * d))
        if self.bias is not None:
            fused = fused + self.bias.view(g, 2 * d)
        y = fused[..., :d] * torch.sigmoid(fused[..., d:])  # (B, T, G, d)
        return y.transpose(-1, -2).reshape(b, t, c)  # the channel shuffle


class MixtureOfExperts(nn.Module):
    """moe: p = softmax((x W_r + b_r) / r_temp) over E experts; each token's k = n_top most probable
    experts e (each an mlp) give out = sum_e p_e expert_e(x) (p not renormalised over the k)."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        e, c, h = config.n_experts, config.n_emb, config.hidden
        self.n_top, self.temp = config.n_top, config.r_temp
        self.router = Linear(c, e, config.bias)
        self.w_up, self.w_down = nn.Parameter(torch.zeros(e, c, h)), nn.Parameter(torch.zeros(e, h, c))
        self.b_up = nn.Parameter(torch.zeros(e, h)) if config.bias else None
        self.b_down = nn.Parameter(torch.zeros(e, c)) if config.bias else None

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        probs = torch.softmax(self.router(x) / self.temp, dim=-1)  # (B, T, E)
        top = probs.topk(self.n_top, dim=-1).indices
        weight = torch.zeros_like(probs).scatter(-1, top, probs.gather(-1, top))  # p_e on the chosen, else 0
        # every expert on every token (small models: simpler than routing rows), weighed
        h = torch.einsum("btc,ech->bteh", x, self.w_up)
        if self.b_up is not None:
            h = h + self.b_up
        out = torch.einsum("bteh,ehc->btec", gelu(h), self.w_down)
        if self.b_down is not None:
            out = out + self.b_down
        return torch.einsum("bte,btec->btc", weight, out)


class NetworkFree(nn.Module):
    """nft: a causal AFT-style mixer in the feed-forward slot: [q | k | v] = x W + b,
    w = sigmoid(k) (0 at padding), y_t = sigmoid(q_t) * sum_{s<=t} w_s v_s / sum_{s<=t} w_s, out = y W_o + b_o."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        self.qkv = Linear(config.n_emb, 3 * config.n_emb, config.bias)
        self.proj = Linear(config.n_emb, config.n_emb, config.bias)

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        w = torch.sigmoid(k)
        keep = inputs.keep(x.dtype)
        if keep is not None:
            w = w * keep
        return self.proj(torch.sigmoid(q) * prefix_mean(w, v, 0.0))


MIXERS: dict[str, type[nn.Module]] = {
    "mha": Attention, "gqa": GroupedQueryAttention, "moh": MixtureOfHeads, "swh": SwitchHead,
    "rfa": FocusedAttention, "aft": AttentionFree, "gla": GatedLinearAttention, "conv": DynamicConv,
    "induction": Induction,
}
NETWORKS: dict[str, type[nn.Module]] = {
    "mlp": MLP, "lor": LowRankMLP, "swi": SwiGLU, "gln": GatedLinear, "ggl": GroupedGatedLinear,
    "moe": MixtureOfExperts, "nft": NetworkFree,
}


# ---- the model -------------------------------------------------------------------------------------

class Residual(nn.Module):
    """One part of a block: pre-norm x + f(norm(x)), or post-norm norm(x + f(x))."""

    def __init__(self, config: BabyConfig, inner: nn.Module) -> None:
        super().__init__()
        self.norm = build_norm(config.norm, config.n_emb, config.norm_eps)
        self.inner = inner
        self.drop = nn.Dropout(config.dropout)
        self.post = config.sequence == "post"

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        if self.post:
            return self.norm(x + self.drop(self.inner(x, inputs)))
        return x + self.drop(self.inner(self.norm(x), inputs))


class Block(nn.Module):
    """One layer: a residual part per mixer of ``config.mixers``, then one for ``config.network``."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__()
        inners = [MIXERS[name](config) for name in config.mixers]
        if config.network:
            inners.append(NETWORKS[config.network](config))
        self.parts = nn.ModuleList([Residual(config, inner) for inner in inners])

    def forward(self, x: Tensor, inputs: Inputs) -> Tensor:
        for part in self.parts:
            x = part(x, inputs)
        return x


class BabyPreTrainedModel(PreTrainedModel):
    config_class = BabyConfig
    base_model_prefix = "baby"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        """Fresh weights, for ``from_config`` (an export carries its own): N(0, 0.02) matrices, zero biases,
        unit gains, gla's taps the identity (the NumPy package's init, less its smaller residual projections)."""
        for name, p in module.named_parameters(recurse=False):
            with torch.no_grad():
                if name == "gain":
                    p.fill_(1.0)
                elif name == "taps":
                    p.zero_()
                    p[0] = 1.0
                elif name in ("bias", "b_up", "b_down", "shift") or p.dim() == 1:
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02)


class BabyForCausalLM(BabyPreTrainedModel, GenerationMixin):
    """Token (+ learned position) embeddings, the blocks, a final norm and the head (the token embedding
    transposed when tied; a bias on the logits with ``head_bias``). Sequences longer than n_ctx are
    refused; ``generate`` feeds the last n_ctx tokens, as the NumPy package's generation does."""

    def __init__(self, config: BabyConfig) -> None:
        super().__init__(config)
        self.tok = nn.Embedding(config.vocab_size, config.n_emb)
        self.pos = nn.Embedding(config.n_ctx, config.n_emb) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.norm = build_norm(config.norm_final, config.n_emb, config.norm_final_eps)
        self.head = None if config.tie else Linear(config.n_emb, config.vocab_size, bias=False)
        self.head_bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.head_bias else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.tok

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.tok = value

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                labels: Tensor | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        t = input_ids.shape[1]
        if t > self.config.n_ctx:
            raise ValueError(f"sequence of {t} tokens exceeds n_ctx={self.config.n_ctx}")
        valid = None if attention_mask is None else attention_mask.bool()
        if position_ids is not None:
            positions = position_ids
        elif valid is None:
            positions = torch.arange(t, device=input_ids.device).expand_as(input_ids)
        else:  # left padding: positions count real tokens only
            positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        inputs = Inputs(input_ids, positions, valid)
        x = self.tok(input_ids)
        if self.pos is not None:
            x = x + self.pos(positions)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, inputs)
        h = self.norm(x)
        logits = h @ self.tok.weight.T if self.head is None else self.head(h)
        if self.head_bias is not None:
            logits = logits + self.head_bias
        loss = None
        if labels is not None:  # the usual shift: position t predicts token t + 1
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """No cache: every step runs the whole window again, the last n_ctx tokens (what the NumPy
        package's generation sees once the context is full)."""
        n = self.config.n_ctx
        return {"input_ids": input_ids[:, -n:], "attention_mask": None if attention_mask is None else attention_mask[:, -n:]}
