"""gqa: grouped-query attention. H query heads share K < H key/value heads, H/K query heads per
group: the QKV projection and the KV cache shrink from 3H to H + 2K heads. K = H is mha, K = 1 is
multi-query attention. The grouping itself lives in HeadAttention.attend_heads (keys are broadcast
over the queries of their group, never copied)."""
from __future__ import annotations

from typing import Any

from baby.nn.core import register
from baby.nn.mixers.head_attention import HeadAttention
from baby.nn.settings import Setting, require


def default_kv_heads(n_heads: int) -> int:
    """The largest divisor of n_heads that is at most n_heads / 2 (1 for one head)."""
    return max([k for k in range(1, n_heads // 2 + 1) if n_heads % k == 0], default=1)


@register("mixer", "gqa", settings=(
    Setting("n_kv_heads", int, 0, "gqa: key/value heads, each shared by n_heads/n_kv_heads query heads; "
            "must divide n_heads (0: the largest divisor of n_heads up to n_heads/2)", 0, 1024),
))
class GroupedQueryAttention(HeadAttention):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        super().check_config(cfg)
        n = cfg.n_kv_heads or default_kv_heads(cfg.n_heads)
        require(n <= cfg.n_heads and cfg.n_heads % n == 0,
                f"n_kv_heads={n} must divide n_heads={cfg.n_heads} "
                f"(allowed: {[k for k in range(1, cfg.n_heads + 1) if cfg.n_heads % k == 0]})")

    hf_families = ("llama",)

    @classmethod
    def kv_heads(cls, cfg: Any) -> int:
        return cfg.n_kv_heads or default_kv_heads(cfg.n_heads)
