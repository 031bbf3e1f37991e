"""What every sequence mixer may need besides its input, built once per model forward."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Context:
    """ids: (B, T) token ids of this forward. positions: (B, T) absolute positions (from the valid
    mask when a batch is left-padded). valid: (B, T) bool, False at padding, or None. rng: dropout
    generator of this step (None in eval). state: per-module decoding state (None when training:
    then the whole sequence is given at once and backward may follow). capture: None, or a dict the
    modules fill with what their forward computed (probabilities, gates, kernels) keyed by module,
    for ``baby.inspect``; off by default, so training never pays for it."""

    ids: Any
    positions: Any
    valid: Any = None
    rng: Any = None
    state: dict[Any, Any] | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    grad_scale: Any = 1.0  # fp16 loss scale: a module adding its own loss term scales that gradient too
    capture: dict[Any, dict[str, Any]] | None = None
    residual: list[Any] | None = None  # when a list, the model appends each block's residual RMS (health)

    @property
    def decoding(self) -> bool:
        return self.state is not None

    def module_state(self, module: Any) -> dict[str, Any]:
        """The decoding state of one module (a fresh dict on its first use)."""
        assert self.state is not None, "module_state is only for incremental decoding"
        return self.state.setdefault(id(module), {})

    def once(self, key: str, build: Callable[[], Any]) -> Any:
        """A value computed once per forward and shared by all layers (e.g. the induction index)."""
        if key not in self.shared:
            self.shared[key] = build()
        return self.shared[key]

    def note(self, module: Any, **values: Any) -> None:
        """Record what ``module``'s forward just computed, when a capture was asked for (else free)."""
        if self.capture is not None:
            self.capture.setdefault(module, {}).update(values)
