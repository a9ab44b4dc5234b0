"""Cost estimation: price x (input tokens + expected output tokens of the target)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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


def manifest_price(target: Any) -> Price:
    """The training-time price a bundle records for a target (a missing side counts as 0)."""
    return Price(target.input_cost_per_token or 0.0, target.output_cost_per_token or 0.0, "manifest")


def estimate_cost(price: Price, input_tokens: int, expected_output_tokens: float) -> float:
    """Expected USD cost of one call."""
    return price.input_cost_per_token * max(int(input_tokens), 1) + \
        price.output_cost_per_token * float(expected_output_tokens)


def estimate_costs(prices: list[Price], input_tokens: int, expected_output_tokens: list[float]) -> np.ndarray:
    if len(prices) != len(expected_output_tokens):
        raise ValueError(f"{len(prices)} prices but {len(expected_output_tokens)} expected output lengths")
    return np.array([estimate_cost(p, input_tokens, o) for p, o in zip(prices, expected_output_tokens)],
                    dtype=np.float64)
