"""LiteLLM integration: the only module (with ``proxy_hook``) that imports litellm.

* :class:`PrefillRoutingStrategy` - a ``CustomRoutingStrategyBase`` that asks the
  router for its healthy deployments (cooldowns, pre-call checks, tags, order,
  team filters all still apply), predicts P(correct) per target from the prompt's
  prefill activations, and picks a deployment with a cost-aware policy.
* :class:`PrefillRouter` - ``litellm.Router`` that accepts ``routing_strategy="prefill"``
  and copies each decision into the response's ``_hidden_params`` (chat and text completions, Responses API,
  Anthropic messages).
* :func:`install` - teach a plain ``litellm.Router`` (SDK or proxy) the ``prefill`` strategy.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.router import CustomRoutingStrategyBase
from litellm.router_strategy.simple_shuffle import simple_shuffle
from litellm.router_utils.handle_error import async_raise_no_deployment_exception

from litellm.router_utils.fallback_event_handlers import record_pre_routing_selection

from .bundle import BundleManifest
from .config import PrefillStrategyArgs, parse_overrides, parse_strategy_args
from .costs import Price, lowest_price
from .decider import PrefillDecider, cap_in, retry_reason
from .errors import ConfigurationError, UnpricedDeploymentError
from .jsonl import append_line, log_path
from .policy import RoutingDecision
from .predictor import PrefillPredictor, shared_predictor
from .records import (
    DECISION_KEY,
    DECISION_LOG_KEY,
    LITELLM_DECISION_KEY,
    baseline_record,
    decision_log_row,
    savings_baseline,
    standard_routing_decision,
)
from .reloading import BundleReloader

logger = logging.getLogger("litellm_prefill_router")

PREFILL = "prefill"
T = TypeVar("T")

# Modules litellm imports lazily inside the logging of the first finished request: litellm 1.102's
# async_success_handler pulls in the custom-logger registry (~400 ms of imports on 2 cores), on the event loop,
# which stalls whichever request is being routed at that moment. Importing them when the strategy is built moves
# that cost to start-up. A litellm upgrade that moves or drops one only loses the warm-up (logged at debug level).
LAZY_LITELLM_MODULES = ("litellm.litellm_core_utils.custom_logger_registry",)


def warm_litellm_imports(modules: tuple[str, ...] = LAZY_LITELLM_MODULES) -> list[str]:
    """Import litellm's lazily imported logging modules now; returns the ones that could not be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - an optional warm-up must never break router construction
            logger.debug("prefill router: could not pre-import %s (%s); the first requests may stall while "
                         "litellm imports it", name, err)
            missing.append(name)
    return missing


@dataclass(frozen=True)
class DeploymentTarget:
    deployment_id: str
    model_name: str
    target: str
    price: Price


def _is_prefill(strategy: object) -> bool:
    return getattr(strategy, "value", strategy) == PREFILL


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefill-sync") as ex:
        return ex.submit(asyncio.run, coro).result()


_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")  # chat / chat (new) / Responses API


def _output_token_cap(request_kwargs: dict) -> int | None:
    """The request's own limit on the answer length, if it sets one (the cost estimate never assumes more)."""
    return cap_in(request_kwargs, _OUTPUT_CAPS)


def _metadata(request_kwargs: dict, default_key: str = "metadata") -> dict:
    """The request's metadata dict (created under ``default_key`` if it has none): ``litellm_metadata`` when it is a
    dict, else ``metadata``. litellm hands this same dict to the routing strategy as ``request_kwargs[...]``, so a
    decision the strategy writes into it can be read back after the call."""
    key = "litellm_metadata" if isinstance(request_kwargs.get("litellm_metadata"), dict) else default_key
    md = request_kwargs.get(key)
    if not isinstance(md, dict):
        md = {}
        request_kwargs[key] = md
    return md


# litellm's pre-routing step (auto_router / complexity_router / quality_router deployments, routing plugins): a
# release without it has no such deployments to serve, and the strategy then routes the requested group directly.
_LITELLM_CLEARS_ROUTING_RECORD = callable(getattr(litellm.Router, "async_pre_routing_hook", None))


async def _pre_route(router: litellm.Router, model: str, messages: list[dict[str, str]] | None, input: object,
                     specific_deployment: bool | None, request_kwargs: dict
                     ) -> tuple[str, list[dict[str, str]] | None]:
    """Run litellm's pre-routing hook as its own ``async_get_available_deployment`` does (the prefill strategy
    replaces that method): a strategy router deployment may send the request to another model group (with its own
    messages and per-tier params). Returns the model group to route and its messages."""
    hook = getattr(router, "async_pre_routing_hook", None)
    if hook is None:
        return model, messages
    responses_call = input is not None and messages is None
    routed = await hook(model=model, request_kwargs=request_kwargs, messages=messages, input=input,
                        specific_deployment=specific_deployment)
    if routed is not None:
        model, messages = routed.model, routed.messages
        record_pre_routing_selection(request_kwargs, model)  # fallbacks key off the group it picked
    pin = getattr(router, "_pin_tier_params_onto_request", None)
    pinned = pin is not None and pin(model=model, tier_litellm_params=routed.litellm_params if routed else None,
                                     request_kwargs=request_kwargs, responses_call=responses_call)
    restore = getattr(router, "_restore_client_ceiling_no_tier_pins", None)
    if not pinned and restore is not None:
        restore(request_kwargs)
    return model, messages


def _pre_routing_of(md: dict, model: str) -> dict | None:
    """What a litellm pre-routing strategy did to this request, from the routing record it left (litellm stamps or
    clears that record at every routing attempt, before the deployment is chosen)."""
    if not _LITELLM_CLEARS_ROUTING_RECORD:
        return None
    previous = md.get(LITELLM_DECISION_KEY)
    if not isinstance(previous, dict) or not previous.get("router_model_name"):
        return None
    return {"model_group": previous["router_model_name"], "routed_to": model,
            "router_type": previous.get("router_type"), "cause": previous.get("cause")}


def _failed_earlier(md: dict) -> dict[str, tuple[str, str]]:
    """The deployments this strategy chose on earlier attempts of this request that failed: deployment id ->
    (target, error type). Read from litellm's retry breadcrumbs (``previous_models``: each failed attempt's
    metadata, our decision record included); empty on a first attempt or where litellm keeps none."""
    crumbs = md.get("previous_models")
    failed: dict[str, tuple[str, str]] = {}
    for crumb in crumbs if isinstance(crumbs, (list, tuple)) else ():
        meta = (crumb.get("metadata") or crumb.get("litellm_metadata")) if isinstance(crumb, Mapping) else None
        record = meta.get(DECISION_KEY) if isinstance(meta, Mapping) else None
        if isinstance(record, Mapping) and record.get("deployment_id") and not record.get("shadow"):
            failed[str(record["deployment_id"])] = (str(record.get("target")),
                                                    str(crumb.get("exception_type") or "error"))
    return failed


def _routing_groups(router: litellm.Router) -> list[Any]:
    """The router's ``routing_groups`` entries as given (RoutingGroup or dict; read before litellm indexes them)."""
    return list(getattr(router, "_routing_groups_input", None) or [])


def _group_field(group: Any, name: str) -> Any:
    return group.get(name) if isinstance(group, dict) else getattr(group, name, None)


def _prefill_group_models(router: litellm.Router) -> set[str]:
    """Model names that a ``routing_groups`` entry with ``routing_strategy: prefill`` routes with its own bundle."""
    return {str(m) for g in _routing_groups(router) if _is_prefill(_group_field(g, "routing_strategy"))
            for m in _group_field(g, "models") or []}


def _routing_context(router: litellm.Router, model: str, request_kwargs: dict) -> tuple[str | None, Any]:
    """litellm's routing strategy and selector for ``model``: its ``routing_groups`` entry, a per-request override
    (the proxy forwards a key's or team's ``router_settings``), else the router's own (here: prefill, no selector)."""
    context = getattr(router, "_get_routing_context", None)
    if context is None:
        return None, None
    strategy, selector = context(model, request_kwargs)
    return (getattr(strategy, "value", strategy), selector)


def _request_override(router: litellm.Router, request_kwargs: dict) -> bool:
    """Whether this request carries a litellm routing strategy of its own (a key's or team's ``router_settings``,
    forwarded by the proxy; litellm ignores unknown names, with a warning). ``prefill`` there means: as configured."""
    override = getattr(router, "_get_request_routing_strategy_override", None)
    return (override is not None and not _is_prefill(request_kwargs.get("routing_strategy"))
            and override(request_kwargs) is not None)


async def _override_pre_call_check(router: litellm.Router, strategy: str | None, selector: Any, deployment: dict
                                   ) -> None:
    """The rpm accounting a per-request override's selector does for the deployment served (litellm's own step)."""
    check = getattr(router, "_async_override_selector_pre_call_check", None)
    if check is not None:
        await check(strategy, selector, deployment, None)


def _shuffle_pick(router: litellm.Router, model: str) -> Callable[[list[dict]], Awaitable[dict]]:
    """litellm's simple-shuffle among the deployments given (weights / rpm / tpm respected)."""
    async def shuffle(deployments: list[dict]) -> dict:
        return simple_shuffle(llm_router_instance=router, healthy_deployments=deployments, model=model)
    return shuffle


def _prompt_of(messages: Any, input: Any) -> object:  # noqa: A002 - litellm's name
    """What a request routes on: its messages, else its ``input`` (Responses API, text completions)."""
    return messages if messages is not None else input


def _group_pick(router: litellm.Router, strategy: str | None, selector: Any, model: str,
                messages: list[dict[str, str]] | None, input: object,
                request_kwargs: dict) -> Callable[[list[dict]], Awaitable[dict]]:
    """How litellm itself picks among deployments of ``model``: the group's strategy (latency-, usage-, cost-based,
    least-busy: its selector, which also enforces rpm/tpm limits) or simple-shuffle."""
    select = getattr(router, "_select_deployment_async", None)
    if selector is None or select is None or strategy in (None, "simple-shuffle", PREFILL):
        return _shuffle_pick(router, model)

    async def pick(deployments: list[dict]) -> dict:
        deployment = await select(strategy=strategy, selector=selector, model=model, healthy_deployments=deployments,
                                  messages=messages, input=input, request_kwargs=request_kwargs)
        if deployment is None:  # e.g. every deployment over its rpm/tpm limit: what litellm raises itself
            raise await async_raise_no_deployment_exception(litellm_router_instance=router, model=model,
                                                            parent_otel_span=None)
        await _override_pre_call_check(router, strategy, selector, deployment)
        return cast(dict, deployment)
    return pick


def deployment_price(dep: dict, known_model_info: Callable[[], Any]) -> Price | None:
    """A deployment's price: ``litellm_params`` / ``model_info`` (input and output cost per token), else
    litellm's cost map through ``known_model_info``. litellm answers 0/0 for models it does not know, so a zero
    price from its map counts as unknown (None); an explicit 0 in the deployment's config is a free deployment."""
    for source, src in (("litellm_params", dep.get("litellm_params") or {}), ("model_info", dep.get("model_info") or {})):
        if src.get("input_cost_per_token") is not None and src.get("output_cost_per_token") is not None:
            return Price(float(src["input_cost_per_token"]), float(src["output_cost_per_token"]), source)
    try:
        info = known_model_info()
    except Exception:  # noqa: BLE001 - litellm raises many kinds for unknown models
        info = None
    pin, pout = (info or {}).get("input_cost_per_token"), (info or {}).get("output_cost_per_token")
    if pin is not None and pout is not None and (pin > 0 or pout > 0):
        return Price(float(pin), float(pout), "litellm")
    return None


def _described_from(dep: dict) -> tuple[object, ...]:
    """What a deployment's target and price are read from. A deployment updated in place (the proxy's
    ``/model/update``, ``Router.upsert_deployment``: same id, new price or target) is described again when it
    changes."""
    params, info = dep.get("litellm_params") or {}, dep.get("model_info") or {}
    return (dep.get("model_name"), params.get("model"), params.get("input_cost_per_token"),
            params.get("output_cost_per_token"), info.get("prefill_target"), info.get("input_cost_per_token"),
            info.get("output_cost_per_token"))


@dataclass
class _ServedBundle:
    """What one bundle serves with: swapped whole when the bundle is reloaded, read once per request."""

    decider: PrefillDecider
    deployments: dict[str, DeploymentTarget | None]  # deployment id -> its target and price (None: unmapped)
    described_from: dict[str, tuple[object, ...]] = field(default_factory=dict)  # deployment id -> _described_from

    def remember(self, dep_id: str, dep: dict, info: DeploymentTarget | None) -> DeploymentTarget | None:
        self.deployments[dep_id] = info
        self.described_from[dep_id] = _described_from(dep)
        return info

    def known(self, dep_id: str, dep: dict) -> bool:
        """The deployment was described as it is now."""
        return dep_id in self.deployments and self.described_from.get(dep_id) == _described_from(dep)

    @property
    def predictor(self) -> PrefillPredictor:
        return self.decider.predictor


class PrefillRoutingStrategy(CustomRoutingStrategyBase):
    """Route each request to the deployment the bundle predicts answers correctly at the lowest cost."""

    def __init__(self, router: litellm.Router, args: dict | PrefillStrategyArgs,
                 predictor: PrefillPredictor | None = None, models: Collection[str] | None = None) -> None:
        """``models``: the model names of the litellm ``routing_groups`` entry this strategy routes (None: the
        router's own strategy, which leaves out the models of groups routed by a bundle of their own)."""
        self.router = router
        self.args = parse_strategy_args(args)
        self.models = frozenset(models) if models is not None else None
        warm_litellm_imports()
        self._reloader = BundleReloader(self.args.bundle, self._load, lambda served: served.predictor,
                                        self.args.reload_interval_s, on_swap=self._warn_targets_without_deployment,
                                        initial=self._load(predictor))
        mapped = {d.target for d in self._served.deployments.values() if d is not None}
        if not mapped:
            raise ConfigurationError(
                f"no deployment in model_list maps to a target of bundle {self.args.bundle}. Targets: {self.targets}. "
                "Set model_info.prefill_target on each deployment, or name the deployment after its target."
            )
        self.unmapped = [f"{d.get('model_name')} ({d.get('litellm_params', {}).get('model')})"
                         for d in self._claimed(router.model_list or [])
                         if self._served.deployments.get(self._dep_id(d)) is None]
        if self.unmapped:
            logger.warning("prefill router: deployments not mapped to any bundle target (routed by litellm as without "
                           "the prefill strategy: pre-routing, routing groups, else simple-shuffle): %s", self.unmapped)
        self._warn_targets_without_deployment(self._served)
        if self.args.shadow_target is not None and self.args.shadow_target not in mapped:
            raise ConfigurationError(
                f"shadow_target {self.args.shadow_target!r} has no deployment in model_list (targets with "
                f"deployments: {sorted(mapped)}); name the target that serves your traffic today")
        self._log_target = None
        if self.args.decision_log:
            register_decision_log()
            self._log_target = {"path": str(Path(self.args.decision_log).expanduser().resolve()),
                                "messages": self.args.decision_log_messages,
                                "responses": self.args.decision_log_responses}

    # -- the served bundle ----------------------------------------------------
    @property
    def _served(self) -> _ServedBundle:
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

    def _load(self, predictor: PrefillPredictor | None = None) -> _ServedBundle:
        """Load (or take) the predictor, build the decider and map every deployment of the model list; raises
        ConfigurationError / BundleError naming what is wrong."""
        a = self.args
        predictor = predictor or shared_predictor(a.bundle, intra_op_threads=a.intra_op_threads,
                                                  max_batch_size=a.max_batch_size,
                                                  max_encoder_batch_size=a.max_encoder_batch_size)
        decider = PrefillDecider(predictor, preset=a.preset, tolerance=a.tolerance, lambda_=a.lambda_,
                                 fallback_target=a.fallback_target, on_error=a.on_error)
        served = _ServedBundle(decider, {})
        for dep in self._claimed(self.router.model_list or []):
            self._describe(dep, served)
        return served

    def _claimed(self, deployments: list[dict]) -> list[dict]:
        """The deployments this strategy routes: its routing group's, or (the router's own strategy) all but those
        of groups that a bundle of their own routes."""
        if self.models is not None:
            return [d for d in deployments if d.get("model_name") in self.models]
        others = _prefill_group_models(self.router)
        return [d for d in deployments if d.get("model_name") not in others]

    def _warn_targets_without_deployment(self, served: _ServedBundle) -> None:
        mapped = {d.target for d in served.deployments.values() if d is not None}
        self.targets_without_deployment = [t for t in served.decider.targets if t not in mapped]
        if self.targets_without_deployment:
            logger.warning("prefill router: bundle targets with no deployment (never chosen): %s",
                           self.targets_without_deployment)

    def routes(self) -> dict[str, list[tuple[dict, DeploymentTarget]]]:
        """Per model group, the deployments this strategy routes among (with their target and price)."""
        served = self._served
        out: dict[str, list[tuple[dict, DeploymentTarget]]] = {}
        for dep in self._claimed(self.router.model_list or []):
            if (info := served.deployments.get(self._dep_id(dep))) is not None:
                out.setdefault(info.model_name, []).append((dep, info))
        return out

    def reload_if_changed(self) -> bool:
        """Load the bundle again now if its directory changed (see :class:`BundleReloader`); True if swapped."""
        return self._reloader.reload_if_changed()

    # -- deployments --------------------------------------------------------
    def _target_of(self, dep: dict, targets: list[str]) -> str | None:
        info = dep.get("model_info") or {}
        explicit = info.get("prefill_target")
        if explicit is not None:
            if explicit not in targets:
                raise ConfigurationError(
                    f"deployment {dep.get('model_name')!r} has model_info.prefill_target={explicit!r}, which is not "
                    f"a target of bundle {self.args.bundle}; valid targets: {targets}"
                )
            return str(explicit)
        model = str((dep.get("litellm_params") or {}).get("model") or "")
        for name in (dep.get("model_name"), model, model.split("/")[-1]):
            if name in targets:
                return str(name)
        return None

    @staticmethod
    def _dep_id(dep: dict) -> str:
        return str((dep.get("model_info") or {}).get("id") or id(dep))

    def _describe(self, dep: dict, served: _ServedBundle) -> DeploymentTarget | None:
        dep_id = self._dep_id(dep)
        if served.known(dep_id, dep):
            return served.deployments[dep_id]
        target = self._target_of(dep, served.decider.targets)
        info = None if target is None else DeploymentTarget(dep_id, str(dep.get("model_name")), target,
                                                             self._price(dep, dep_id))
        return served.remember(dep_id, dep, info)

    def _describe_at_request(self, dep: dict, served: _ServedBundle) -> DeploymentTarget | None:
        """Like _describe, but a deployment added (or updated) after construction that cannot be mapped or priced
        is left out of prefill routing (with an error log) instead of failing the request."""
        dep_id = self._dep_id(dep)
        if served.known(dep_id, dep):
            return served.deployments[dep_id]
        if not self._claimed([dep]):
            return served.remember(dep_id, dep, None)  # a deployment added later that another prefill group routes
        try:
            return self._describe(dep, served)
        except ConfigurationError as err:
            logger.error("prefill router: deployment %r left out of prefill routing: %s", dep.get("model_name"), err)
            return served.remember(dep_id, dep, None)

    def _price(self, dep: dict, dep_id: str) -> Price:
        model = str((dep.get("litellm_params") or {}).get("model") or "")
        price = deployment_price(dep, lambda: self.router.get_deployment_model_info(model_id=dep_id, model_name=model))
        if price is not None:
            return price
        a = self.args
        if a.default_input_cost_per_token is not None or a.default_output_cost_per_token is not None:
            return Price(a.default_input_cost_per_token or 0.0, a.default_output_cost_per_token or 0.0, "default")
        raise UnpricedDeploymentError(
            f"deployment {dep.get('model_name')!r} (model {model!r}, id {dep_id}) has no known price: set "
            "model_info.input_cost_per_token and output_cost_per_token on it, or routing_strategy_args "
            "default_input_cost_per_token/default_output_cost_per_token."
        )

    # -- routing --------------------------------------------------------------
    # litellm's CustomRoutingStrategyBase annotates both hooks as returning None; Router uses the deployment returned
    async def async_get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list | None = None,  # noqa: A002 - litellm's signature
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict:
        """The router's deployment choice for one request (``routing_strategy="prefill"``): litellm's pre-routing
        strategies first (auto / complexity / quality routers may send the request on to another model group), then
        the group's healthy deployments, then :meth:`select`; a group litellm routes with its own strategy
        (``routing_groups``) keeps that strategy among the deployments of the chosen target."""
        request_kwargs = request_kwargs if request_kwargs is not None else {}
        model, messages = await _pre_route(self.router, model, messages, input, specific_deployment, request_kwargs)
        strategy, selector = _routing_context(self.router, model, request_kwargs)
        healthy = await self.router.async_get_healthy_deployments(
            model=model, request_kwargs=request_kwargs, messages=messages, input=input,
            specific_deployment=specific_deployment,
        )
        if isinstance(healthy, dict):  # one deployment asked for by id
            await _override_pre_call_check(self.router, strategy, selector, healthy)
            return healthy
        if not healthy:
            raise await async_raise_no_deployment_exception(
                litellm_router_instance=self.router, model=model, parent_otel_span=None)
        pick = _group_pick(self.router, strategy, selector, model, messages, input, request_kwargs)
        if _request_override(self.router, request_kwargs):
            # a key's or team's routing_strategy (the proxy forwards it per request) takes precedence over every
            # configured strategy, as litellm gives it precedence over its routing groups
            return await self.leave_to(pick, healthy, _metadata(request_kwargs))
        owner = selector if isinstance(selector, PrefillRoutingStrategy) else self  # a group with its own bundle
        return await owner.select(model, healthy, _prompt_of(messages, input), request_kwargs, pick=pick)

    async def select(self, model: str, healthy: list[dict], prompt: object, request_kwargs: dict,
                     pick: Callable[[list[dict]], Awaitable[dict]] | None = None) -> dict:
        """Choose among ``healthy`` (the deployments litellm found for ``model``): predict, apply the policy, then
        ``pick`` (default: litellm's simple-shuffle) among the chosen target's deployments. A group whose deployments
        map to no target is left to ``pick`` as a whole, with no decision recorded."""
        pick = pick or _shuffle_pick(self.router, model)
        self._reloader.maybe_reload()
        served = self._served  # one bundle per request, even if a reload swaps it meanwhile
        mapped = [(d, info) for d in healthy if (info := self._describe_at_request(d, served)) is not None]
        md = _metadata(request_kwargs)
        if not mapped:
            return await self.leave_to(pick, healthy, md)
        pre_routing = _pre_routing_of(md, model)
        failed = _failed_earlier(md) if self.args.reroute_retries and not self.args.shadow else {}
        untried = [(d, info) for d, info in mapped if info.deployment_id not in failed]
        rerouted = bool(failed) and bool(untried) and len(untried) < len(mapped) \
            and parse_overrides(md).pin_model is None
        decision = await self.decide(prompt, untried if rerouted else mapped, md, model, served.decider,
                                     max_output_tokens=_output_token_cap(request_kwargs))
        if self.args.shadow:
            return await self._serve_in_shadow(decision, mapped, healthy, pick, md, pre_routing)
        gone = sorted({target for target, _ in failed.values()} - {info.target for _, info in untried})
        if rerouted and gone and decision.reason == "policy":
            decision = replace(decision, reason=retry_reason(gone))
        deployment = await pick([d for d, info in (untried if rerouted else mapped) if info.target == decision.target])
        baseline = savings_baseline(decision, mapped, lambda m: (m[1].target, m[1].price))
        record = {**decision.to_dict(), "deployment_id": self._dep_id(deployment),
                  "baseline": baseline_record(baseline[1].target, baseline[1].deployment_id, baseline[1].price)
                  if baseline else None}
        if failed:
            record["failed_attempts"] = [{"deployment_id": dep, "target": target, "error": error}
                                         for dep, (target, error) in failed.items()]
        self._record(md, record, standard_routing_decision(decision, model, baseline[0] if baseline else None),
                     pre_routing)
        return deployment

    @staticmethod
    async def leave_to(pick: Callable[[list[dict]], Awaitable[dict]], healthy: list[dict], md: dict) -> dict:
        """A request the bundle does not route, served by ``pick`` among all of ``healthy``. A record left by an
        earlier attempt (a fallback from a routed group reuses the request's metadata) must not be attributed to
        this deployment; litellm's routing record is litellm's to clear where its pre-routing hook runs (it stamps or
        clears it on every attempt)."""
        for key in (DECISION_KEY, DECISION_LOG_KEY) if _LITELLM_CLEARS_ROUTING_RECORD else \
                (DECISION_KEY, LITELLM_DECISION_KEY, DECISION_LOG_KEY):
            md.pop(key, None)
        return await pick(healthy)

    def _record(self, md: dict, record: dict, routing: dict, pre_routing: dict | None = None) -> None:
        """Write one request's decision record, litellm's routing record and (if logging) the decision log's file.
        A request that a litellm pre-routing strategy sent here keeps that step in both records."""
        if pre_routing is not None:
            record["pre_routing"] = pre_routing
            routing["signals"] = [f"pre-routed by {pre_routing.get('router_type') or 'a litellm router'}: "
                                  f"{pre_routing['model_group']} -> {pre_routing['routed_to']}", *routing["signals"]]
        md[DECISION_KEY] = record
        md[LITELLM_DECISION_KEY] = routing
        if self._log_target is not None:
            md[DECISION_LOG_KEY] = self._log_target
        logger.debug("prefill decision %s", json.dumps(record, default=str))

    async def _serve_in_shadow(self, decision: RoutingDecision, mapped: list[tuple[dict, DeploymentTarget]],
                               healthy: list[dict], pick: Callable[[list[dict]], Awaitable[dict]], md: dict,
                               pre_routing: dict | None) -> dict:
        """Shadow mode: the decision is recorded as usual, the request is served as without the router."""
        pool = [d for d, info in mapped if info.target == self.args.shadow_target] if self.args.shadow_target \
            else healthy
        if not pool:  # the shadow target's deployments are all cooling down: never lose the request
            logger.warning("prefill router (shadow): no healthy deployment of %r; serving from any",
                           self.args.shadow_target)
            pool = healthy
        deployment = await pick(pool)
        dep_id = self._dep_id(deployment)
        info = next((i for _, i in mapped if i.deployment_id == dep_id), None)
        record = {**decision.to_dict(), "deployment_id": dep_id, "shadow": True,
                  "served_target": info.target if info else None, "baseline": None}
        routing = standard_routing_decision(decision, decision.model_group or "", None)
        routing["routed_model"] = record["served_target"] or str((deployment.get("litellm_params") or {}).get("model"))
        routing["signals"] = [*routing["signals"], f"shadow: prefill would route to {decision.target}"]
        self._record(md, record, routing, pre_routing)
        return deployment

    def get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list | None = None,  # noqa: A002
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict:
        return _run_sync(self.async_get_available_deployment(
            model=model, messages=messages, input=input, specific_deployment=specific_deployment,
            request_kwargs=request_kwargs))

    async def decide(self, prompt: object, mapped: list[tuple[dict, DeploymentTarget]], metadata: dict,
                     model_group: str | None = None, decider: PrefillDecider | None = None,
                     max_output_tokens: int | None = None) -> RoutingDecision:
        by_target: dict[str, list[Price]] = {}
        for _, info in mapped:
            by_target.setdefault(info.target, []).append(info.price)
        # the cheapest deployment's price stands for its target
        price = {t: p for t, ps in by_target.items() if (p := lowest_price(ps)) is not None}
        overrides = parse_overrides(metadata)
        if max_output_tokens is not None and overrides.max_output_tokens is None:
            overrides = overrides.model_copy(update={"max_output_tokens": max_output_tokens})
        return await (decider or self.decider).adecide(prompt, price, overrides, model_group)


# -- decision / outcome log ------------------------------------------------------
class DecisionLogger(CustomLogger):
    """Appends one JSON line per routed call: the decision, its outcome and (by default) the messages.

    One instance serves every router in the process (litellm keeps a single callback per class); each call's
    metadata names the file of the router that decided it.
    """

    #: call ids remembered to drop litellm's second report of one call (the Responses API reports each success
    #: twice in litellm 1.102, with the same litellm_call_id)
    RECENT_CALLS = 4096

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, bool], None] = OrderedDict()

    def _seen(self, call_id: object, ok: bool) -> bool:
        if not call_id:
            return False
        key = (str(call_id), ok)
        with self._lock:
            if key in self._recent:
                return True
            self._recent[key] = None
            while len(self._recent) > self.RECENT_CALLS:
                self._recent.popitem(last=False)
        return False

    def _write(self, kwargs: dict, ok: bool, response_obj: Any, start: Any, end: Any) -> None:
        md = ((kwargs.get("litellm_params") or {}).get("metadata") or {})
        decision, target = md.get(DECISION_KEY), md.get(DECISION_LOG_KEY)
        if not decision or not target or self._seen(kwargs.get("litellm_call_id"), ok):
            return
        try:
            latency = (end - start).total_seconds()
        except Exception:  # noqa: BLE001
            latency = None
        slo = kwargs.get("standard_logging_object") or {}
        extra: dict[str, object] = {}
        if target.get("messages", True):
            extra["messages"] = kwargs.get("messages")
        if ok and target.get("responses", False):
            try:
                extra["response"] = response_obj.choices[0].message.content
            except (AttributeError, IndexError, TypeError):
                extra["response"] = None
        row = decision_log_row(
            call_id=("litellm_call_id", kwargs.get("litellm_call_id")),
            response_id=response_obj.get("id") if isinstance(response_obj, dict) else getattr(response_obj, "id", None),
            decision=decision, ok=ok, model=kwargs.get("model"), cost=kwargs.get("response_cost"),
            prompt_tokens=slo.get("prompt_tokens"), completion_tokens=slo.get("completion_tokens"), latency_s=latency,
            error=kwargs.get("exception"), extra=extra)
        line = json.dumps(row, default=str)
        with self._lock:
            append_line(log_path(target["path"]), line)

    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, True, response_obj, start_time, end_time)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, False, response_obj, start_time, end_time)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, True, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, False, response_obj, start_time, end_time)


_DECISION_LOGGER: DecisionLogger | None = None


def register_decision_log() -> DecisionLogger:
    """The process-wide decision logger, registered with litellm once."""
    global _DECISION_LOGGER
    if _DECISION_LOGGER is None:
        _DECISION_LOGGER = DecisionLogger()
        litellm.logging_callback_manager.add_litellm_callback(_DECISION_LOGGER)
    return _DECISION_LOGGER


# -- Router integration --------------------------------------------------------
def apply_prefill_routing_strategy(router: litellm.Router, routing_strategy_args: dict | None) -> PrefillRoutingStrategy:
    """Attach a prefill strategy to ``router`` (what ``routing_strategy="prefill"`` does)."""
    args = routing_strategy_args or getattr(router, "routing_strategy_args", None)
    strategy = PrefillRoutingStrategy(router, args or {})
    router.routing_strategy = PREFILL
    router.set_custom_routing_strategy(strategy)
    router.prefill_strategy = strategy  # type: ignore[attr-defined]
    return strategy


def _attach_decision(response: Any, metadata: dict) -> Any:
    """Copy the decision into the response's hidden params: a dict (chat, Responses API), litellm's
    ``HiddenParams`` (text completions) or the ``_hidden_params`` key of a dict response (Anthropic messages).
    Streams carry none; their decision is in the request metadata and the decision log."""
    decision = metadata.get(DECISION_KEY)
    if decision is None or response is None:
        return response
    if isinstance(response, dict):  # an Anthropic Messages response: litellm adds its headers to this key later
        hidden = response.setdefault("_hidden_params", {}) if response.get("type") == "message" else None
    else:
        hidden = getattr(response, "_hidden_params", None)
    if hidden is not None and callable(getattr(hidden, "__setitem__", None)):
        try:
            hidden["prefill_routing"] = decision
        except Exception as err:  # a read-only container in some litellm release: the route stands
            logger.debug("could not attach the prefill decision to %s: %s", type(response).__name__, err)
    return response


# Router methods that route one request and return its response, with the metadata key litellm uses for them:
# chat completions (async/sync), text completions, and the generic path (Responses API, Anthropic /v1/messages,
# ...). Each is wrapped so the decision lands in the response's ``_hidden_params["prefill_routing"]``. The generic
# path passes ``metadata`` to the provider (the Responses API's own field), so its bucket is ``litellm_metadata``.
_DECISION_METHODS: dict[str, str] = {
    "_acompletion": "metadata",
    "_completion": "metadata",
    "_atext_completion": "metadata",
    "_ageneric_api_call_with_fallbacks_helper": "litellm_metadata",
    "_generic_api_call_with_fallbacks": "litellm_metadata",
}


def _decision_hook(metadata_key: str, original: Callable[..., Any], self: Any, *args: Any, **kwargs: Any) -> Any:
    """A request method's hook (see :func:`_hooked`): the response of ``original`` with the prefill decision copied
    into it (awaited first when ``original`` is a coroutine function)."""
    md = _metadata(kwargs, metadata_key)
    result = original(*args, **kwargs)
    if not asyncio.iscoroutine(result):
        return _attach_decision(result, md)

    async def attach() -> Any:
        return _attach_decision(await result, md)
    return attach()


# -- how litellm.Router learns the strategy ------------------------------------
# Each hook is a litellm.Router method rewritten against the original (its first argument, bound to the router):
# PrefillRouter and install() apply the same table, so the subclass and the patched class behave alike.
def _validate_hook(original: Callable[..., Any], self: Any, routing_strategy: Any) -> None:
    if not _is_prefill(routing_strategy):
        original(routing_strategy)


def _init_hook(original: Callable[..., Any], self: Any, routing_strategy: Any, routing_strategy_args: dict) -> None:
    if not _is_prefill(routing_strategy):
        return original(routing_strategy, routing_strategy_args)
    original("simple-shuffle", {})
    apply_prefill_routing_strategy(self, routing_strategy_args)
    return None


def _apply_args_hook(original: Callable[..., Any], self: Any) -> None:
    if not _is_prefill(self.routing_strategy):
        return original()
    apply_prefill_routing_strategy(self, self.routing_strategy_args)
    return None


def _init_groups_hook(original: Callable[..., Any], self: Any, groups_input: Any) -> None:
    """``routing_groups`` entries with ``routing_strategy: prefill`` get a strategy of their own (their
    ``routing_strategy_args`` name the bundle) that routes their models, whatever the router's own strategy is."""
    original(groups_input)
    for name, group in getattr(self, "_routing_groups", {}).items():
        if _is_prefill(group.routing_strategy):
            self._group_selectors[name] = {PREFILL: PrefillRoutingStrategy(
                self, group.routing_strategy_args or {}, models=group.models)}


def _group_select(strategy: str | None, selector: Any, kwargs: dict) -> Coroutine[Any, Any, dict] | None:
    """A prefill routing group's choice among the deployments litellm found for it (None: not a prefill group)."""
    if not (_is_prefill(strategy) and isinstance(selector, PrefillRoutingStrategy)):
        return None
    return selector.select(kwargs["model"], kwargs["healthy_deployments"],
                           _prompt_of(kwargs.get("messages"), kwargs.get("input")), kwargs.get("request_kwargs") or {})


async def _select_async_hook(original: Callable[..., Any], self: Any, *, strategy: str | None, selector: Any,
                             **kwargs: Any) -> Any:
    choice = _group_select(strategy, selector, kwargs)
    return await choice if choice is not None else await original(strategy=strategy, selector=selector, **kwargs)


def _select_sync_hook(original: Callable[..., Any], self: Any, *, strategy: str | None, selector: Any,
                      **kwargs: Any) -> Any:
    choice = _group_select(strategy, selector, kwargs)
    return _run_sync(choice) if choice is not None else original(strategy=strategy, selector=selector, **kwargs)


def _context_hook(original: Callable[..., Any], self: Any, model: str, request_kwargs: dict | None = None
                  ) -> tuple[str | None, Any]:
    """A key's or team's ``routing_strategy: prefill`` (litellm ignores names it does not know, with a warning on every
    request) means: ``model`` as configured. Where no prefill strategy routes ``model``, that is said once."""
    if not _is_prefill((request_kwargs or {}).get("routing_strategy")):
        return cast(tuple[str | None, Any], original(model, request_kwargs))
    strategy, selector = original(model, None)
    if not _is_prefill(strategy) and model not in self.__dict__.setdefault("_prefill_unrouted_models", set()):
        self._prefill_unrouted_models.add(model)
        logger.warning("a request asks for prefill routing (routing_strategy: prefill in its key's or team's "
                       "router_settings) of model group %r, which no prefill strategy routes: routed by %s. Put %r in "
                       "a routing_groups entry with routing_strategy: prefill, or make prefill the router's strategy.",
                       model, getattr(strategy, "value", strategy), model)
    return strategy, selector


_ROUTER_HOOKS: dict[str, Callable[..., Any]] = {
    "_validate_routing_strategy": _validate_hook,
    "routing_strategy_init": _init_hook,
    "_apply_updated_routing_strategy_args": _apply_args_hook,
    "_init_routing_groups": _init_groups_hook,
    "_select_deployment_async": _select_async_hook,
    "_select_deployment_sync": _select_sync_hook,
    "_get_routing_context": _context_hook,
}


def _hooked(original: Callable[..., Any], hook: Callable[..., Any]) -> Callable[..., Any]:
    """The Router method ``original`` with ``hook`` in front of it."""
    if asyncio.iscoroutinefunction(original):
        @functools.wraps(original)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await hook(functools.partial(original, self), self, *args, **kwargs)
        return acall

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return hook(functools.partial(original, self), self, *args, **kwargs)
    return call


def _router_methods(base: type) -> dict[str, Callable[..., Any]]:
    """Everything the prefill strategy changes in ``base`` (a litellm.Router class): the strategy hooks and the
    decision-carrying request methods. A litellm release without one of the hooked methods lacks that feature
    (e.g. ``routing_groups``, or the decision in one API's responses) and is left as it is."""
    hooks: dict[str, Callable[..., Any]] = {
        **_ROUTER_HOOKS, **{name: functools.partial(_decision_hook, key) for name, key in _DECISION_METHODS.items()}}
    return {name: _hooked(getattr(base, name), hook) for name, hook in hooks.items()
            if callable(getattr(base, name, None))}


class PrefillRouter(litellm.Router):
    """``litellm.Router`` with the ``prefill`` routing strategy built in.

    ``PrefillRouter(model_list=..., routing_strategy="prefill", routing_strategy_args={"bundle": DIR})``, or a
    prefill ``routing_groups`` entry beside another router-wide strategy.
    """


# written against litellm.Router's own methods (captured before any install())
for _name, _method in _router_methods(litellm.Router).items():
    setattr(PrefillRouter, _name, _method)
del _name, _method


_INSTALL_LOCK = threading.Lock()


def install() -> None:
    """Make a plain ``litellm.Router`` accept ``routing_strategy="prefill"`` (router-wide or in a
    ``routing_groups`` entry) and carry decisions in its responses (idempotent).

    Patches ``litellm.Router`` with the methods of :class:`PrefillRouter`; used by
    the proxy hook (``litellm_prefill_router.proxy_hook``).
    """
    with _INSTALL_LOCK:
        base = litellm.Router
        if getattr(base, "_prefill_installed", False) or issubclass(base, PrefillRouter):
            return
        for name, method in _router_methods(base).items():
            setattr(base, name, method)
        base._prefill_installed = True  # type: ignore[attr-defined]


# keys of a proxy config's router_settings that decide how requests are routed (the rest - caches, retries, limits -
# does not change which deployment a prefill strategy chooses)
_ROUTING_SETTINGS = ("routing_strategy", "routing_strategy_args", "routing_groups", "model_group_alias")


def router_from_config(model_list: list[dict], router_settings: dict | None = None) -> litellm.Router:
    """A ``litellm.Router`` built the way the proxy builds it from a config (``install()`` first), with the
    settings that decide routing; nothing is sent to any provider. Raises the typed error of a misconfiguration."""
    install()
    settings = {k: v for k, v in (router_settings or {}).items() if k in _ROUTING_SETTINGS}
    return litellm.Router(model_list=model_list, **settings)


def prefill_strategies(router: litellm.Router) -> dict[str, PrefillRoutingStrategy]:
    """The prefill strategies of ``router``: ``"router"`` (``routing_strategy: prefill``) and ``"routing group
    NAME"`` for each ``routing_groups`` entry with its own bundle."""
    out: dict[str, PrefillRoutingStrategy] = {}
    own = getattr(router, "prefill_strategy", None)
    if _is_prefill(getattr(router, "routing_strategy", None)) and isinstance(own, PrefillRoutingStrategy):
        out["router"] = own
    for name, selectors in (getattr(router, "_group_selectors", None) or {}).items():
        if isinstance(strategy := selectors.get(PREFILL), PrefillRoutingStrategy):
            out[f"routing group {name}"] = strategy
    return out


async def flush_logging(timeout: float = 10.0) -> None:
    """Wait until litellm's background logging (success callbacks, the decision log) has run, then stop its
    worker. Call it before the event loop ends (e.g. at the end of ``asyncio.run``): litellm queues callbacks on
    a worker bound to the running loop, and what is still queued when the loop closes is run late or lost."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    try:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout)
    except asyncio.TimeoutError:
        logger.warning("litellm logging did not finish within %.0fs", timeout)
    await GLOBAL_LOGGING_WORKER.stop()


# -- data collection (``prefill-router collect``) -----------------------------
_RETRYABLE = (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError,
              litellm.ServiceUnavailableError, litellm.BadGatewayError)


@dataclass(frozen=True)
class CallResult:
    text: str
    input_tokens: int
    output_tokens: int
    cost: float | None  # USD as litellm computed it; None when litellm does not know the price


class CollectionClient:
    """Sends one prompt to one model group through a plain ``litellm.Router`` (no routing strategy, no
    retries of its own: the collector retries with back-off and keeps the books)."""

    def __init__(self, model_list: list[dict], timeout: float | None = None) -> None:
        self.model_list = model_list
        self.router = litellm.Router(model_list=model_list, num_retries=0, timeout=timeout)

    def groups(self) -> list[str]:
        return sorted({str(d.get("model_name")) for d in self.model_list})

    def prices(self, group: str) -> list[Price]:
        """The prices of the group's deployments that have one (see :func:`deployment_price`), in config order."""
        out = []
        for dep in self.model_list:
            if dep.get("model_name") == group:
                model = str((dep.get("litellm_params") or {}).get("model") or "")
                price = deployment_price(dep, functools.partial(litellm.get_model_info, model))
                if price is not None:
                    out.append(price)
        return out

    def count_tokens(self, group: str, messages: list[dict]) -> int:
        model = next((str((d.get("litellm_params") or {}).get("model") or "") for d in self.model_list
                      if d.get("model_name") == group), "")
        try:
            return int(litellm.token_counter(model=model, messages=messages))
        except Exception:  # noqa: BLE001 - fall back to ~4 characters per token
            return max(1, sum(len(str(m.get("content") or "")) for m in messages) // 4)

    async def complete(self, group: str, messages: list[dict], **params: Any) -> CallResult:
        resp: Any = await self.router.acompletion(model=group, messages=cast(Any, messages), **params)
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = getattr(resp, "usage", None)
        cost = (getattr(resp, "_hidden_params", None) or {}).get("response_cost")
        return CallResult(str(text), int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0), None if cost is None else float(cost))

    async def complete_text(self, group: str, messages: list[dict], max_tokens: int | None = None) -> str:
        return (await self.complete(group, messages, **({} if max_tokens is None else {"max_tokens": max_tokens}))).text

    async def aclose(self) -> None:
        await flush_logging()

    @staticmethod
    def retry_after(err: BaseException) -> float | None:
        """None when ``err`` is not worth retrying (bad request, auth, ...); else the server's Retry-After in
        seconds (0.0 when it gave none: the caller backs off exponentially)."""
        if not isinstance(err, _RETRYABLE):
            return None
        headers = getattr(getattr(err, "response", None), "headers", None) or getattr(err, "litellm_response_headers",
                                                                                       None)
        try:
            value = headers.get("retry-after") if headers is not None else None
        except AttributeError:
            return 0.0
        if value is None:
            return 0.0
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:  # the HTTP-date form: "Wed, 21 Oct 2026 07:28:00 GMT"
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(str(value)) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return 0.0
