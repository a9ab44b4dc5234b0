"""Routing policies: from P(correct) and cost per candidate target to one choice.

``tolerance`` (tau): the cheapest target whose P(correct) is within tau of the best.
``lambda``: argmax of p - lambda * cost / max(cost) (costs normalised per request).
Named presets (calibrated on validation data by training) live in the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import ConfigurationError

PolicyKind = Literal["tolerance", "lambda"]


@dataclass(frozen=True)
class RoutingPolicy:
    kind: PolicyKind = "tolerance"
    value: float = 0.0
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("tolerance", "lambda"):
            raise ConfigurationError(f"unknown policy kind {self.kind!r}; valid kinds: 'tolerance', 'lambda'")
        if not isinstance(self.value, (int, float)) or math.isnan(self.value) or self.value < 0:
            raise ConfigurationError(f"policy {self.kind} value must be a number >= 0, got {self.value!r}")

    def choose(self, p: npt.ArrayLike, cost: npt.ArrayLike) -> int:
        """Index of the chosen candidate."""
        return choose(p, cost, self.kind, self.value)

    def describe(self) -> str:
        """``preset=balanced`` for a preset, else ``tolerance=0.05`` / ``lambda=0.3``."""
        return f"preset={self.preset}" if self.preset else f"{self.kind}={self.value:g}"


def choose(p: npt.ArrayLike, cost: npt.ArrayLike, kind: str, value: float) -> int:
    p = np.asarray(p, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if p.ndim != 1 or p.shape != cost.shape or p.size == 0:
        raise ValueError(f"p and cost must be equal-length non-empty vectors, got {p.shape} and {cost.shape}")
    if kind == "tolerance":
        ok = p >= p.max() - value - 1e-12
        idx = np.flatnonzero(ok)
        # cheapest; among equal cost the more likely to be right
        return int(idx[np.lexsort((-p[idx], cost[idx]))[0]])
    scale = cost.max() if cost.max() > 0 else 1.0
    score = p - value * cost / scale
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return int(best[np.argmin(cost[best])])


def choose_batch(p: np.ndarray, cost: np.ndarray, kind: str, value: float) -> np.ndarray:
    """:func:`choose` over the rows of (n, K) arrays, vectorised (same choices, same tie-breaks)."""
    p = np.asarray(p, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if kind == "tolerance":
        ok = p >= p.max(1, keepdims=True) - value - 1e-12
        c = np.where(ok, cost, np.inf)
        cheapest = ok & (c <= c.min(1, keepdims=True))
        return np.where(cheapest, p, -np.inf).argmax(1)
    scale = cost.max(1, keepdims=True)
    score = p - value * cost / np.where(scale > 0, scale, 1.0)
    best = score >= score.max(1, keepdims=True) - 1e-12
    return np.where(best, cost, np.inf).argmin(1)


def resolve_policy(
    presets: Mapping[str, Any],
    *,
    preset: str | None = None,
    tolerance: float | None = None,
    lambda_: float | None = None,
    default_preset: str | None = None,
) -> RoutingPolicy:
    """Pick the policy from explicit parameters, a named preset, or the bundle's default."""
    if tolerance is not None and lambda_ is not None:
        raise ConfigurationError("give either 'tolerance' or 'lambda', not both")
    if tolerance is not None:
        return RoutingPolicy("tolerance", float(tolerance))
    if lambda_ is not None:
        return RoutingPolicy("lambda", float(lambda_))
    name = preset or default_preset
    if name is None:
        return RoutingPolicy("tolerance", 0.0)
    if name not in presets:
        raise ConfigurationError(f"unknown policy preset {name!r}; this bundle has presets: {sorted(presets)}")
    spec = presets[name]
    kind = spec["kind"] if isinstance(spec, Mapping) else spec.kind
    value = spec["value"] if isinstance(spec, Mapping) else spec.value
    return RoutingPolicy(kind, float(value), preset=name)


@dataclass(frozen=True)
class RoutingDecision:
    """What the router decided for one request, and why."""

    target: str
    reason: str  # "policy", "pinned", "fallback: ...", "no-text fallback"
    policy: RoutingPolicy
    p_correct: Mapping[str, float] = field(default_factory=dict)
    cost_usd: Mapping[str, float] = field(default_factory=dict)
    candidates: Sequence[str] = ()
    input_tokens: int = 0
    truncated: bool = False
    latency_ms: float = 0.0
    deployment_id: str | None = None
    model_group: str | None = None
    cached: bool = False  # P(correct) came from the predictor's cache (a prompt seen again), not the encoder
    bundle: str | None = None  # the bundle that decided: its directory, or hf://owner/name@<commit>[/path]
    bundle_version: str | None = None  # its content (12 hex of the manifest's sha256): changes on a reload

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["p_correct"] = {k: round(float(v), 6) for k, v in self.p_correct.items()}
        d["cost_usd"] = {k: float(v) for k, v in self.cost_usd.items()}
        d["candidates"] = list(self.candidates)
        return d
