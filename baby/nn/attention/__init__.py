"""Attention variants; importing a variant module registers it."""
from baby.nn.attention import mha  # noqa: F401
