"""How a prefill decision composes with litellm's own routing: the request's metadata and limits, litellm's
pre-routing strategies (auto / complexity / quality routers), ``routing_groups`` and their selectors, a key's or
team's per-request ``routing_strategy`` override, and litellm's retry breadcrumbs. One of the litellm-facing
modules (see ``router``)."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, cast

import litellm
from litellm.responses.utils import ResponsesAPIRequestUtils
from litellm.router_strategy.simple_shuffle import simple_shuffle
from litellm.router_utils.fallback_event_handlers import record_pre_routing_selection
from litellm.router_utils.handle_error import async_raise_no_deployment_exception
from litellm.types.router import RouterRateLimitError

try:  # litellm 1.110+: the new core's pick by a litellm strategy's selector (the Router's own method before), and
    # whether least-busy holds its pick for the request's call (the core's own pick asks the same)
    from litellm.router_rust.steps.selection import pick_async as core_pick_async
    from litellm.router_strategy.least_busy import pick_reserves  # type: ignore[attr-defined]  # 1.110+ only
except ImportError:  # litellm < 1.110
    core_pick_async = pick_reserves = None

from .costs import Price
from .decider import PrefillDecider, cap_in, capacity_reason
from .deployments import DeploymentTarget, deployment_id, deployment_model, deployment_price
from .litellm_support import installed_litellm
from .policy import RoutingDecision
from .prompt import after_system
from .records import DECISION_KEY, LITELLM_DECISION_KEY
from .rollout import request_arm_of, user_key
from .shared_metadata import attempts_of, owns

logger = logging.getLogger("litellm_prefill_router")

try:  # litellm 1.103+
    from litellm.litellm_core_utils.core_helpers import get_parent_otel_span_from_kwargs
except ImportError:  # litellm <= 1.102: the same helper, private
    from litellm.litellm_core_utils.core_helpers import (  # type: ignore[attr-defined,no-redef]
        _get_parent_otel_span_from_kwargs as get_parent_otel_span_from_kwargs,
    )

PREFILL = "prefill"


def strategy_name(strategy: object) -> Any:
    """A routing strategy's name as litellm compares it: its value for litellm's ``RoutingStrategy`` enum, else as
    given (a string, or None)."""
    return getattr(strategy, "value", strategy)


def is_prefill(strategy: object) -> bool:
    return strategy_name(strategy) == PREFILL


OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")  # chat / chat (new) / Responses API


def output_token_cap(request_kwargs: dict) -> int | None:
    """The request's own limit on the answer length, if it sets one (the cost estimate never assumes more)."""
    return cap_in(request_kwargs, OUTPUT_CAPS)


def request_metadata(request_kwargs: dict, default_key: str = "metadata") -> dict:
    """The request's metadata dict (created under ``default_key`` if it has none): ``litellm_metadata`` when it is a
    dict, else ``metadata``. litellm hands this same dict to the routing strategy as ``request_kwargs[...]``, so a
    decision the strategy writes into it can be read back after the call."""
    key = "litellm_metadata" if isinstance(request_kwargs.get("litellm_metadata"), dict) else default_key
    md = request_kwargs.get(key)
    if not isinstance(md, dict):
        md = {}
        request_kwargs[key] = md
    return md


# -- the Router's members, old and new -------------------------------------------------------------------------------
# litellm 1.109 serves a Router's members through entry points - registry(), settings(), select(), register_plugin()
# and a RoutingContext for plugins - and keeps the old names for a while, with a DeprecationWarning on each use. The
# strategy reads the router through these functions: the entry points where the release has them, else the old names.


def _registry(router: litellm.Router) -> Any:
    """The router's deployment registry (litellm 1.109+: ``registry()``; None before)."""
    registry = getattr(router, "registry", None)
    return registry() if callable(registry) else None


def deployments_of(router: litellm.Router) -> list[dict]:
    """The router's deployments (its live ``model_list``, not a copy: read on every request)."""
    registry = _registry(router)
    return cast(list, (registry.all() if registry is not None else router.model_list) or [])


def model_alias_of(router: litellm.Router, model: str) -> str | None:
    """The model group ``model`` is an alias of in the router's ``model_group_alias`` (None: not an alias)."""
    registry = _registry(router)
    if registry is not None:  # litellm 1.109+: get_model_from_alias is deprecated
        return cast("str | None", registry.resolve(model, kind="alias"))
    return cast("str | None", router.get_model_from_alias(model=model))


def setting_of(router: litellm.Router, name: str, default: object = None) -> object:
    """One of the router's settings (``routing_strategy``, ``enable_pre_call_checks``, ...)."""
    settings = getattr(router, "settings", None)
    return getattr(settings(), name, default) if callable(settings) else getattr(router, name, default)


def routing_strategy_of(router: litellm.Router) -> object:
    """The router's configured routing strategy (a name or litellm's enum)."""
    return setting_of(router, "routing_strategy")


def routing_groups_of(router: litellm.Router) -> dict[str, Any]:
    """The router's ``routing_groups`` by name, as litellm indexed them (empty where it has none)."""
    registry = _registry(router)
    groups = registry.routing_groups() if registry is not None else getattr(router, "_routing_groups", None)
    return dict(groups or {})


def use_strategy(router: litellm.Router, strategy: Any) -> None:
    """Make ``strategy`` (a ``CustomRoutingStrategyBase``) choose the router's deployments."""
    register = getattr(router, "register_plugin", None)
    (register if register is not None else router.set_custom_routing_strategy)(strategy)


def public_router(router: Any) -> Any:
    """The ``litellm.Router`` a request method was called on. A litellm 1.110+ Router is a facade over a core object
    whose class serves its methods, so a method patched on ``litellm.Router`` runs bound to the core: this is the
    facade the core records as its owner (``router`` itself where it records none, as on earlier releases)."""
    owner = vars(router).get("_core_owner") if hasattr(router, "__dict__") else None
    facade = owner() if callable(owner) else None
    return facade if facade is not None else router


def custom_strategy_of(router: litellm.Router) -> Any:
    """The custom strategy that chooses ``router``'s deployments now (litellm 1.110+: the one ``register_plugin``
    registered, dropped when the routing strategy changes; None before 1.110, or where none is registered)."""
    return getattr(router, "_custom_strategy", None)


async def healthy_deployments(router: litellm.Router, model: str, request_kwargs: dict,
                              messages: list[dict[str, str]] | None, input: str | list | None,  # noqa: A002
                              specific_deployment: bool | None) -> list[dict] | dict:
    """The deployments of ``model`` litellm lets this request use (cooldowns, pre-call checks, tags, order); one
    deployment (a dict) where the request names it. The request's OpenTelemetry span is passed on, as litellm's own
    routing does, so its cooldown lookups are traced under the request."""
    span = get_parent_otel_span_from_kwargs(request_kwargs)
    select = getattr(router, "select", None)
    if select is not None:
        return cast("list[dict] | dict", await select(model, request_kwargs, kind="healthy", messages=messages,
                                                      input=input, specific_deployment=specific_deployment,
                                                      parent_otel_span=span))
    return cast("list[dict] | dict", await router.async_get_healthy_deployments(
        model=model, request_kwargs=request_kwargs, messages=messages, input=input,
        specific_deployment=specific_deployment, parent_otel_span=span))


def deployment_model_info(router: litellm.Router, deployment_id: str, model_name: str) -> Any:
    """A deployment's model info merged with litellm's price map (None where litellm knows nothing of it)."""
    registry = _registry(router)
    if registry is not None:
        return registry.deployment_model_info(deployment_id, model_name)
    return router.get_deployment_model_info(model_id=deployment_id, model_name=model_name)


def served_price(router: litellm.Router, served_by: str) -> Price | None:
    """The price of ``router``'s deployment with id ``served_by`` (None: no such deployment, or unpriced), read as
    the prefill strategy prices deployments (see :func:`~.deployments.deployment_price`)."""
    for dep in deployments_of(router):
        if deployment_id(dep) == served_by:
            return deployment_price(dep, functools.partial(deployment_model_info, router, served_by,
                                                           deployment_model(dep)))
    return None


def _routing_context_object(router: litellm.Router) -> Any:
    """What litellm 1.109+ hands routing plugins instead of the router (None before)."""
    return getattr(router, "_core_ctx", None)


def _pre_routing_hook(router: litellm.Router) -> Callable[..., Awaitable[Any]] | None:
    ctx = _routing_context_object(router)
    if ctx is not None and callable(getattr(ctx, "pre_routing_hook", None)):
        return cast(Callable[..., Awaitable[Any]], ctx.pre_routing_hook)
    return getattr(router, "async_pre_routing_hook", None)


async def raise_no_deployment(router: litellm.Router, model: str) -> None:
    """Raise what litellm raises when no deployment of ``model`` may take the request (e.g. all over rpm/tpm)."""
    ctx = _routing_context_object(router)
    raise_error: Any = async_raise_no_deployment_exception  # called with the arguments of the installed release
    if ctx is not None:
        raise await raise_error(ctx=ctx, model=model, parent_otel_span=None)
    raise await raise_error(litellm_router_instance=router, model=model, parent_otel_span=None)


# litellm's pre-routing step (auto_router / complexity_router / quality_router deployments, routing plugins): a
# release without it has no such deployments to serve, and the strategy then routes the requested group directly.
LITELLM_CLEARS_ROUTING_RECORD = (callable(getattr(litellm.Router, "async_pre_routing_hook", None))
                                 or callable(getattr(litellm.Router, "_core_async_pre_routing_hook", None)))


async def pre_route(router: litellm.Router, model: str, messages: list[dict[str, str]] | None, input: object,
                     specific_deployment: bool | None, request_kwargs: dict
                     ) -> tuple[str, list[dict[str, str]] | None]:
    """Run litellm's pre-routing hook as its own ``async_get_available_deployment`` does (the prefill strategy
    replaces that method): a strategy router deployment may send the request to another model group (with its own
    messages and per-tier params). Returns the model group to route and its messages."""
    hook = _pre_routing_hook(router)
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


def pre_routing_of(md: dict, model: str) -> dict | None:
    """What a litellm pre-routing strategy did to this request, from the routing record it left (litellm stamps or
    clears that record at every routing attempt, before the deployment is chosen)."""
    if not LITELLM_CLEARS_ROUTING_RECORD:
        return None
    previous = md.get(LITELLM_DECISION_KEY)
    if not isinstance(previous, dict) or not previous.get("router_model_name"):
        return None
    return {"model_group": previous["router_model_name"], "routed_to": model,
            "router_type": previous.get("router_type"), "cause": previous.get("cause")}


def failed_earlier(md: dict, trace_id: object = None) -> dict[str, tuple[str, str]]:
    """The deployments this strategy chose on earlier attempts of this request that failed: deployment id ->
    (target, error type). Read from litellm's retry breadcrumbs (``previous_models``); empty on a first attempt or
    where litellm keeps none. litellm <= 1.102 keeps each failed attempt's metadata (our decision record included)
    and its ``litellm_trace_id``; 1.103+ keeps the failed deployment's id alone. litellm writes the breadcrumbs into
    the caller's metadata dict, so an application that passes one dict to every request would hand a new request the
    last one's: only this request's own attempts count (those the strategy routed, kept per trace id by
    :mod:`.shared_metadata`), also where concurrent requests sharing the dict left another request's record in a
    breadcrumb of this one."""
    crumbs = md.get("previous_models")
    own = attempts_of(trace_id)  # this request's earlier routed attempts, oldest first
    targets = {str(r["deployment_id"]): str(r["target"]) for r in own}
    failed: dict[str, tuple[str, str]] = {}
    # error types of failed attempts that name another request's deployment or record: this request's own, when
    # concurrent requests sharing the dict overwrote what litellm read, else another request's
    unattributed: list[str] = []
    for crumb in crumbs if isinstance(crumbs, (list, tuple)) else ():
        if not isinstance(crumb, Mapping) or (trace_id is not None and
                                              crumb.get("litellm_trace_id") not in (None, trace_id)):
            continue
        error = str(crumb.get("exception_type") or "error")
        meta = crumb.get("metadata") or crumb.get("litellm_metadata")
        if meta is None and "deployment_id" in crumb:  # litellm 1.103+: read from the (maybe shared) metadata dict
            if (dep := str(crumb["deployment_id"])) in targets:
                failed[dep] = (targets[dep], error)
            else:
                unattributed.append(error)
            continue
        record = meta.get(DECISION_KEY) if isinstance(meta, Mapping) else None
        if not owns(record, trace_id):
            unattributed.append(error)
        elif isinstance(record, Mapping) and record.get("deployment_id") and not record.get("shadow"):
            failed[str(record["deployment_id"])] = (str(record.get("target")), error)
    # this request is routed again, so its attempts failed: those no breadcrumb accounts for are its latest ones
    unaccounted = [r for r in own if str(r["deployment_id"]) not in failed]
    for attempt, error in zip(reversed(unaccounted), reversed(unattributed)):
        failed.setdefault(str(attempt["deployment_id"]), (str(attempt["target"]), error))
    return failed


def configured_routing_groups(router: litellm.Router) -> list[Any]:
    """The router's ``routing_groups`` entries as given (RoutingGroup or dict; read before litellm indexes them)."""
    return list(getattr(router, "_routing_groups_input", None) or [])


def group_field(group: Any, name: str) -> Any:
    return group.get(name) if isinstance(group, dict) else getattr(group, name, None)


PREFILL_GROUPS_ATTRIBUTE = "_prefill_group_strategies"


def prefill_groups_of(router: litellm.Router) -> dict[str, Any]:
    """litellm 1.110+: the router's ``routing_groups`` entries with the prefill strategy, by name, each with its
    :class:`~.strategy.PrefillRoutingStrategy` (litellm knows them as simple-shuffle groups; empty before 1.110,
    where litellm keeps them among its own group selectors)."""
    return dict(getattr(router, PREFILL_GROUPS_ATTRIBUTE, None) or {})


def prefill_group_of(router: litellm.Router, model: str) -> Any:
    """The prefill strategy of the litellm 1.110+ prefill routing group that ``model`` (after the router's model group
    aliases) is, or is a member of - litellm's own group lookup (None: none)."""
    groups = prefill_groups_of(router)
    if not groups:
        return None
    resolved = model_alias_of(router, model) or model
    if resolved in groups:
        return groups[resolved]
    return next((strategy for strategy in groups.values() if resolved in (strategy.models or ())), None)


def prefill_group_models(router: litellm.Router) -> set[str]:
    """Model names that a ``routing_groups`` entry with ``routing_strategy: prefill`` routes with its own bundle."""
    configured = {str(m) for g in configured_routing_groups(router) if is_prefill(group_field(g, "routing_strategy"))
                  for m in group_field(g, "models") or []}
    return configured | {str(m) for strategy in prefill_groups_of(router).values() for m in strategy.models or ()}


def routing_context(router: litellm.Router, model: str, request_kwargs: dict) -> tuple[str | None, Any]:
    """litellm's routing strategy and selector for ``model``: a per-request override (the proxy forwards a key's or
    team's ``router_settings``), its ``routing_groups`` entry, else the router's own (here: prefill - on litellm
    1.110+ simple-shuffle, the prefill strategy registered -, no selector). A prefill routing group's selector is its
    :class:`~.strategy.PrefillRoutingStrategy`. Asked of the Router's ``_get_routing_context`` before litellm 1.110
    (hooked for prefill groups), of its core's ``_prefetch_strategy_and_selector`` (the same lookup, the core's
    selectors) from 1.110, where litellm knows a prefill group as a simple-shuffle one."""
    context = getattr(router, "_get_routing_context", None)
    if context is not None:
        strategy, selector = context(model, request_kwargs)
        return (strategy_name(strategy), selector)
    context = getattr(router, "_prefetch_strategy_and_selector", None)
    if context is None:
        return None, None
    strategy, selector = context(model, request_kwargs)
    strategy = strategy_name(strategy)
    if not _core_applies_override(request_kwargs, strategy):
        group = prefill_group_of(router, model)
        if group is not None:
            return PREFILL, group
    return strategy, selector


def _core_applies_override(request_kwargs: dict, strategy: str | None) -> bool:
    """litellm 1.110+: whether the core's lookup found ``strategy`` in the request's own ``routing_strategy`` (its
    lookup puts an override it knows first, and ignores one it does not)."""
    asked = request_kwargs.get("routing_strategy")
    return asked is not None and strategy_name(asked) == strategy


def request_override(router: litellm.Router, request_kwargs: dict, strategy: str | None) -> bool:
    """Whether this request carries a litellm routing strategy of its own (a key's or team's ``router_settings``,
    forwarded by the proxy; litellm ignores unknown names - with a warning before 1.110, which the strategy gives on
    1.110+) that litellm applies: ``strategy`` (what :func:`routing_context` found for the request) is it.
    ``prefill`` there means: as configured."""
    asked = request_kwargs.get("routing_strategy")
    if asked is None or is_prefill(asked):
        return False
    override = getattr(router, "_get_request_routing_strategy_override", None)
    if override is not None:  # litellm < 1.110
        return override(request_kwargs) is not None
    if hasattr(router, "_prefetch_strategy_and_selector"):  # litellm 1.110+
        if _core_applies_override(request_kwargs, strategy):
            return True
        if str(asked) not in _UNAPPLIED_OVERRIDES:  # the core ignores a name it does not know, without a word
            _UNAPPLIED_OVERRIDES.add(str(asked))
            logger.warning("Ignoring per-request routing_strategy override %r (e.g. its proxy key's or team's "
                           "router_settings): litellm %s does not know it (supported overrides: %s, and prefill: "
                           "as configured). Routed as configured; said once per name.", asked, installed_litellm(),
                           sorted(overridable_strategies()))
        return False
    if str(asked) not in _UNAPPLIED_OVERRIDES:  # a litellm that offers neither lookup
        _UNAPPLIED_OVERRIDES.add(str(asked))
        logger.warning("a request asks for routing_strategy %r (e.g. its proxy key's or team's router_settings), "
                       "which the prefill strategy cannot apply with litellm %s (it finds no way to ask litellm "
                       "for that strategy's pick): routed by the bundle.", asked, installed_litellm())
    return False


_UNAPPLIED_OVERRIDES: set[str] = set()  # the override names already warned about (once each per process)


def overridable_strategies() -> frozenset[str]:
    """The routing strategies litellm 1.110+ applies as a per-request override (its core's lookup: simple-shuffle and
    every strategy with a selector)."""
    try:
        from litellm.router_rust.steps.selection import SELECTOR_ATTRIBUTES
    except ImportError:  # pragma: no cover - a 1.110+ that moved it: name none rather than fail the request
        return frozenset({"simple-shuffle"})
    return frozenset({"simple-shuffle", *SELECTOR_ATTRIBUTES})


def say_prefill_asked_of_unrouted(router: litellm.Router, model: str, strategy: object) -> None:
    """A key's or team's ``routing_strategy: prefill`` asked of a model group no prefill strategy routes: routed by
    ``strategy`` (the group's or router's), which is said once per model group and router."""
    said = vars(router).setdefault("_prefill_unrouted_models", set())
    if model in said:
        return
    said.add(model)
    logger.warning("a request asks for prefill routing (routing_strategy: prefill in its key's or team's "
                   "router_settings) of model group %r, which no prefill strategy routes: routed by %s. Put %r in "
                   "a routing_groups entry with routing_strategy: prefill, or make prefill the router's strategy.",
                   model, strategy_name(strategy), model)


async def override_pre_call_check(router: litellm.Router, strategy: str | None, selector: Any, deployment: dict
                                   ) -> None:
    """The rpm accounting a per-request override's selector does for the deployment served (litellm's own step: the
    override's selector is in none of the callback lists whose pre-call checks litellm runs before the call)."""
    check = getattr(router, "_async_override_selector_pre_call_check", None)
    if check is not None:  # litellm < 1.110
        await check(strategy, selector, deployment, None)
        return
    selectors = getattr(router, "_selectors", None)  # litellm 1.110+: the core's
    if selector is not None and strategy is not None and selectors is not None \
            and selectors.is_override(strategy, selector):
        await selector.async_pre_call_check(deployment, None)


def request_arm(request_kwargs: dict, share: float) -> str | None:
    """The rollout arm of a litellm request (see :func:`~.rollout.rollout_arm`): by a hash of the OpenAI ``user``
    field when the request names one (each user stays in one arm), else of the request's ``litellm_trace_id`` -
    litellm keeps it across a request's attempts, so a retry or fallback keeps its arm, and it differs between
    requests even when an application passes one metadata dict to all of them. Without either: at random."""
    return request_arm_of(share, user_key(request_kwargs.get("user")), request_kwargs.get("litellm_trace_id"))


def context_window(router: litellm.Router, deployment: dict, model_group: str) -> int | None:
    """The deployment's context window (max input tokens) as litellm's pre-call checks read it: its ``model_info``,
    else litellm's model map; None where it declares none."""
    try:
        registry = _registry(router)
        info = registry.router_model_info(deployment=deployment, received_model_name=model_group) \
            if registry is not None else router.get_router_model_info(deployment=deployment,
                                                                      received_model_name=model_group)
    except Exception:  # noqa: BLE001 - a model litellm does not know declares no window
        return None
    n = info.get("max_input_tokens")
    return n if isinstance(n, int) else None


# litellm 1.103 changed simple_shuffle's arguments (the router's alias lookup instead of the router, and the request)
_SHUFFLE_TAKES_ROUTER = "llm_router_instance" in inspect.signature(simple_shuffle).parameters
_simple_shuffle: Any = simple_shuffle  # called with the arguments of the installed release


def shuffle_pick(router: litellm.Router, model: str, request_kwargs: dict | None = None
                 ) -> Callable[[list[dict]], Awaitable[dict]]:
    """litellm's simple-shuffle among the deployments given (weights / rpm / tpm respected)."""
    async def shuffle(deployments: list[dict]) -> dict:
        if _SHUFFLE_TAKES_ROUTER:  # litellm <= 1.102
            return cast(dict, _simple_shuffle(llm_router_instance=router, healthy_deployments=deployments, model=model))
        return cast(dict, _simple_shuffle(resolve_model_alias=functools.partial(model_alias_of, router),
                                          healthy_deployments=deployments, model=model, request_kwargs=request_kwargs))
    return shuffle


def response_deployment(request_kwargs: Mapping[str, Any]) -> str | None:
    """The deployment id litellm encoded in a Responses API request's ``previous_response_id`` (the deployment that
    answered the response it continues), or None: no such id, or one litellm did not issue."""
    previous = request_kwargs.get("previous_response_id")
    if not isinstance(previous, str) or not previous:
        return None
    try:
        model_id = ResponsesAPIRequestUtils.get_model_id_from_response_id(previous)
    except Exception:  # noqa: BLE001 - an id litellm cannot decode continues nothing we know of
        return None
    return str(model_id) if model_id else None


#: request kwargs that carry prompt text outside ``messages`` / ``input`` (read by :func:`prompt_of`): the Anthropic
#: API's system prompt, the Responses API's, Google GenAI's turns and its system instruction (top-level or in config)
API_PROMPT_KWARGS = ("system", "instructions", "contents")


def prompt_of(messages: Any, input: Any, request_kwargs: Mapping[str, Any] | None = None  # noqa: A002 - litellm's
              ) -> object:
    """What a request routes on - what its API gives the model, system prompt first, so one conversation routes
    alike through every API: its messages (after the Anthropic API's ``system``), else its ``input`` (Responses API,
    after its ``instructions``; text completions), else - litellm hands the strategy neither for Google GenAI's
    ``generate_content`` - its ``contents`` (after its system instruction, top-level or in ``config``)."""
    kwargs = request_kwargs or {}
    if messages is not None:
        return after_system(kwargs.get("system"), messages)
    if input is not None:
        return after_system(kwargs.get("instructions"), input)
    contents = kwargs.get("contents")
    if contents is None:
        return None
    system = kwargs.get("systemInstruction", kwargs.get("system_instruction"))
    if system is None and isinstance(config := kwargs.get("config"), Mapping):
        system = config.get("systemInstruction", config.get("system_instruction"))
    if isinstance(system, Mapping):  # a Content: its parts
        system = {"role": "system", "parts": system.get("parts")}
    return after_system(system, contents)


def plugin_prompt(context: Any, request: Any) -> object:
    """What a tier classifier or routing plugin routes on: the messages of litellm's ``RoutingContext``, after the
    system prompt the request (``shared_metadata.current_request()``) carries outside them - the Anthropic API's
    ``system``, which litellm leaves out there -, or the prompt of a request litellm gives it no messages for (Google
    GenAI's ``contents``), as :func:`prompt_of` routes the strategy's requests."""
    messages = list(getattr(context, "structured_messages", None) or getattr(context, "raw_messages", None) or [])
    if not messages and getattr(request, "prompt", None) is not None:
        return request.prompt
    system = getattr(request, "system", None)
    if any(isinstance(m, Mapping) and m.get("role") in ("system", "developer") for m in messages):
        return messages
    return after_system(system, messages)


def group_pick(router: litellm.Router, strategy: str | None, selector: Any, model: str,
                messages: list[dict[str, str]] | None, input: object,
                request_kwargs: dict) -> Callable[[list[dict]], Awaitable[dict]]:
    """How litellm itself picks among deployments of ``model``: the group's strategy (latency-, usage-, cost-based,
    least-busy: its selector, which also enforces rpm/tpm limits) or simple-shuffle."""
    select = getattr(router, "_select_deployment_async", None)
    no_pick = select is None and core_pick_async is None  # a litellm that offers neither
    if selector is None or strategy in (None, "simple-shuffle", PREFILL) or no_pick:
        return shuffle_pick(router, model, request_kwargs)

    async def pick(deployments: list[dict]) -> dict:
        if select is not None:  # litellm < 1.110
            deployment = await select(strategy=strategy, selector=selector, model=model,
                                      healthy_deployments=deployments, messages=messages, input=input,
                                      request_kwargs=request_kwargs)
        else:  # litellm 1.110+
            deployment = await core_pick_async(strategy, selector, model, deployments, messages, input,
                                               request_kwargs, reserve=pick_reserves(True) and bool(request_kwargs))
        if deployment is None:  # e.g. every deployment over its rpm/tpm limit: what litellm raises itself
            await raise_no_deployment(router, model)
        await override_pre_call_check(router, strategy, selector, deployment)
        return cast(dict, deployment)
    return pick


async def pick_with_capacity(pick: Callable[[list[dict]], Awaitable[dict]], pool: list[tuple[dict, DeploymentTarget]],
                             decision: RoutingDecision, decider: PrefillDecider, pinned: bool
                             ) -> tuple[dict, RoutingDecision]:
    """``pick`` among the deployments of the decision's target. Where the group's litellm strategy (usage-based
    routing and the like) finds every one of them at its rpm/tpm limit, the request goes to the policy's pick among
    the other candidate targets, on the same prediction (the decider's ``reroute``: no second inference) - as
    litellm would serve it from another deployment of the group with room left - instead of failing with capacity
    left; a ``pinned`` request, or one with no other candidate, gets litellm's error."""
    full: list[str] = []
    while True:
        try:
            return await pick([d for d, info in pool if info.target == decision.target]), decision
        except (litellm.RateLimitError, RouterRateLimitError):
            full.append(decision.target)
            nxt = decider.reroute(decision, full)
            if nxt is None or pinned:  # no other candidate, or pinned
                raise
            logger.info("prefill router: every deployment of %r is at its rpm/tpm limit: routing among %s",
                        decision.target, list(nxt.candidates))
            by_policy = not decision.reason.startswith("fallback")  # a fallback stays one: no prediction
            reason = capacity_reason(full) if by_policy else decision.reason
            if decision.reason.startswith("retry:"):  # a retry that also met full targets says both
                reason = f"{decision.reason.split('; at capacity:')[0]}; {reason}"
            decision = replace(nxt, reason=reason)


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
