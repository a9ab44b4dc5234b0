"""Prometheus metrics of routing (``metrics: true`` on the LiteLLM strategy, ``metrics=True`` on the LangChain
runnable): what was decided, how fast, how sure, what the routed calls cost and saved, and bundle reloads.

The metrics live in ``prometheus_client``'s default registry, so a LiteLLM proxy with litellm's ``prometheus``
callback serves them on its ``/metrics`` beside litellm's own, and elsewhere ``prometheus_client.start_http_server``
does. With several proxy workers set ``PROMETHEUS_MULTIPROC_DIR`` (as litellm's prometheus integration asks): every
metric here is multiprocess-safe. They are fed from the decision-log row of each finished call (see
:func:`observe_call`), the same line ``decision_log`` writes, so the two always agree; the file is optional.

Labels (bounded by the bundle's targets and the configured groups): ``model_group`` (the litellm model group, or the
runnable's name), ``target``, ``reason`` (``policy``, ``pinned``, ``retry``, ``at capacity``, ``fallback: ...``
without particulars) and ``outcome`` (``success`` / ``failure`` / ``abandoned``: a stream its reader dropped); in a
canary rollout (``rollout`` below 1) ``arm`` (``router`` / ``control``) on the two ``prefill_router_rollout_*``
counters; ``bundle_version`` (one per bundle a process has served: a reload adds one) on
``prefill_router_bundle_decisions``; ``policy`` (a preset's name, or a tolerance / lambda / value_usd value from
tune's grids or a request's own) on ``prefill_router_policy_decisions``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .forking import unheld_in_child
from .novelty import NOVEL_ABOVE
from .records import answered_by, policy_label, reason_kind

logger = logging.getLogger("litellm_prefill_router")

#: seconds: the encoder + scorer pass of a decision is ~5-50 ms on a CPU
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
P_CORRECT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ANSWER_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def outcome_label(outcome: Mapping[str, Any]) -> str:
    """A call's ``outcome`` label: ``success``, ``failure`` or ``abandoned`` (its stream dropped by the reader)."""
    return "abandoned" if outcome.get("abandoned") else "success" if outcome.get("success") else "failure"


@dataclass(frozen=True)
class RouterMetrics:
    """The process's routing metrics (one set, shared by every router in the process)."""

    decisions: Any
    decision_seconds: Any
    chosen_p_correct: Any
    truncated: Any
    cache_hits: Any
    calls: Any
    cost: Any
    savings: Any
    reloads: Any
    rollout_calls: Any
    rollout_cost: Any
    bundle_decisions: Any
    novel: Any
    policies: Any
    answer_tokens: Any
    estimated_cost: Any

    def observe_call(self, row: Mapping[str, Any]) -> None:
        """Count one finished call from its decision-log row (:func:`~.records.decision_log_row`). A shadow-mode
        row counts its decision under the target the router would have chosen and its call under the target that
        served it."""
        decision, outcome = row["decision"], row["outcome"]
        group = str(decision.get("model_group") or "")
        target = str(decision["target"])
        self.decisions.labels(group, target, reason_kind(str(decision["reason"]))).inc()
        if isinstance(latency := decision.get("latency_ms"), (int, float)):
            self.decision_seconds.labels(group).observe(latency / 1000.0)
        if isinstance(p := (decision.get("p_correct") or {}).get(target), (int, float)):
            self.chosen_p_correct.labels(group, target).observe(p)
        if decision.get("truncated"):
            self.truncated.labels(group).inc()
        if decision.get("cached"):
            self.cache_hits.labels(group).inc()
        if isinstance(novelty := decision.get("novelty"), (int, float)) and novelty > NOVEL_ABOVE:
            self.novel.labels(group, target).inc()
        if policy := decision.get("policy"):  # which setting routes now: a preset, a key's own, autotune's latest
            self.policies.labels(group, policy_label(policy)).inc()
        served = str(answered_by(decision) or outcome.get("model") or target)
        self.calls.labels(group, served, outcome_label(outcome)).inc()
        if isinstance(cost := outcome.get("response_cost"), (int, float)) and cost >= 0:
            self.cost.labels(group, served).inc(cost)
            # the decision's own estimate for the target that answered, beside what it cost: their ratio on a
            # dashboard says how far to trust cost estimates (learn_output_tokens closes most of a gap) - a whole
            # answer's estimate, so not for a stream dropped before its end (its cost is a part's), as in `stats`
            if not outcome.get("abandoned") and isinstance(est := (decision.get("cost_usd") or {}).get(served),
                                                           (int, float)):
                self.estimated_cost.labels(group, served).inc(est)
        if outcome.get("success") and isinstance(tokens := outcome.get("completion_tokens"), int):
            self.answer_tokens.labels(group, served).observe(tokens)
        if isinstance(saved := outcome.get("savings_usd"), (int, float)):
            self.savings.labels(group).inc(saved)
        if version := decision.get("bundle_version"):  # which bundle each worker decides with (after a push, a reload)
            self.bundle_decisions.labels(group, str(version)).inc()
        if arm := decision.get("arm"):  # a canary rollout: the arms side by side, live
            self.rollout_calls.labels(group, str(arm), outcome_label(outcome)).inc()
            if isinstance(cost, (int, float)) and cost >= 0:
                self.rollout_cost.labels(group, str(arm)).inc(cost)

    def observe_reload(self, bundle: str, loaded: bool) -> None:
        """Count a changed bundle that was swapped in (``loaded``) or could not be served (still on the old one)."""
        self.reloads.labels(bundle, "loaded" if loaded else "failed").inc()


_METRICS: RouterMetrics | None = None
_LOCK = unheld_in_child(threading.Lock())


def router_metrics() -> RouterMetrics:
    """The process's routing metrics, registered in prometheus_client's default registry on first use; raises
    :class:`ConfigurationError` where prometheus_client is not installed."""
    global _METRICS
    if _METRICS is not None:  # every finished call asks: no lock once the metrics exist
        return _METRICS
    with _LOCK:
        if _METRICS is None:
            try:
                from prometheus_client import Counter, Gauge, Histogram
            except ImportError as err:
                raise ConfigurationError("routing metrics need prometheus_client: pip install "
                                         "'litellm-prefill-router[metrics]' (or turn metrics off)") from err
            _METRICS = RouterMetrics(
                decisions=Counter("prefill_router_decisions", "Routing decisions, by the target chosen and why",
                                  ["model_group", "target", "reason"]),
                decision_seconds=Histogram("prefill_router_decision_seconds",
                                           "Time to decide a route (encoder + scorer + policy)", ["model_group"],
                                           buckets=LATENCY_BUCKETS),
                chosen_p_correct=Histogram("prefill_router_chosen_p_correct",
                                           "Predicted P(correct) of the chosen target (a falling median: traffic "
                                           "unlike the training data)", ["model_group", "target"],
                                           buckets=P_CORRECT_BUCKETS),
                truncated=Counter("prefill_router_truncated_prompts",
                                  "Prompts longer than the encoder's context, routed on their truncation",
                                  ["model_group"]),
                cache_hits=Counter("prefill_router_prediction_cache_hits",
                                   "Decisions whose P(correct) came from the prediction cache (a prompt seen again: "
                                   "a retry, a repeated question) instead of the encoder", ["model_group"]),
                calls=Counter("prefill_router_calls", "Routed calls, by the target that served them and outcome",
                              ["model_group", "target", "outcome"]),
                cost=Counter("prefill_router_cost_usd", "What routed calls cost (USD, where litellm knows)",
                             ["model_group", "target"]),
                savings=Gauge("prefill_router_savings_usd",
                              "USD saved so far against sending each call to its savings baseline (the dearest "
                              "candidate target); falls when a call costs more than its baseline would have",
                              ["model_group"], multiprocess_mode="sum"),
                reloads=Counter("prefill_router_bundle_reloads",
                                "Changed bundles swapped in (loaded) or refused (failed: the old one is still served)",
                                ["bundle", "outcome"]),
                rollout_calls=Counter("prefill_router_rollout_calls",
                                      "Calls of a canary rollout by arm (router: served by the route; control: served "
                                      "as before) and outcome", ["model_group", "arm", "outcome"]),
                rollout_cost=Counter("prefill_router_rollout_cost_usd", "What a canary rollout's calls cost, by arm",
                                     ["model_group", "arm"]),
                bundle_decisions=Counter("prefill_router_bundle_decisions",
                                         "Decisions by the bundle version that made them (12 hex of its manifest's "
                                         "sha256): a reload or a new Hub commit shows as a new version",
                                         ["model_group", "bundle_version"]),
                novel=Counter("prefill_router_novel_prompts",
                              "Decisions on prompts unlike any the bundle was validated on (novelty above 1; about 5% "
                              "of decisions on traffic like the training data: more is a new kind of traffic)",
                              ["model_group", "target"]),
                policies=Counter("prefill_router_policy_decisions",
                                 "Decisions by the policy that made them (preset=balanced, tolerance=0.05, "
                                 "lambda=0.3 (autotuned), ...): autotune's setting as it changes",
                                 ["model_group", "policy"]),
                answer_tokens=Histogram("prefill_router_answer_tokens",
                                        "Completion tokens of each successful answer, by the target that answered "
                                        "(the bundle assumes its training data's lengths; see learn_output_tokens)",
                                        ["model_group", "target"], buckets=ANSWER_TOKEN_BUCKETS),
                estimated_cost=Counter("prefill_router_estimated_cost_usd",
                                       "The decisions' cost estimates (USD) for the target that answered, of the calls "
                                       "counted in prefill_router_cost_usd: divide the two for the estimate's error",
                                       ["model_group", "target"]),
            )
        return _METRICS


def reload_observer(bundle: object) -> Callable[[bool], None]:
    """What a :class:`~.reloading.BundleReloader` calls after each attempt to load a changed ``bundle``: counts it
    in ``prefill_router_bundle_reloads``. Registers the metrics now, so a missing prometheus_client is reported when
    the router is built rather than at the first reload."""
    metrics = router_metrics()
    return lambda loaded: metrics.observe_reload(str(bundle), loaded)


def observe_call(row: Mapping[str, Any]) -> None:
    """Count one finished call (its decision-log row) in the routing metrics; a row that cannot be counted is
    reported, never allowed to fail the call."""
    try:
        router_metrics().observe_call(row)
    except Exception as err:  # noqa: BLE001 - the answer is the caller's; a metric is not worth losing it
        logger.error("prefill router: could not count a call in the routing metrics: %s: %s", type(err).__name__, err)
