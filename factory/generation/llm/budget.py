"""Hard spending caps: requests, tokens and USD, checked before every request is sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from factory.spec import BudgetSpec, Price


class BudgetExhausted(RuntimeError):
    """A cap was reached; the run stops cleanly and keeps what was paid for."""


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6


@dataclass
class Budget:
    """Caps with reservations: a request reserves its worst case (prompt + ``max_tokens`` per choice)
    before it is sent and settles its real usage when it completes, so the spend never passes a cap."""

    max_requests: int | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    price: Price = field(default_factory=Price)
    requests: int = 0
    tokens: int = 0
    usd: float = 0.0
    _reserved_requests: int = 0
    _reserved_tokens: int = 0
    _reserved_usd: float = 0.0
    stopped: str | None = None

    @classmethod
    def from_spec(cls, spec: BudgetSpec, model: str, spent: Mapping[str, float] | None = None) -> Budget:
        """The spec's caps, priced for ``model``; ``spent`` (requests, tokens, usd: what a spec's earlier runs
        paid, :meth:`factory.store.Store.spend_for_spec`) counts against them from the start."""
        spent = spent or {}
        return cls(spec.max_requests, spec.max_tokens, spec.max_usd, spec.price(model),
                   int(spent.get("requests", 0)), int(spent.get("tokens", 0)), float(spent.get("usd", 0.0)))

    def reserve(self, prompt_tokens: int, max_completion_tokens: int) -> tuple[int, float]:
        """Reserve one request's worst case, or raise :class:`BudgetExhausted`."""
        tokens = prompt_tokens + max_completion_tokens
        usd = cost_usd(self.price, prompt_tokens, max_completion_tokens)
        if self.max_requests is not None and self.requests + self._reserved_requests + 1 > self.max_requests:
            self._stop(f"max_requests={self.max_requests} reached")
        if self.max_tokens is not None and self.tokens + self._reserved_tokens + tokens > self.max_tokens:
            self._stop(f"max_tokens={self.max_tokens} reached")
        if self.max_usd is not None and self.usd + self._reserved_usd + usd > self.max_usd:
            self._stop(f"max_usd={self.max_usd} reached")
        self._reserved_requests += 1
        self._reserved_tokens += tokens
        self._reserved_usd += usd
        return tokens, usd

    def settle(self, reservation: tuple[int, float], tokens: int | None, usd: float | None) -> None:
        """Replace a reservation by the real usage (None: the request was never paid for)."""
        self._reserved_requests -= 1
        self._reserved_tokens -= reservation[0]
        self._reserved_usd -= reservation[1]
        if tokens is not None:
            self.requests += 1
            self.tokens += tokens
            self.usd += usd or 0.0

    def _stop(self, why: str) -> None:
        self.stopped = self.stopped or why
        raise BudgetExhausted(why)
