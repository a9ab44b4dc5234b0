"""The prefill router as the classifier of litellm's complexity router (``classifier_type: custom``).

litellm's complexity router - a ``model_list`` deployment with ``model: auto_router/complexity_router`` - sends each
request to the model group of a tier (SIMPLE / MEDIUM / COMPLEX / REASONING, or an operator's own tiers) that a
classifier picks: keyword heuristics, an LLM call, or a plugin. :class:`PrefillTierClassifier` is such a plugin
(litellm's ``ClassifierPlugin``: ``async classify(context) -> tier | None``): each tier is a bundle target; it
predicts from the prompt's prefill activations which tier's model answers correctly and picks the tier by the
bundle's policy and the targets' prices - the decision the ``prefill`` routing strategy takes among deployments,
made here for a router whose tiers, escalation and headers stay litellm's::

    # tiers.py, beside the proxy's config.yaml
    from litellm_prefill_router.tier_classifier import PrefillTierClassifier
    classifier = PrefillTierClassifier("bundles/llmrouter", tiers={"SIMPLE": "llama-3.1-8b-instruct",
                                                                  "COMPLEX": "llama-3.1-nemotron-51b-instruct"})

    # config.yaml
    model_list:
      - model_name: smart
        litellm_params:
          model: auto_router/complexity_router
          complexity_router_config:
            classifier_type: custom
            classifier_plugin: tiers.classifier
            tiers: {SIMPLE: llama-8b, COMPLEX: nemotron-51b}

The decision is written into the request's metadata as the strategy writes its own, so the decision log (with the
call's outcome), ``_hidden_params["prefill_routing"]``, the proxy's ``x-prefill-*`` headers (``x-prefill-tier``
too), the metrics, ``autotune`` and per-request / per-key ``metadata.prefill`` overrides work as for the strategy.
A request the classifier cannot decide (inference failed or timed out, no text) is declined (``None``): litellm's
``classifier_fallback`` decides it, and the log line says ``declined``.

litellm may serve another tier than the classifier's: an escalation keyword, a stalled session or a plan-mode floor
moves it up, a prompt too long for the tier's model moves it to one with room. The record then names the tier and
target that answered (``served_tier`` / ``served_target``, see ``records.with_served_tier``), and the outcome,
feedback and learned answer lengths are that target's.

Shadow mode (``shadow=True``) and canary rollouts (``rollout=0.1``) work as for the strategy: every request is
decided and logged, and those served as before (all of them, or a rollout's control arm) go to ``shadow_tier`` if
set, else are declined to litellm's ``classifier_fallback`` (its keyword heuristic by default) - whose tier the log
line records as served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from typing_extensions import Unpack

from .composition import deployments_of, plugin_prompt
from .config import RequestOverrides, parse_overrides
from .costs import Price
from .deployments import complexity_config, deployments_by_group, tier_groups
from .errors import ConfigurationError
from .policy import RoutingDecision
from .records import DECISION_KEY, baseline_record, savings_baseline
from .request_hooks import HookSettings, RequestHook
from .rollout import request_arm_of
from .shared_metadata import current_request, owns

logger = logging.getLogger("litellm_prefill_router")

#: the model group of a decision made outside a litellm request (the complexity router's own name otherwise)
MODEL_GROUP = "complexity router"


def _checked_tiers(tiers: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(tiers, Mapping) or not tiers:
        raise ConfigurationError("tiers must map each complexity-router tier to a bundle target, e.g. "
                                 "{'SIMPLE': 'llama-3.1-8b-instruct', 'COMPLEX': 'llama-3.1-nemotron-51b-instruct'}; "
                                 f"got {tiers!r}")
    bad = [f"{k!r}: {v!r}" for k, v in tiers.items() if not isinstance(k, str) or not isinstance(v, str) or not k]
    if bad:
        raise ConfigurationError(f"tiers maps tier names to target names (strings); not: {', '.join(bad)}")
    seen: dict[str, str] = {}
    for tier, target in tiers.items():
        if target in seen:
            raise ConfigurationError(f"tiers {seen[target]!r} and {tier!r} both name target {target!r}: the "
                                     "classifier picks a target, so each target may stand for one tier")
        seen[target] = tier
    return dict(tiers)


class _QuietShadowDeclines(logging.Filter):
    """Drops litellm's warning that the classifier declined a request, where the decline was shadow mode's (or a
    rollout control arm's) way of serving it as before: one warning per request is noise, not news. Declines of a
    failed prediction still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request()
        if request is None or "classifier plugin declined to classify" not in record.getMessage():
            return True
        decision = request.metadata.get(DECISION_KEY)
        return not (isinstance(decision, dict) and decision.get("shadow") and "tier" in decision
                    and owns(decision, request.trace_id))


_QUIET = _QuietShadowDeclines()


class PrefillTierClassifier(RequestHook):
    """litellm ``ClassifierPlugin`` for the complexity router: ``tiers`` maps each tier name (as litellm's
    ``complexity_router_config.tiers`` names it) to the bundle target its model is (``bundle``: a directory or
    ``hf://owner/name[@revision][/path]``). The classifier chooses among those targets only.

    Policy: ``preset`` / ``tolerance`` / ``lambda_`` / ``value_usd`` (default: the bundle's ``balanced``), a request's
    or a proxy key's ``metadata.prefill`` on top; ``max_cost_usd`` / ``min_p_correct`` limits; ``autotune``. Costs
    use ``prices`` ({target: (input, output) USD per token}, the tiers' model prices), else what the deployments of
    the tier's model groups cost (see :meth:`tier_prices`), else the bundle's.
    ``decision_log`` (``{date}`` / ``{pid}``), ``decision_log_messages``, ``decision_log_responses``, ``metrics``,
    ``learn_output_tokens``, ``reload_interval_s``, ``prediction_cache_size``, ``decision_timeout_s`` (default 2.5
    s: below litellm's ``classifier_plugin_timeout_ms``, 3 s by default, so a slow prediction is declined and logged
    rather than cancelled by litellm - one litellm cancels is logged as declined too) and ``execution_providers`` as
    for the ``prefill`` strategy's ``routing_strategy_args``.

    Serving: ``shadow=True`` decides and logs every request and serves it as before - by ``shadow_tier`` if set, else
    by litellm's ``classifier_fallback`` (the classifier declines; litellm's warning about it is silenced for these);
    ``rollout=0.1`` serves 10% of users (by the request's ``user``, else per request) by the classifier's tier and
    the rest (the ``control`` arm) as in shadow mode.
    """

    def __init__(self, bundle: str, tiers: Mapping[str, str], *, shadow_tier: str | None = None,
                 **settings: Unpack[HookSettings]) -> None:
        self.tiers = _checked_tiers(tiers)
        self._tier_of = {target: tier for tier, target in self.tiers.items()}
        if shadow_tier is not None and not (isinstance(shadow_tier, str) and shadow_tier):
            raise ConfigurationError(f"shadow_tier names the complexity-router tier that serves requests as before "
                                     f"(e.g. one of {sorted(self.tiers)}); got {shadow_tier!r}")
        self.shadow_tier = shadow_tier
        super().__init__(bundle, list(self.tiers.values()), "tiers' targets", ("shadow_tier", shadow_tier),
                         **settings)
        if _QUIET not in logging.getLogger("LiteLLM Router").filters:
            logging.getLogger("LiteLLM Router").addFilter(_QUIET)

    async def classify(self, context: Any) -> str | None:
        """The tier for one request (litellm's ``RoutingContext``: its messages and metadata), or None to decline."""
        self._reloader.maybe_reload()
        decider, prices = self._reloader.current  # one bundle per request, even if a reload swaps it meanwhile
        request = current_request()  # the request's own metadata dict; litellm hands the plugin a copy
        md = request.metadata if request is not None else dict(getattr(context, "metadata", None) or {})
        group = str(md.get("model_group") or MODEL_GROUP)
        prices = self.tier_prices(request.router if request is not None else None, group, prices)
        messages = plugin_prompt(context, request)
        # a rollout's arm: by the request's user (each user stays in one arm), else its trace id (kept by retries)
        arm = request_arm_of(self.rollout, request.user if request else None, request.trace_id if request else None)
        as_before = self.shadow or arm == "control"  # decided and recorded, served as without the classifier
        started = time.perf_counter()

        def declined(overrides: RequestOverrides, reason: str) -> None:
            """Log the request as declined (litellm's classifier_fallback serves it), not lose it from the log."""
            if request is not None:
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                self._record(md, request.trace_id, decider.unpredicted(prices, overrides, group, reason, elapsed_ms),
                             None, prices, as_before, arm)

        try:
            overrides = parse_overrides(md)
        except ConfigurationError as err:  # served by litellm's classifier_fallback, with litellm's warning naming why
            declined(RequestOverrides(), f"fallback: {err}")
            raise
        try:
            decision = await decider.adecide(messages, prices, overrides, group)
        except asyncio.CancelledError:  # litellm's classifier_plugin_timeout_ms passed
            declined(overrides, f"fallback: routing cancelled by litellm (no prediction within "
                                f"{time.perf_counter() - started:.2f} s: its classifier_plugin_timeout_ms)")
            raise
        tier = self.tier_for(decision)
        if request is not None:
            self._record(md, request.trace_id, decision, tier, prices, as_before, arm, messages)
        return self.shadow_tier if as_before else tier

    def tier_prices(self, router: Any, group: str, prices: Mapping[str, Price] | None = None) -> dict[str, Price]:
        """Each tier's target priced as the request will be billed: the classifier's ``prices=``; else the mean
        price of ``router``'s deployments of the model groups complexity router ``group`` sends the tier to, as the
        prefill strategy prices a deployment; else the bundle's (``prices``: the served bundle's, default the current
        one's)."""
        prices = self.prices if prices is None else prices
        if router is None:
            return dict(prices)
        by_group = deployments_by_group(deployments_of(router))  # one pass over the model list, not one per tier
        cfg = next((c for d in by_group.get(group, []) if (c := complexity_config(d)) is not None), None)
        pools = (cfg or {}).get("tiers")
        served_by: dict[str, list[dict]] = {}
        for target in prices:
            names = tier_groups(pools.get(self._tier_of.get(target)) if isinstance(pools, Mapping) else None)
            served_by[target] = [d for name in names for d in by_group.get(name, [])]
        return self._billed(router, served_by, prices)

    def tier_for(self, decision: RoutingDecision) -> str | None:
        """The tier of a decision's target; None (declined) for a fallback decision, which no prediction made."""
        return None if decision.reason.startswith("fallback") else self._tier_of[decision.target]

    def _record(self, md: dict, trace_id: object, decision: RoutingDecision, tier: str | None,
                prices: Mapping[str, Price], shadow: bool, arm: str | None, routed: object = None) -> None:
        """Leave the decision in the request's metadata, where the decision log, the response's hidden params and
        the proxy's headers read it (with the tier litellm served, see ``records.with_served_tier``); savings are
        measured against the dearest candidate tier."""
        baseline = savings_baseline(decision, list(prices.items()), lambda option: option)
        record = {**decision.to_dict(), "tier": tier, "declined": tier is None, "tier_targets": dict(self.tiers),
                  "baseline": baseline_record(baseline[0], None, baseline[1]) if baseline and not shadow else None}
        if shadow:
            record["shadow"] = True
        if arm is not None:
            record["arm"] = arm
        self._store(md, trace_id, record, routed)
