"""Cost estimation: price x (input tokens + expected output tokens of the target)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigurationError


@dataclass(frozen=True)
class Price:
    """USD per token; ``source`` says where the price came from (for the decision record)."""

    input_cost_per_token: float
    output_cost_per_token: float
    source: str = "unknown"

    def __post_init__(self) -> None:
        for name in ("input_cost_per_token", "output_cost_per_token"):
            v = getattr(self, name)
            if not (v >= 0.0) or v == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r} (price source: {self.source})")

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        """USD for a call's actual token usage."""
        return self.input_cost_per_token * input_tokens + self.output_cost_per_token * output_tokens


def given_prices(prices: Mapping[str, Sequence[float]] | None, source: str) -> dict[str, Price]:
    """Prices as a caller gives them, ``{target: (input, output)}`` in USD per token, checked."""
    out: dict[str, Price] = {}
    for target, pair in (prices or {}).items():
        try:
            given_in, given_out = pair
            out[str(target)] = Price(float(given_in), float(given_out), source)
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"prices[{target!r}] must be (input, output) USD per token, two numbers >= 0; "
                                     f"got {pair!r}") from err
    return out


def _per_token(price: Price) -> float:
    return price.input_cost_per_token + price.output_cost_per_token


def lowest_price(prices: Sequence[Price]) -> Price | None:
    """The cheapest of several deployments' prices (input + output USD per token); None if there are none. What a
    target costs at routing time and in a collected dataset's ``models.json``."""
    return min(prices, key=_per_token, default=None)


def highest_price(prices: Sequence[Price]) -> Price | None:
    """The dearest of several deployments' prices: what a budget reserves before a call (any of a model group's
    deployments may serve it)."""
    return max(prices, key=_per_token, default=None)


def mean_price(prices: Sequence[Price]) -> Price | None:
    """The mean of several deployments' prices (None if there are none), its source theirs where they share one, else
    ``deployments``: what a target costs where litellm's own strategy picks which of its deployments serves."""
    if not prices:
        return None
    sources = {p.source for p in prices}
    return Price(sum(p.input_cost_per_token for p in prices) / len(prices),
                 sum(p.output_cost_per_token for p in prices) / len(prices),
                 sources.pop() if len(sources) == 1 else "deployments")


def manifest_price(target: Any) -> Price:
    """The training-time price a bundle records for a target (a missing side counts as 0)."""
    return Price(target.input_cost_per_token or 0.0, target.output_cost_per_token or 0.0, "manifest")


def estimate_cost(price: Price, input_tokens: int, expected_output_tokens: float) -> float:
    """Expected USD cost of one call."""
    return price.input_cost_per_token * max(int(input_tokens), 1) + \
        price.output_cost_per_token * float(expected_output_tokens)


def cost_matrix(prices: Sequence[tuple[float, float]], n_tokens: np.ndarray,
                expected_out: Sequence[float]) -> np.ndarray:
    """(n, K) expected USD cost of sending each prompt to each target: the vectorised :func:`estimate_cost`;
    ``prices`` are (input, output) USD per token per target, ``n_tokens`` the prompts' input token counts."""
    if len(prices) != len(expected_out):
        raise ValueError(f"{len(prices)} prices but {len(expected_out)} expected output lengths")
    pin = np.array([p[0] for p in prices], dtype=np.float64)
    pout = np.array([p[1] for p in prices], dtype=np.float64)
    return np.maximum(np.asarray(n_tokens), 1)[:, None] * pin[None, :] + (pout * np.asarray(expected_out))[None, :]
