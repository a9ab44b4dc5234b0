"""The ``prefill`` routing strategy: a litellm ``CustomRoutingStrategyBase`` that asks the router for its healthy
deployments (cooldowns, pre-call checks, tags, order, team filters all still apply), predicts P(correct) per target
from the prompt's prefill activations and picks a deployment with a cost-aware policy. One of the litellm-facing
modules (see ``router``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

import litellm
from litellm.router import CustomRoutingStrategyBase

from .answer_lengths import AnswerLengths
from .autotune import Autotuner
from .bundle import BundleManifest
from .composition import (
    API_PROMPT_KWARGS,
    LITELLM_CLEARS_ROUTING_RECORD,
    deployment_model_info,
    deployments_of,
    failed_earlier,
    group_pick,
    healthy_deployments,
    is_prefill,
    output_token_cap,
    override_pre_call_check,
    pick_with_capacity,
    pre_route,
    pre_routing_of,
    prefill_group_models,
    prompt_of,
    raise_no_deployment,
    request_arm,
    request_metadata,
    request_override,
    response_deployment,
    routing_context,
    say_prefill_asked_of_unrouted,
    shuffle_pick,
    warm_litellm_imports,
)
from .config import PrefillStrategyArgs, parse_overrides, parse_strategy_args
from .costs import Price, lowest_price
from .decider import PrefillDecider, retry_reason
from .decision_logger import keep_routed_messages, log_target
from .deployments import DeploymentTarget, ServedBundle, deployment_id, deployment_model, priced
from .errors import ConfigurationError
from .metrics import reload_observer
from .policy import RoutingDecision
from .predictor import PrefillPredictor, shared_predictor
from .prompt import is_given
from .records import (
    DECISION_KEY,
    DECISION_LOG_KEY,
    LITELLM_DECISION_KEY,
    baseline_record,
    savings_baseline,
    standard_routing_decision,
)
from .reloading import BundleReloader
from .shared_metadata import decided_upstream, drop_records, store_decision
from .sync_bridge import run_sync

logger = logging.getLogger("litellm_prefill_router")


class RequestRouting(CustomRoutingStrategyBase):
    """A litellm custom routing strategy that chooses each request's deployment with :func:`route_request`."""

    router: litellm.Router

    def own_strategy(self) -> PrefillRoutingStrategy | None:
        """The router's own prefill strategy (None: litellm's strategy routes what no prefill group does)."""
        return None

    # litellm's CustomRoutingStrategyBase annotates both hooks as returning None; Router uses the deployment returned
    async def async_get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list | None = None,  # noqa: A002 - litellm's signature
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict:
        """The router's deployment choice for one request (see :func:`route_request`)."""
        return await route_request(self.router, self.own_strategy(), model, messages, input, specific_deployment,
                                   request_kwargs)

    def get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list | None = None,  # noqa: A002
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict:
        return run_sync(self.async_get_available_deployment(
            model=model, messages=messages, input=input, specific_deployment=specific_deployment,
            request_kwargs=request_kwargs))


class PrefillRoutingStrategy(RequestRouting):
    """Route each request to the deployment the bundle predicts answers correctly at the lowest cost."""

    def __init__(self, router: litellm.Router, args: dict | PrefillStrategyArgs,
                 predictor: PrefillPredictor | None = None, models: Collection[str] | None = None) -> None:
        """``models``: the model names of the litellm ``routing_groups`` entry this strategy routes (None: the
        router's own strategy, which leaves out the models of groups routed by a bundle of their own)."""
        self.router = router
        self.args = parse_strategy_args(args)
        self.models = frozenset(models) if models is not None else None
        warm_litellm_imports()
        # tunes the policy to a goal on the calls it decides; outlives the deciders of reloaded bundles
        self.autotuner = Autotuner(self.args.autotune) if self.args.autotune is not None else None
        # the targets' answer lengths, learned from their answers (learn_output_tokens); outlives reloads too
        self.answer_lengths = AnswerLengths() if self.args.learn_output_tokens else None
        on_reload = reload_observer(self.args.bundle) if self.args.metrics else None  # checks prometheus_client
        self._reloader = BundleReloader(self.args.bundle, self._load, lambda served: served.predictor,
                                        self.args.reload_interval_s, on_swap=self._warn_targets_without_deployment,
                                        initial=self._load(predictor), on_reload=on_reload)
        mapped = {d.target for d in self._served.deployments.values() if d is not None}
        if not mapped:
            where = "model_list" if self.models is None else \
                f"the routing group's models {sorted(self.models)} ({len(self._claimed(deployments_of(router)))} " \
                "deployments in model_list)"
            raise ConfigurationError(
                f"no deployment of {where} maps to a target of bundle {self.args.bundle}. Targets: {self.targets}. "
                "Set model_info.prefill_target on each deployment, or name the deployment after its target."
            )
        self.unmapped = [f"{d.get('model_name')} ({d.get('litellm_params', {}).get('model')})"
                         for d in self._claimed(deployments_of(router))
                         if self._served.deployments.get(deployment_id(d)) is None]
        if self.unmapped:
            logger.warning("prefill router: deployments not mapped to any bundle target (routed by litellm as without "
                           "the prefill strategy: pre-routing, routing groups, else simple-shuffle): %s", self.unmapped)
        self._warn_targets_without_deployment(self._served)
        if self.args.shadow_target is not None and self.args.shadow_target not in mapped:
            raise ConfigurationError(
                f"shadow_target {self.args.shadow_target!r} has no deployment in model_list (targets with "
                f"deployments: {sorted(mapped)}); name the target that serves your traffic today")
        self._log_target = log_target(self.args.decision_log, messages=self.args.decision_log_messages,
                                      responses=self.args.decision_log_responses, metrics=self.args.metrics,
                                      answer_lengths=self.answer_lengths)
        groups = list(self.routes())  # a restarted router keeps what it learned: answer lengths, autotune's setting
        if self.answer_lengths is not None:
            self.answer_lengths.seed_from_log(self.args.decision_log, groups)
        if self.autotuner is not None:
            self.autotuner.seed_from_log(self.args.decision_log, self.predictor.bundle.version, groups,
                                         self.decider.default_policy)

    # -- the served bundle ----------------------------------------------------
    @property
    def _served(self) -> ServedBundle:
        return self._reloader.current

    @property
    def predictor(self) -> PrefillPredictor:
        return self._served.predictor

    @property
    def decider(self) -> PrefillDecider:
        return self._served.decider

    @property
    def manifest(self) -> BundleManifest:
        return self._served.decider.manifest

    @property
    def targets(self) -> list[str]:
        return self._served.decider.targets

    @property
    def fallback_target(self) -> str:
        return self._served.decider.fallback_target

    @property
    def _deployments(self) -> dict[str, DeploymentTarget | None]:
        return self._served.deployments

    def _load(self, predictor: PrefillPredictor | None = None) -> ServedBundle:
        """Load (or take) the predictor, build the decider and map every deployment of the model list; raises
        ConfigurationError / BundleError naming what is wrong."""
        a = self.args
        predictor = predictor or shared_predictor(a.bundle, intra_op_threads=a.intra_op_threads,
                                                  max_batch_size=a.max_batch_size,
                                                  max_encoder_batch_size=a.max_encoder_batch_size,
                                                  cache_size=a.prediction_cache_size,
                                                  execution_providers=a.execution_providers,
                                                  intra_op_spinning=a.intra_op_spinning)
        decider = PrefillDecider(predictor, preset=a.preset, tolerance=a.tolerance, lambda_=a.lambda_,
                                 value_usd=a.value_usd,
                                 fallback_target=a.fallback_target, on_error=a.on_error,
                                 timeout_s=a.decision_timeout_s, max_cost_usd=a.max_cost_usd,
                                 min_p_correct=a.min_p_correct, autotuner=self.autotuner,
                                 answer_lengths=self.answer_lengths)
        served = ServedBundle(decider, {})
        for dep in self._claimed(deployments_of(self.router)):
            served.describe(dep, self.args.bundle, self._price)
        return served

    def _claimed(self, deployments: list[dict]) -> list[dict]:
        """The deployments this strategy routes: its routing group's, or (the router's own strategy) all but those
        of groups that a bundle of their own routes."""
        if self.models is not None:
            return [d for d in deployments if d.get("model_name") in self.models]
        others = prefill_group_models(self.router)
        return [d for d in deployments if d.get("model_name") not in others]

    def _warn_targets_without_deployment(self, served: ServedBundle) -> None:
        mapped = {d.target for d in served.deployments.values() if d is not None}
        self.targets_without_deployment = [t for t in served.decider.targets if t not in mapped]
        if self.targets_without_deployment:
            logger.warning("prefill router: bundle targets with no deployment (never chosen): %s",
                           self.targets_without_deployment)

    def routes(self) -> dict[str, list[tuple[dict, DeploymentTarget]]]:
        """Per model group, the deployments this strategy routes among (with their target and price)."""
        served = self._served
        out: dict[str, list[tuple[dict, DeploymentTarget]]] = {}
        for dep in self._claimed(deployments_of(self.router)):
            if (info := served.deployments.get(deployment_id(dep))) is not None:
                out.setdefault(info.model_name, []).append((dep, info))
        return out

    def reload_if_changed(self) -> bool:
        """Load the bundle again now if its directory changed (see :class:`BundleReloader`); True if swapped."""
        return self._reloader.reload_if_changed()

    # -- deployments --------------------------------------------------------
    def _describe_at_request(self, dep: dict, served: ServedBundle) -> DeploymentTarget | None:
        """The deployment's target and price; a deployment added (or updated) after construction that cannot be
        mapped or priced is left out of prefill routing (with an error log) instead of failing the request."""
        dep_id = deployment_id(dep)
        if served.known(dep_id, dep):
            return served.deployments[dep_id]
        if not self._claimed([dep]):
            return served.remember(dep_id, dep, None)  # a deployment added later that another prefill group routes
        try:
            return served.describe(dep, self.args.bundle, self._price)
        except ConfigurationError as err:
            logger.error("prefill router: deployment %r left out of prefill routing: %s", dep.get("model_name"), err)
            return served.remember(dep_id, dep, None)

    def _price(self, dep: dict, dep_id: str) -> Price:
        a = self.args
        model = deployment_model(dep)
        default = Price(a.default_input_cost_per_token or 0.0, a.default_output_cost_per_token or 0.0, "default") \
            if a.default_input_cost_per_token is not None or a.default_output_cost_per_token is not None else None
        return priced(dep, dep_id, lambda: deployment_model_info(self.router, dep_id, model), default)

    # -- routing --------------------------------------------------------------
    def own_strategy(self) -> PrefillRoutingStrategy:
        """Itself: the router's deployment choice for each request (``routing_strategy="prefill"``) is litellm's
        pre-routing strategies first (auto / complexity / quality routers may send the request on to another model
        group), then the group's healthy deployments, then :meth:`select`; a group litellm routes with its own
        strategy (``routing_groups``) keeps that strategy among the deployments of the chosen target."""
        return self

    async def select(self, model: str, healthy: list[dict], prompt: object, request_kwargs: dict,
                     pick: Callable[[list[dict]], Awaitable[dict]] | None = None) -> dict:
        """Choose among ``healthy`` (the deployments litellm found for ``model``): predict, apply the policy, then
        ``pick`` (default: litellm's simple-shuffle) among the chosen target's deployments. A group whose deployments
        map to no target is left to ``pick`` as a whole, with no decision recorded."""
        pick = pick or shuffle_pick(self.router, model, request_kwargs)
        self._reloader.maybe_reload()
        served = self._served  # one bundle per request, even if a reload swaps it meanwhile
        mapped = [(d, info) for d in healthy if (info := self._describe_at_request(d, served)) is not None]
        md = request_metadata(request_kwargs)
        trace = request_kwargs.get("litellm_trace_id")
        if not mapped:
            return await self.leave_to(pick, healthy, md, trace)
        if len({info.target for _, info in mapped}) == 1 and decided_upstream(
                md, trace, model, [deployment_model(d) for d in healthy]):
            # a tier classifier or a routing plugin sent this attempt to one target: its decision and record stand
            # (a pool of several targets is routed within by the strategy)
            return await pick(healthy)
        pre_routing = pre_routing_of(md, model)
        arm = request_arm(request_kwargs, self.args.rollout)
        as_before = self.args.shadow or arm == "control"  # decided and recorded, served as without the router
        continued = self._continued(request_kwargs, mapped)
        failed = failed_earlier(md, trace) \
            if self.args.reroute_retries and not as_before and continued is None else {}
        untried = [(d, info) for d, info in mapped if info.deployment_id not in failed]
        rerouted = bool(failed) and bool(untried) and len(untried) < len(mapped) \
            and parse_overrides(md).pin_model is None
        pool = [continued] if continued else untried if rerouted else mapped  # what this attempt routes among
        decision = await self.decide(prompt, pool, md, model, served.decider,
                                     max_output_tokens=output_token_cap(request_kwargs),
                                     pin=continued[1].target if continued else None)
        if continued is not None:
            decision = replace(decision, reason=f"pinned: continues a response of {decision.target} "
                                                "(previous_response_id)")
        if as_before:
            return await self._serve_in_shadow(decision, mapped, healthy, pick, md, trace, pre_routing, arm)
        if rerouted and decision.reason == "policy" and \
                (gone := {target for target, _ in failed.values()} - {info.target for _, info in pool}):
            decision = replace(decision, reason=retry_reason(gone))
        deployment, decision = await pick_with_capacity(pick, pool, decision, served.decider,
                                                        pinned=parse_overrides(md).pin_model is not None)
        baseline = savings_baseline(decision, mapped, lambda m: (m[1].target, m[1].price))
        record = {**decision.to_dict(), "deployment_id": deployment_id(deployment),
                  "baseline": baseline_record(baseline[1].target, baseline[1].deployment_id, baseline[1].price)
                  if baseline else None}
        self._annotate(record, model, mapped, served, arm)
        self._keep_routed_messages(record, prompt, request_kwargs)
        if failed:
            record["failed_attempts"] = [{"deployment_id": dep, "target": target, "error": error}
                                         for dep, (target, error) in failed.items()]
        self._record(md, trace, record,
                     standard_routing_decision(decision, model, baseline[0] if baseline else None), pre_routing)
        return deployment

    def _keep_routed_messages(self, record: dict, prompt: object, request_kwargs: Mapping[str, Any]) -> None:
        """The text the bundle read, as the decision log's messages of a call whose messages litellm logs without part
        of it (see :class:`~.decision_logger.RoutedMessages`): replay and feedback read what was routed on. Other
        calls' logs keep litellm's messages as sent."""
        if any(is_given(request_kwargs.get(k)) for k in API_PROMPT_KWARGS):
            keep_routed_messages(self._log_target, record, prompt)

    def _annotate(self, record: dict, model: str, mapped: list[tuple[dict, DeploymentTarget]], served: ServedBundle,
                  arm: str | None) -> None:
        """Add to a decision record the targets of ``model``'s deployments that litellm left none of for this request
        (cooling down, filtered out by its pre-call checks - a context window the prompt exceeds, a region - or by
        tags / ``order``) and the request's rollout arm."""
        group = {info.target for d in deployments_of(self.router) if d.get("model_name") == model
                 and (info := served.deployments.get(deployment_id(d))) is not None}
        if unavailable := sorted(group - {info.target for _, info in mapped}):
            record["unavailable_targets"] = unavailable
        if arm is not None:
            record["arm"] = arm

    @staticmethod
    async def leave_to(pick: Callable[[list[dict]], Awaitable[dict]], healthy: list[dict], md: dict,
                       trace_id: object = None) -> dict:
        """A request the bundle does not route, served by ``pick`` among all of ``healthy``. A record left by an
        earlier attempt (a fallback from a routed group reuses the request's metadata) must not be attributed to
        this deployment (one of another request sharing the dict stays); litellm's routing record is litellm's to
        clear where its pre-routing hook runs (it stamps or clears it on every attempt)."""
        drop_records(md, trace_id, (DECISION_KEY, DECISION_LOG_KEY) if LITELLM_CLEARS_ROUTING_RECORD else
                     (DECISION_KEY, LITELLM_DECISION_KEY, DECISION_LOG_KEY))
        return await pick(healthy)

    def _record(self, md: dict, trace_id: object, record: dict, routing: dict, pre_routing: dict | None = None
                ) -> None:
        """Write one request's decision record (named by its ``trace_id``, see :mod:`.shared_metadata`), litellm's
        routing record and (if logging) the decision log's file. A request that a litellm pre-routing strategy sent
        here keeps that step in both records."""
        if pre_routing is not None:
            record["pre_routing"] = pre_routing
            routing["signals"] = [f"pre-routed by {pre_routing.get('router_type') or 'a litellm router'}: "
                                  f"{pre_routing['model_group']} -> {pre_routing['routed_to']}", *routing["signals"]]
        store_decision(md, record, trace_id)
        md[LITELLM_DECISION_KEY] = routing
        if self._log_target is not None:
            md[DECISION_LOG_KEY] = self._log_target
        logger.debug("prefill decision %s", json.dumps(record, default=str))

    async def _serve_in_shadow(self, decision: RoutingDecision, mapped: list[tuple[dict, DeploymentTarget]],
                               healthy: list[dict], pick: Callable[[list[dict]], Awaitable[dict]], md: dict,
                               trace_id: object, pre_routing: dict | None, arm: str | None = None) -> dict:
        """Shadow mode, or the control arm of a rollout: the decision is recorded as usual, the request is served as
        without the router (by ``shadow_target``'s deployments if set)."""
        pool = [d for d, info in mapped if info.target == self.args.shadow_target] if self.args.shadow_target \
            else healthy
        if not pool:  # the shadow target's deployments are all cooling down: never lose the request
            logger.warning("prefill router (shadow): no healthy deployment of %r; serving from any",
                           self.args.shadow_target)
            pool = healthy
        deployment = await pick(pool)
        dep_id = deployment_id(deployment)
        info = next((i for _, i in mapped if i.deployment_id == dep_id), None)
        record = {**decision.to_dict(), "deployment_id": dep_id, "shadow": True,
                  "served_target": info.target if info else None, "baseline": None}
        self._annotate(record, decision.model_group or "", mapped, self._served, arm)
        routing = standard_routing_decision(decision, decision.model_group or "", None)
        routing["routed_model"] = record["served_target"] or deployment_model(deployment)
        routing["signals"] = [*routing["signals"], f"shadow: prefill would route to {decision.target}"]
        self._record(md, trace_id, record, routing, pre_routing)
        return deployment

    def _continued(self, request_kwargs: dict, mapped: list[tuple[dict, DeploymentTarget]]
                   ) -> tuple[dict, DeploymentTarget] | None:
        """For a Responses API request continuing a response (``previous_response_id``), the deployment that answered
        it, when it is among ``mapped`` (``responses_affinity``); None otherwise - logged when that deployment is not
        available, since the request then goes to a model that may not have the conversation."""
        if not self.args.responses_affinity or (dep_id := response_deployment(request_kwargs)) is None:
            return None
        found = next(((d, info) for d, info in mapped if info.deployment_id == dep_id), None)
        if found is None and dep_id in self._served.deployments:
            logger.warning("prefill router: a Responses API request continues a response of deployment %s, which is "
                           "not available now (cooling down, or filtered out); routing it by the policy", dep_id)
        return found

    async def decide(self, prompt: object, mapped: list[tuple[dict, DeploymentTarget]], metadata: dict,
                     model_group: str | None = None, decider: PrefillDecider | None = None,
                     max_output_tokens: int | None = None, pin: str | None = None) -> RoutingDecision:
        by_target: dict[str, list[Price]] = {}
        for _, info in mapped:
            by_target.setdefault(info.target, []).append(info.price)
        # the cheapest deployment's price stands for its target
        price = {t: p for t, ps in by_target.items() if (p := lowest_price(ps)) is not None}
        overrides = parse_overrides(metadata)
        if max_output_tokens is not None and overrides.max_output_tokens is None:
            overrides = overrides.model_copy(update={"max_output_tokens": max_output_tokens})
        if pin is not None:  # the strategy's own pin (a continued response), over the request's
            overrides = overrides.model_copy(update={"pin_model": pin})
        return await (decider or self.decider).adecide(prompt, price, overrides, model_group)


async def route_request(router: litellm.Router, own: PrefillRoutingStrategy | None, model: str,
                        messages: list[dict[str, str]] | None, input: str | list | None,  # noqa: A002 - litellm's
                        specific_deployment: bool | None, request_kwargs: dict | None) -> dict:
    """The deployment for one request of ``router``, in place of litellm's own pick: litellm's pre-routing strategies
    first (auto / complexity / quality routers may send the request on to another model group), then the group's
    healthy deployments, then the prefill strategy of the group's ``routing_groups`` entry, else ``own`` (the
    router's prefill strategy; None: litellm's own strategy picks, with no decision). litellm's strategy for the
    request - a key's or team's override, else the group's - picks among the deployments of the chosen target; an
    override takes precedence over every prefill strategy, as litellm gives it precedence over its routing groups."""
    request_kwargs = request_kwargs if request_kwargs is not None else {}
    model, messages = await pre_route(router, model, messages, input, specific_deployment, request_kwargs)
    strategy, selector = routing_context(router, model, request_kwargs)
    healthy = await healthy_deployments(router, model, request_kwargs, messages, input, specific_deployment)
    if isinstance(healthy, dict):  # one deployment asked for by id
        await override_pre_call_check(router, strategy, selector, healthy)
        return healthy
    if not healthy:
        await raise_no_deployment(router, model)
    pick = group_pick(router, strategy, selector, model, messages, input, request_kwargs)
    owner = selector if isinstance(selector, PrefillRoutingStrategy) else own  # a group with its own bundle
    if owner is None and is_prefill(request_kwargs.get("routing_strategy")):
        say_prefill_asked_of_unrouted(router, model, strategy)
    if owner is None or request_override(router, request_kwargs, strategy):
        return await PrefillRoutingStrategy.leave_to(pick, healthy, request_metadata(request_kwargs),
                                                     request_kwargs.get("litellm_trace_id"))
    return await owner.select(model, healthy, prompt_of(messages, input, request_kwargs), request_kwargs,
                              pick=pick)


class PrefillGroupsRouting(RequestRouting):
    """litellm 1.110+: the custom routing of a Router whose own strategy is litellm's and whose ``routing_groups``
    entries with the prefill strategy route their models by their bundles (the core takes one custom strategy per
    router, none per group). Every other request gets its litellm strategy's pick - the group's or the router's, or
    a key's override - among its healthy deployments, with no decision, as without the prefill groups."""

    def __init__(self, router: litellm.Router) -> None:
        self.router = router
