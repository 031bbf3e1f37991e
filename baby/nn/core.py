"""Parameters, modules and the registry every variant lives in.

A module keeps what ``backward`` needs in a small cache during ``forward``; ``backward`` returns the
input gradient and *adds* into its parameters' ``grad`` (the trainer zeroes them once per step, which
is what tied weights and gradient accumulation need).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from baby import backend
from baby.nn.settings import Setting


class Parameter:
    """A tensor with its gradient. ``decay`` marks matrices for weight decay (not biases, norms or
    gains); ``frozen`` keeps it out of the optimizer (LoRA's base when finetuning)."""

    __slots__ = ("data", "grad", "decay", "frozen")

    def __init__(self, data: Any, decay: bool = False) -> None:
        self.data = data
        self.grad = backend.xp.zeros_like(data)
        self.decay = decay
        self.frozen = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


class Module:
    """Base class: parameter discovery, train/eval mode. Subclasses write forward and backward."""

    training: bool = True

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for name, value in vars(self).items():
            for sub_name, item in _children(name, value):
                full = f"{prefix}{sub_name}"
                if isinstance(item, Parameter):
                    if id(item) not in seen:  # a tied parameter is listed once
                        seen.add(id(item))
                        yield full, item
                elif isinstance(item, Module):
                    for pair in item.named_parameters(full + "."):
                        if id(pair[1]) not in seen:
                            seen.add(id(pair[1]))
                            yield pair

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for name, value in vars(self).items():
            for _, item in _children(name, value):
                if isinstance(item, Module):
                    yield from item.modules()

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_loss(self) -> float:
        """Auxiliary loss added by this module in the last forward (MoE load balancing)."""
        return 0.0


def _children(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (Parameter, Module)):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, (Parameter, Module)):
                yield f"{name}.{i}", item


class Variant(Module):
    """A module chosen by name in the config (a mixer or a network). Everything the package knows
    about a variant is declared on its class: the hooks below (rules, memory, FLOPs, decoding state),
    its settings (``register(..., settings=...)``), which inside view ``inspect`` draws and which
    Hugging Face layer it is. A new variant overrides what applies; every default is safe."""

    # Which view `inspect` draws from what forward notes (``Context.note``): "attention" (probs per
    # head, optional head gate), "window" (rfa: window + memory slot), "prefix mean" (effective
    # weights w_j / den_t), "induction", "conv"; "" draws none (a per-token layer mixes nothing).
    inside_view: str = ""
    # The Hugging Face model classes whose layer this variant is, for a native export ("gpt2", "llama").
    hf_families: tuple[str, ...] = ()

    @classmethod
    def kv_heads(cls, cfg: Any) -> int:
        """Key/value heads of its cache and of an export (attention: n_heads; gqa: fewer)."""
        return cfg.n_heads

    @classmethod
    def score_floats(cls, cfg: Any, n_ctx: int) -> float:
        """Floats per token one training step keeps beyond the generic estimate of ``baby.memory``
        (16 * n_emb per part): quadratic attention keeps a row of scores per head."""
        return 0.0

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ConfigError for a combination of settings this variant cannot build or train with.
        The config calls it at validation time for every chosen variant (default: nothing to check)."""

    @classmethod
    def check_config_unchosen(cls, cfg: Any) -> None:
        """Raise ConfigError when a setting of this variant is set although the variant is not chosen
        and the setting would silently do nothing. Called for every registered variant not chosen."""

    @classmethod
    def prepare_model(cls, model: Module, cfg: Any) -> None:
        """Called once on the whole model after it is built, for every chosen variant (lor freezes
        all but its low-rank matrices here when c_freeze_base is set)."""

    def mixing_flops(self, n_ctx: int) -> float:
        """Forward FLOPs per token beyond the weight matmuls (mixing over ``n_ctx`` positions)."""
        return 0.0

    def decoding_state(self, ctx: Any) -> dict[str, Any] | None:
        """This module's state across incremental decoding calls (a dict it owns), or None in a full
        forward, when the whole sequence is given at once and backward may follow."""
        return ctx.module_state(self) if ctx.decoding else None


class Mixer(Variant):
    """A sequence mixer (``c_attention``): (B, T, C) -> (B, T, C), causal; mixes across positions."""

    uses_rope: bool = False  # rotates its queries and keys when c_position is "rope"


class Network(Variant):
    """A feed-forward variant (``c_network``): (B, T, C) -> (B, T, C) in the second residual branch."""


# ----------------------------------------------------------------------------------------------
# Registry: config names -> classes. Kinds: "mixer" (every sequence mixer: attention variants, conv,
# induction), "network" (feed-forward variants), "norm". ``register`` fills it as each variant's
# module is imported; ``baby.nn.variants`` imports them all and answers lookups over the whole list.

BASES: dict[str, type] = {"mixer": Mixer, "network": Network}

@dataclass
class Entry:
    name: str
    cls: type
    aliases: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = field(default_factory=tuple)


REGISTRY: dict[str, dict[str, Entry]] = {}


def register(kind: str, name: str, aliases: tuple[str, ...] = (),
             settings: tuple[Setting, ...] = ()) -> Callable[[type], type]:
    """Class decorator: ``@register("mixer", "mha")`` makes ``c_attention: "mha"`` build it."""
    def wrap(cls: type) -> type:
        if not issubclass(cls, BASES.get(kind, object)):
            raise TypeError(f"{kind} {name!r}: {cls.__name__} must derive from {BASES[kind].__name__}")
        entry = Entry(name, cls, aliases, settings)
        table = REGISTRY.setdefault(kind, {})
        for key in (name, *aliases):
            if key in table and table[key].cls is not cls:
                raise ValueError(f"{kind} {key!r} registered twice")
            table[key] = entry
        cls.registry_name = name
        return cls
    return wrap
