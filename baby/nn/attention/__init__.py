"""Attention variants; importing a variant module registers it."""
from baby.nn.attention import aft, gla, gqa, mha, moh, rfa, swh  # noqa: F401
