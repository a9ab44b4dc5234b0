"""Routing policies: from P(correct) and cost per candidate target to one choice.

``tolerance`` (tau): the cheapest target whose P(correct) is within tau of the best.
``lambda``: argmax of p - lambda * cost / max(cost) (costs normalised per request).
``value_usd`` (V): argmax of p * V - cost - the expected value of the answer, when a right one is worth V USD, minus
its cost. Unlike lambda it weighs costs in USD, so it spends less on an expensive (long) prompt than on a cheap one:
for a total budget, the most right answers per USD (the budget's Lagrangian optimum, with calibrated P(correct)).
Named presets (calibrated on validation data by training) live in the manifest.

:class:`Constraints` - a cost ceiling (``max_cost_usd``, the estimated cost of this request) and a quality floor
(``min_p_correct``) - narrow the candidates before the policy chooses (:func:`constrained_choice`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from .errors import ConfigurationError
from .novelty import NOVEL_ABOVE

PolicyKind = Literal["tolerance", "lambda", "value_usd"]
POLICY_KINDS: tuple[str, ...] = get_args(PolicyKind)


@dataclass(frozen=True)
class RoutingPolicy:
    kind: PolicyKind = "tolerance"
    value: float = 0.0
    preset: str | None = None
    autotuned: bool = False  # chosen by the router's autotune (see litellm_prefill_router.autotune)

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ConfigurationError(f"unknown policy kind {self.kind!r}; valid kinds: {', '.join(POLICY_KINDS)}")
        if (isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value)
                or self.value < 0):
            raise ConfigurationError(f"policy {self.kind} value must be a finite number >= 0, got {self.value!r}")
        if self.kind == "tolerance" and self.value > 1:  # a difference of probabilities: 1 already means the cheapest
            raise ConfigurationError(f"policy tolerance must be in [0, 1] (a difference of P(correct)s; 1 always "
                                     f"picks the cheapest target), got {self.value!r}")

    def choose(self, p: npt.ArrayLike, cost: npt.ArrayLike) -> int:
        """Index of the chosen candidate."""
        return choose(p, cost, self.kind, self.value)

    def describe(self) -> str:
        """``preset=balanced`` for a preset, else ``tolerance=0.05`` / ``lambda=0.3`` / ``value_usd=0.001``
        (``... (autotuned)``)."""
        if self.preset:
            return f"preset={self.preset}"
        return f"{self.kind}={self.value:g}" + (" (autotuned)" if self.autotuned else "")


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
    if kind == "value_usd":  # the expected value of the answer (P(correct) x what a right one is worth) minus its cost
        score = p * value - cost
    else:
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
    if kind == "value_usd":
        score = p * value - cost
    else:
        scale = cost.max(1, keepdims=True)
        score = p - value * cost / np.where(scale > 0, scale, 1.0)
    best = score >= score.max(1, keepdims=True) - 1e-12
    return np.where(best, cost, np.inf).argmin(1)


@dataclass(frozen=True)
class Constraints:
    """Per-request limits on the candidates: the policy chooses among those whose estimated cost is at most
    ``max_cost_usd`` and whose P(correct) is at least ``min_p_correct``. When none qualifies the request is still
    served (a request is never refused by its own limits): over budget -> the cheapest candidate; within budget but
    below the floor -> the most likely candidate within budget. The decision's reason says which."""

    max_cost_usd: float | None = None
    min_p_correct: float | None = None

    def __post_init__(self) -> None:
        for name, v, lo, hi in (("max_cost_usd", self.max_cost_usd, 0.0, math.inf),
                                ("min_p_correct", self.min_p_correct, 0.0, 1.0)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)
                                  or not lo <= v <= hi):
                raise ConfigurationError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")

    def __bool__(self) -> bool:
        return self.max_cost_usd is not None or self.min_p_correct is not None

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Constraints:
        """The constraints a decision record (``RoutingDecision.constraints``) names."""
        record = record or {}
        return cls(record.get("max_cost_usd"), record.get("min_p_correct"))


def constrained_choice(policy: RoutingPolicy, candidates: Sequence[str], p: Mapping[str, float],
                       cost: Mapping[str, float], constraints: Constraints) -> tuple[str, str, dict[str, Any] | None]:
    """(target, reason, record): the policy's pick among the candidates that meet ``constraints`` (reason
    ``"policy"``), or the documented way out when none does (reasons ``"over budget: ..."``, ``"below floor: ..."``).
    ``record`` (None without constraints) holds the limits and the candidates they excluded, for the decision."""
    if not constraints:
        idx = policy.choose([p[t] for t in candidates], [cost[t] for t in candidates])
        return candidates[idx], "policy", None
    cap, floor = constraints.max_cost_usd, constraints.min_p_correct
    affordable = [t for t in candidates if cap is None or cost[t] <= cap * (1 + 1e-9)]
    eligible = [t for t in affordable if floor is None or p[t] >= floor - 1e-12]
    record: dict[str, Any] = {k: v for k, v in (("max_cost_usd", cap), ("min_p_correct", floor)) if v is not None}
    record["excluded"] = [t for t in candidates if t not in eligible]
    if eligible:
        idx = policy.choose([p[t] for t in eligible], [cost[t] for t in eligible])
        return eligible[idx], "policy", record
    if not affordable:
        target = min(candidates, key=lambda t: (cost[t], -p[t]))
        return target, (f"over budget: no candidate's estimated cost is within max_cost_usd={cap:g} (the cheapest: "
                        f"{cost[target]:.3g} USD); sent to the cheapest"), record
    target = max(affordable, key=lambda t: (p[t], -cost[t]))
    within = f" within max_cost_usd={cap:g}" if cap is not None else ""
    return target, (f"below floor: no candidate{within} reaches min_p_correct={floor:g} (the best: "
                    f"{p[target]:.3f}); sent to the most likely{within and ' within budget'}"), record


def resolve_policy(
    presets: Mapping[str, Any],
    *,
    preset: str | None = None,
    tolerance: float | None = None,
    lambda_: float | None = None,
    default_preset: str | None = None,
    value_usd: float | None = None,
) -> RoutingPolicy:
    """Pick the policy from explicit parameters, a named preset, or the bundle's default."""
    given = [(k, v) for k, v in (("tolerance", tolerance), ("lambda", lambda_), ("value_usd", value_usd))
             if v is not None]
    if len(given) + (preset is not None) > 1:  # which would win is a guess: say so instead
        named = ["preset"] * (preset is not None) + [k for k, _ in given]
        raise ConfigurationError(f"give one policy - a preset, a tolerance, a lambda or a value_usd - not {named}")
    if given:
        return RoutingPolicy(given[0][0], float(given[0][1]))  # type: ignore[arg-type]
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
    # "policy", "pinned" (or "pinned: continues a response ..."), "retry: ...", "at capacity: ...", "over budget: ...",
    # "below floor: ...", "fallback: ..."
    reason: str
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
    # the request's limits (max_cost_usd, min_p_correct) and the candidates they excluded; None without limits
    constraints: Mapping[str, Any] | None = None
    # the prediction's distance to the bundle's nearest validation row, in units of the novelty threshold: above 1
    # the prompt is unlike the training data (see `prefill-router drift`); None: no prediction, or an older bundle
    novelty: float | None = None

    @property
    def novel(self) -> bool:
        """Whether the prompt is unlike any the bundle was validated on (its novelty above 1)."""
        return self.novelty is not None and self.novelty > NOVEL_ABOVE

    def logged_p_correct(self) -> dict[str, float]:
        """P(correct) per candidate as the decision log writes it (6 decimals): what `tune` reads back."""
        return {k: round(float(v), 6) for k, v in self.p_correct.items()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["p_correct"] = self.logged_p_correct()
        d["cost_usd"] = {k: float(v) for k, v in self.cost_usd.items()}
        d["candidates"] = list(self.candidates)
        if not self.policy.autotuned:
            del d["policy"]["autotuned"]  # log lines of routers without autotune stay as they were
        if self.constraints is None:
            del d["constraints"]  # most requests set no limits: their log lines stay as they were
        if self.novelty is None:
            del d["novelty"]
        else:
            d["novelty"] = round(float(self.novelty), 4)
        return d
