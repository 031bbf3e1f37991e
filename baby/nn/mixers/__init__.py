"""Attention-free sequence mixers (dynamic conv, induction); importing a module registers it."""
from baby.nn.mixers import conv, induction  # noqa: F401
