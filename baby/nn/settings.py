"""The settings machinery every layer shares: what a setting is and the error a bad one raises.

A leaf module (it imports nothing from baby), so ``baby.nn`` can declare settings and refuse bad
combinations without importing the config that sits above it; ``baby.config`` re-exports both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Setting:
    """A config key a registered class needs: type, default, allowed range and a one-line doc."""

    key: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: a relation between settings that a variant needs."""
    if not ok:
        raise ConfigError(message)
