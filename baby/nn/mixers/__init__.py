"""Every sequence mixer (attention variants, dynamic conv, induction); importing a module registers it."""
from baby.nn.mixers import aft, gla, gqa, mha, moh, rfa, swh  # noqa: F401
from baby.nn.mixers import conv, induction  # noqa: F401
