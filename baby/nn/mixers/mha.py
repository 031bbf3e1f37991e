"""mha: multi-head causal softmax attention, separate Q, K, V per head; O(T^2) per sequence."""
from __future__ import annotations

from baby.nn.core import register
from baby.nn.mixers.head_attention import HeadAttention


@register("mixer", "mha")
class MultiHeadAttention(HeadAttention):
    """Everything is in HeadAttention; mha is the plain case the other variants specialise."""
