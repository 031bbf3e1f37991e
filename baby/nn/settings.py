"""The settings machinery every layer shares: what a setting is and the error a bad one raises.

A leaf module (it imports nothing from baby), so ``baby.nn`` can declare settings and refuse bad
combinations without importing the config that sits above it; ``baby.config`` re-exports both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type, or out of range."""


# What a setting steers. The role decides where the settings table lists it, and "architecture" is
# what a model file records (what rebuilding the model's computation needs without its run).
ROLES = {
    "architecture": "what the model computes (recorded in every model file)",
    "optimisation": "how training updates the weights, and for how long",
    "data": "how the text becomes training windows",
    "runtime": "where and how a run executes, and what it writes on the way",
    "sampling": "the completion written after training",
}


@dataclass(frozen=True)
class Setting:
    """A config key: type, default, allowed range, a one-line doc, its role (see ROLES) and whether it
    may change when a run is resumed (only what steers the rest of the schedule and the bookkeeping,
    never the model or the data, so that the checkpoint stays valid)."""

    key: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    role: str = "architecture"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"setting {self.key!r}: role {self.role!r} is not one of {', '.join(ROLES)}")


def split_list(key: str, text: str, sep: str, example: str) -> list[str]:
    """The items of a list setting (``"conv+induction"``, ``"1M,2M"``); "" is the empty list. Every
    list setting is read here, so an empty item (``"+"``, ``",,,"``, a trailing separator) is refused
    the same way everywhere."""
    if text == "":
        return []
    items = [part.strip() for part in text.split(sep)]
    if not all(items):
        raise ConfigError(f"{key}={text!r}: an empty item between {sep!r} separators; expected e.g. {example!r}")
    return items


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: a relation between settings that a variant needs."""
    if not ok:
        raise ConfigError(message)
