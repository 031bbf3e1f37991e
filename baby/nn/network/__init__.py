"""Feed-forward variants; importing a variant module registers it."""
from baby.nn.network import ggl, gln, lor, mlp, moe, nft, swi  # noqa: F401
