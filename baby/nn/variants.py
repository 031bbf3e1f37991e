"""The one list of variants, and lookups over it. Importing this module imports every variant module,
whose ``@register`` lines fill the registry of ``core``; adding a variant is its file plus one name
here. Whoever needs the whole list (the config, the model, the tools) imports this module; the
variants themselves import only ``core``."""
from __future__ import annotations

from baby.nn import layers  # noqa: F401 - the norms
from baby.nn.core import REGISTRY, Entry
from baby.nn.mixers import aft, conv, gla, gqa, induction, mha, moh, rfa, swh  # noqa: F401 - attention  # noqa: F401 - attention-free
from baby.nn.network import ggl, gln, lor, mlp, moe, nft, swi  # noqa: F401 - feed-forward

__all__ = ["entries", "lookup", "names"]


def lookup(kind: str, name: str) -> Entry:
    """The registered class (and its settings) of a config name: ``lookup("mixer", "mha").cls``."""
    table = REGISTRY.get(kind, {})
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}: allowed {names(kind)}")
    return table[name]


def names(kind: str) -> list[str]:
    """All names (aliases included) of a kind, sorted."""
    return sorted(REGISTRY.get(kind, {}))


def entries(kind: str) -> list[Entry]:
    """Each registered class of a kind once (no aliases), by name: the order never depends on which
    module happened to be imported first."""
    return sorted({e.name: e for e in REGISTRY.get(kind, {}).values()}.values(), key=lambda e: e.name)
