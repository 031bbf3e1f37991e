"""The one list of variant modules: importing them runs their ``@register`` lines. Adding a variant is
its file plus one name here. ``core`` calls ``load()`` on the first registry lookup."""
from __future__ import annotations


def load() -> None:
    from baby.nn import layers  # noqa: F401, PLC0415 - the norms
    from baby.nn.mixers import aft, gla, gqa, mha, moh, rfa, swh  # noqa: F401, PLC0415 - attention
    from baby.nn.mixers import conv, induction  # noqa: F401, PLC0415 - attention-free
    from baby.nn.network import ggl, gln, lor, mlp, moe, nft, swi  # noqa: F401, PLC0415
