"""The configuration of a Little Baby model exported as Hugging Face remote code.

This file and ``modeling_baby.py`` are copied into every exported directory; ``config.json`` names
them in its ``auto_map``, so that ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``
builds the model. They depend on torch and transformers only (never on the ``baby`` package).

The fields are the resolved architecture of the run (its ``architecture`` record): defaults filled
in, variant names canonical. The run's own settings travel in ``baby`` for ``python -m baby import``.
"""
from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class BabyConfig(PretrainedConfig):
    model_type = "baby"
    # the names other tools look for (lm-eval reads max_position_embeddings or n_ctx for its window)
    attribute_map = {"hidden_size": "n_emb", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                     "max_position_embeddings": "n_ctx", "num_key_value_heads": "n_kv_heads"}

    def __init__(
        self,
        vocab_size: int = 256,
        n_ctx: int = 64,
        n_emb: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        n_kv_heads: int = 4,
        head_dim: int = 32,  # the width of one attention head
        head_width: int = 128,  # the width of all heads together (head_size; aft and gla: their key width)
        hidden: int = 512,
        mixers: list[str] | None = None,  # the sequence mixers of a block, in order (e.g. ["conv", "induction"])
        network: str = "mlp",  # the feed-forward part ("" for none)
        norm: str = "layer",  # "layer" (LayerNorm) or "rms" (RMSNorm)
        norm_eps: float = 1e-5,
        norm_final: str = "layer",
        norm_final_eps: float = 1e-5,
        sequence: str = "pre",  # "pre": x + f(norm(x)); "post": norm(x + f(x))
        position: str = "learned",  # "learned", "rope" or "none"
        rope_base: float = 10000.0,
        bias: bool = True,  # biases in the linear projections
        tie: bool = True,  # the head is the token embedding, transposed
        head_bias: bool = False,  # a bias on the logits
        r_temp: float = 1.0,  # softmax temperature of attention scores, head gates and the moe router
        dropout: float = 0.0,
        # the settings of the variants (each module reads its own; these are our defaults)
        n_conv_groups: int = 16,
        n_conv_taps: int = 3,
        conv_dilations: list[int] | None = None,
        c_conv_static: bool = False,
        n_induction_m: int = 5,
        n_induction_heads: int = 4,
        c_induction_sink: bool = True,
        n_gla_taps: int = 4,
        window: int = 16,  # rfa: the keys each query attends to, itself included
        n_groups: int = 4,
        n_experts: int = 4,
        n_top: int = 2,
        n_rank: int = 8,
        r_lora_alpha: float = 16.0,
        **kwargs: Any,
    ) -> None:
        self.vocab_size, self.n_ctx, self.n_emb, self.n_layers = vocab_size, n_ctx, n_emb, n_layers
        self.n_heads, self.n_kv_heads, self.head_dim, self.hidden = n_heads, n_kv_heads, head_dim, hidden
        self.head_width = head_width
        self.mixers, self.network = list(mixers or ["mha"]), network
        self.norm, self.norm_eps, self.norm_final, self.norm_final_eps = norm, norm_eps, norm_final, norm_final_eps
        self.sequence, self.position, self.rope_base = sequence, position, rope_base
        self.bias, self.tie, self.head_bias, self.r_temp, self.dropout = bias, tie, head_bias, r_temp, dropout
        self.n_conv_groups, self.n_conv_taps = n_conv_groups, n_conv_taps
        self.conv_dilations, self.c_conv_static = list(conv_dilations or [1, 2, 4]), c_conv_static
        self.n_induction_m, self.n_induction_heads, self.c_induction_sink = n_induction_m, n_induction_heads, c_induction_sink
        self.n_gla_taps, self.window, self.n_groups = n_gla_taps, window, n_groups
        self.n_experts, self.n_top, self.n_rank, self.r_lora_alpha = n_experts, n_top, n_rank, r_lora_alpha
        # a tied head is computed from the embedding itself: there is no second tensor to tie
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)
