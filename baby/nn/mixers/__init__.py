"""Attention-free sequence mixers (dynamic conv, induction); importing a module registers it."""
