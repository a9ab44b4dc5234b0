"""The prefill router as a litellm routing plugin (``RoutingPlugin``: ``async run(context) -> context``).

litellm runs routing plugins before its routing decision: each gets the request's messages and the candidate models
(the ``litellm_params.model`` of the requested group's deployments; inside a complexity router, the model groups of
the classified tier's pool) and may narrow them. :class:`PrefillRoutingPlugin` narrows them to the models of the
bundle target its policy picks, so whatever picks among them next - the Router's own ``routing_strategy``
(latency-based, usage-based, ...) or the complexity router's tier pool - picks among that target's deployments::

    router = litellm.Router(model_list=..., routing_strategy="latency-based-routing",
                            plugins=[PrefillRoutingPlugin("bundles/llmrouter", preset="balanced")])

    # proxy: router_settings.plugins (or complexity_router_config.plugins) lists the dotted path of an instance
    router_settings:
      plugins: [prefill_plugin.plugin]        # prefill_plugin.py beside config.yaml

A candidate model maps to the bundle target ``targets`` names for it, else the target its name (or its last path
part: ``openai/gpt-4o`` -> ``gpt-4o``) is. A pool none of whose models map is left as it is, with no decision; models
that map to no target are left out of a narrowed pool. A request the bundle cannot decide (inference failed or timed
out, no text) keeps its whole pool (``declined`` in the log). The decision goes where the strategy's goes: the
decision log, ``_hidden_params["prefill_routing"]``, the proxy's ``x-prefill-*`` headers, metrics, ``autotune`` and
``metadata.prefill`` overrides; ``signals["prefill"]`` carries it to the plugins and strategies after this one.
``shadow=True`` / ``rollout=0.1``: decide and log every request, narrow none of them (all, or a rollout's control
arm) - litellm routes those as without the plugin.

A picked target with no healthy deployment (cooling down, filtered out by litellm's pre-call checks) is not a lost
request: in a Router's group the policy's next pick among the healthy targets serves it (see :func:`widened_pool`);
in a complexity router's tier, litellm's health failover runs the plugin again on the tier's live groups. Either way
the record names the targets passed over (``unavailable_targets``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

from typing_extensions import Unpack

from .composition import deployments_of, healthy_deployments, plugin_prompt
from .config import parse_overrides
from .costs import Price
from .deployments import deployment_model, deployments_by_group
from .errors import ConfigurationError
from .policy import RoutingDecision
from .records import DECISION_KEY, DECISION_LOG_KEY, baseline_record, savings_baseline
from .request_hooks import HookSettings, RequestHook
from .rollout import request_arm_of
from .shared_metadata import current_request, drop_records, narrowing_record, owns

logger = logging.getLogger("litellm_prefill_router")

#: the model group of a decision whose request names none
MODEL_GROUP = "routing plugin"


class _Narrowing(NamedTuple):
    """How a plugin narrowed the request being routed in this task (read by :func:`widened_pool`)."""

    plugin: PrefillRoutingPlugin
    decision: RoutingDecision
    record: dict
    models: list[str]


_NARROWED: ContextVar[_Narrowing | None] = ContextVar("prefill_plugin_narrowing", default=None)


class PrefillRoutingPlugin(RequestHook):
    """litellm ``RoutingPlugin`` narrowing each request's candidate models to the bundle target its policy picks
    (``bundle``: a directory or ``hf://owner/name[@revision][/path]``). ``targets``: {candidate model: bundle
    target} where a model is not named after its target. Policy, limits, decision log, metrics, learned answer
    lengths, autotune, reloading and ``decision_timeout_s`` (default 2.5 s; a late prediction keeps the whole pool) as
    for :class:`~.tier_classifier.PrefillTierClassifier`; ``shadow`` / ``rollout``: see the module. A target is
    priced by ``prices=``, else by the Router's deployments its candidates stand for, as the prefill strategy prices
    a deployment (see :meth:`route_prices`), else by the bundle."""

    def __init__(self, bundle: str, *, targets: Mapping[str, str] | None = None,
                 **settings: Unpack[HookSettings]) -> None:
        if targets is not None and (not isinstance(targets, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in targets.items())):
            raise ConfigurationError(f"targets maps candidate models (a deployment's litellm_params.model, or a "
                                     f"complexity-router tier's model group) to bundle targets; got {targets!r}")
        self.targets = dict(targets or {})
        super().__init__(bundle, None, "targets", ("shadow_target", None), **settings)
        from .router import ROUTER_ACCEPTS_SUBCLASSES  # litellm-facing: imported with the hook (super() did)

        # litellm 1.110+: the Router's core narrows a request's pool to this plugin's pick with no hook to widen it
        # again (a picked target whose deployments all cool down): the pick's health is checked first
        self._check_pick_health = not ROUTER_ACCEPTS_SUBCLASSES
        unknown = sorted({t for t in self.targets.values() if t not in self.decider.targets})
        if unknown:
            raise ConfigurationError(f"targets names {unknown}, which are not targets of bundle {bundle}; its "
                                     f"targets: {self.decider.targets}")

    def pools_of(self, models: Sequence[str]) -> dict[str, list[str]]:
        """``models`` (candidate models) by the bundle target each serves; models no target maps are left out."""
        pools: dict[str, list[str]] = {}
        for model in models:
            if (target := self.target_of(model)) is not None:
                pools.setdefault(target, []).append(model)
        return pools

    def target_of(self, model: str) -> str | None:
        """The bundle target candidate ``model`` serves (None: none)."""
        if model in self.targets:
            return self.targets[model]
        known = self.prices
        for name in (model, model.split("/")[-1]):
            if name in known:
                return name
        return None

    async def run(self, context: Any) -> Any:
        """litellm's ``RoutingContext`` with ``candidate_models`` narrowed to the picked target's models (see the
        module), the decision in ``signals["prefill"]`` and in the request's metadata."""
        _NARROWED.set(None)  # an earlier request's narrowing (awaited in this task) is not this one's
        self._reloader.maybe_reload()
        decider, prices = self._reloader.current
        request = current_request()
        # the request's own metadata dict (litellm's RoutingContext holds a copy: a decision written there is lost)
        md = request.metadata if request is not None else dict(getattr(context, "metadata", None) or {})
        trace = request.trace_id if request is not None else None
        pools = self.pools_of(context.candidate_models)
        if not pools:  # nothing the bundle knows: the pool stays, and an earlier attempt's decision is not this one's
            drop_records(md, trace, (DECISION_KEY, DECISION_LOG_KEY))
            return context
        group = str(md.get("model_group") or MODEL_GROUP)
        routes = self.route_prices(request.router if request is not None else None, group, pools, prices)
        messages = plugin_prompt(context, request)
        decision = await decider.adecide(messages, routes, parse_overrides(md), group)
        arm = request_arm_of(self.rollout, request.user if request is not None else None, trace)
        as_before = self.shadow or arm == "control"  # decided and recorded, served as without the plugin
        declined = decision.reason.startswith("fallback")  # no prediction: the pool as it is
        narrowed = not (as_before or declined)
        if narrowed:
            context.candidate_models = list(pools[decision.target])
        baseline = savings_baseline(decision, list(routes.items()), lambda option: option)
        record = {**decision.to_dict(), "declined": declined, "plugin_models": list(pools[decision.target]),
                  "baseline": baseline_record(baseline[0], None, baseline[1]) if baseline and narrowed else None}
        if as_before:
            record["shadow"] = True
        if not narrowed:  # litellm chooses among the whole pool: the answering target is known at the call
            record["candidate_targets"] = {m: t for t, models in pools.items() for m in models}
        if passed_over := _passed_over(md, trace, group, pools):
            record["unavailable_targets"] = passed_over
        if tiered := _tier_decision(md.get(DECISION_KEY), trace):
            record["tier_decision"] = tiered
        if arm is not None:
            record["arm"] = arm
        context.signals["prefill"] = {"target": decision.target, "reason": decision.reason,
                                      "p_correct": dict(decision.p_correct), "narrowed": narrowed}
        self._store(md, trace, record, messages)
        _NARROWED.set(_Narrowing(self, decision, record, list(context.candidate_models)) if narrowed else None)
        if narrowed and self._check_pick_health and request is not None:
            await self._healthy_pick(context, request.router, group, md)
        return context

    async def _healthy_pick(self, context: Any, router: Any, group: str, md: dict) -> None:
        """litellm 1.110+: where no deployment of the narrowed models is healthy (cooling down, filtered out), narrow
        to the policy's next pick that has one instead (:meth:`_rerouted`; its core raises "No deployments left after
        routing-plugin filtering" for an empty pool, and has no hook where :func:`widened_pool` widens it)."""
        narrowing = _NARROWED.get()
        in_group = {deployment_model(d) for d in deployments_of(router) if str(d.get("model_name")) == group}
        if narrowing is None or not in_group.intersection(narrowing.models):
            return  # a complexity router's tier pool (model groups, not deployments): litellm resolves those
        try:
            healthy = await healthy_deployments(router, group, {"metadata": md}, None, None, False)
        except Exception as err:  # noqa: BLE001 - litellm's own error for the group: its call raises it as before
            logger.debug("prefill routing plugin: no healthy-deployment check for %r: %s", group, err)
            return
        if not isinstance(healthy, list) or any(deployment_model(d) in narrowing.models for d in healthy):
            return
        widened = self._rerouted(narrowing, healthy)
        if widened is not None:
            context.candidate_models = sorted({deployment_model(d) for d in widened})
            context.signals["prefill"]["target"] = narrowing.record["target"]

    def route_prices(self, router: Any, group: str, pools: Mapping[str, list[str]],
                     prices: Mapping[str, Price] | None = None) -> dict[str, Price]:
        """Each target's price for this request (``pools``: {target: its candidate models}): the plugin's ``prices=``;
        else the mean price of ``router``'s deployments its candidates stand for (in model group ``group``, those
        whose ``litellm_params.model`` a candidate is, else the model group it names - a complexity router's tier
        pool), as the prefill strategy prices a deployment; else the bundle's (``prices``: the served bundle's,
        default the current one's)."""
        prices = self.prices if prices is None else prices
        routes = {t: prices[t] for t in pools}
        if router is None:
            return routes
        by_group = deployments_by_group(deployments_of(router))  # one pass over the model list, not one per candidate
        in_group: dict[str, list[dict]] = {}  # litellm_params.model -> the deployments of model group ``group``
        for dep in by_group.get(group, []):
            in_group.setdefault(deployment_model(dep), []).append(dep)
        # a candidate stands for its deployments in the request's group (a Router's plugins), else for the model
        # group it names (a complexity router's tier pool)
        return self._billed(router, {t: [d for m in models for d in in_group.get(m) or by_group.get(m, [])]
                                     for t, models in pools.items()}, routes)

    def _rerouted(self, narrowing: _Narrowing, healthy: list[dict]) -> list[dict] | None:
        """The deployments of the policy's next pick among the targets ``healthy`` still has (litellm left none of
        the picked target's: cooling down, filtered out by its pre-call checks), with the request's record updated to
        that pick; all of ``healthy`` (the record declined) where no mapped target has one; None: nothing healthy."""
        if not healthy:
            return None
        record = narrowing.record
        by_target: dict[str, list[dict]] = {}
        for dep in healthy:
            if (target := self.target_of(deployment_model(dep))) is not None:
                by_target.setdefault(target, []).append(dep)
        decision = narrowing.decision
        gone = [decision.target]
        while (nxt := self.decider.reroute(decision, gone)) is not None and nxt.target not in by_target:
            gone.append(nxt.target)
        record["unavailable_targets"] = sorted(set(gone))
        if nxt is None:  # no target of the bundle left: litellm's strategy picks among what is there
            record.update(declined=True, reason="fallback: no deployment of a candidate target is available",
                          baseline=None)
            return healthy
        record.update(target=nxt.target, candidates=list(nxt.candidates),
                      plugin_models=sorted({deployment_model(d) for d in by_target[nxt.target]}))
        return by_target[nxt.target]


#: what a routing plugin's record keeps of the tier classifier's decision that chose the tier whose pool it narrowed
TIER_DECISION_FIELDS = ("tier", "target", "reason", "policy", "p_correct", "latency_ms", "declined", "shadow", "arm")


def _tier_decision(earlier: object, trace: object) -> dict | None:
    """The tier classifier's decision for this request (a :class:`~.tier_classifier.PrefillTierClassifier` chose the
    complexity router's tier whose pool the plugin narrows), kept in the plugin's record as ``tier_decision`` - the
    one record a request's log line, hidden params and headers carry; None when no classifier decided it."""
    if not (owns(earlier, trace) and isinstance(earlier, dict)):
        return None
    if isinstance(earlier.get("tier_decision"), dict):  # the plugin's own, run again (health failover, a retry)
        return dict(earlier["tier_decision"])
    if "tier" not in earlier or "plugin_models" in earlier:
        return None
    return {k: earlier[k] for k in TIER_DECISION_FIELDS if k in earlier}


def _passed_over(md: Mapping, trace: object, group: str, pools: Mapping[str, list[str]]) -> list[str]:
    """The targets this request's earlier narrowing in model group ``group`` picked that its pool now lacks: litellm
    re-runs the plugins on the live part of a pool when the group picked has no healthy deployment (a complexity
    router's health failover), or retries the request; [] when there was no such narrowing."""
    earlier = narrowing_record(md, trace)
    if earlier is None or earlier.get("model_group") != group or earlier.get("target") in pools:
        return []
    return sorted({*earlier.get("unavailable_targets", ()), str(earlier.get("target"))})


def widened_pool(healthy: object, candidates: object) -> list[dict] | None:
    """Where litellm found no healthy deployment among the models a :class:`PrefillRoutingPlugin` narrowed this
    request to (``candidates``: litellm's narrowed list), the deployments of the policy's next pick among ``healthy``
    (see ``PrefillRoutingPlugin._rerouted``) - a request is not lost to a cooling-down target while others serve;
    None where another plugin's narrowing is in force, or nothing is healthy (litellm's error stands)."""
    narrowing = _NARROWED.get()
    if narrowing is None or not isinstance(healthy, list) or not isinstance(candidates, list) \
            or candidates != narrowing.models:
        return None
    _NARROWED.set(None)
    return narrowing.plugin._rerouted(narrowing, healthy)
