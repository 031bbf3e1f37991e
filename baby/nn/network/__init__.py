"""Feed-forward variants; importing a variant module registers it."""
from baby.nn.network import mlp  # noqa: F401
