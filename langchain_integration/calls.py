"""One call of a PrefillRouterRunnable as the decision log and the metrics see it: its route (the decision, the
target whose runnable served it, what the record adds) and its log row."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litellm_prefill_router.costs import Price
from litellm_prefill_router.policy import RoutingDecision
from litellm_prefill_router.records import baseline_record, decision_log_row, savings_baseline

from .inputs import text_of


@dataclass(frozen=True)
class Route:
    """One attempt of a call: the decision, the target whose runnable serves it, and what the record adds (shadow,
    served_target, arm)."""

    decision: RoutingDecision
    served: str
    extra: dict[str, Any]

    def record(self) -> dict[str, Any]:
        return {**self.decision.to_dict(), **self.extra}


def call_row(route: Route, run_id: str, prices: Mapping[str, Price], started: float, out: Any = None,
             error: BaseException | None = None, messages: list[dict[str, Any]] | None = None,
             response: bool = False, abandoned: str | None = None) -> dict[str, Any]:
    """The decision-log row of a call served by ``route`` (its LangChain run ``run_id``): cost from the answer's
    usage metadata at the served target's price, savings against the dearest candidate (none in shadow mode: nothing
    was routed), the prompt's ``messages`` and (``response``) the answer's text if asked for. ``abandoned``: why the
    answer ``out`` is partial (its stream was dropped by the reader; see ``records.decision_log_row``)."""
    usage = getattr(out, "usage_metadata", None) or {}
    n_in, n_out = usage.get("input_tokens"), usage.get("output_tokens")
    price = prices[route.served]
    cost = price.cost(n_in, n_out) if isinstance(n_in, int) and isinstance(n_out, int) else None
    base = None if route.extra.get("shadow") else \
        savings_baseline(route.decision, list(prices), lambda t: (t, prices[t]))
    baseline = baseline_record(base, None, prices[base]) if base is not None else None
    extra: dict[str, object] = {}
    if messages is not None:
        extra["messages"] = messages
    if response and error is None:  # an abandoned stream's: the part that was read
        extra["response"] = text_of(out)
    return decision_log_row(
        call_id=("run_id", run_id), response_id=getattr(out, "id", None),
        decision={**route.record(), "baseline": baseline}, ok=error is None,
        model=route.served, cost=cost, prompt_tokens=n_in, completion_tokens=n_out,
        latency_s=round(time.perf_counter() - started, 6), error=error, extra=extra, abandoned=abandoned)
