"""LiteLLM integration: how ``litellm.Router`` learns the ``prefill`` strategy.

* :class:`PrefillRouter` - ``litellm.Router`` that accepts ``routing_strategy="prefill"``
  and copies each decision into the response's ``_hidden_params`` (chat and text completions, Responses API,
  Anthropic messages). On litellm 1.110+, whose Router refuses subclasses, it builds a ``litellm.Router`` with the
  strategy registered through ``register_plugin`` (see "litellm 1.110+" below).
* :func:`install` - teach a plain ``litellm.Router`` (SDK or proxy) the ``prefill`` strategy.
* :func:`router_from_config`, :func:`prefill_strategies` - a config's router as the proxy builds it, and its
  prefill strategies (``prefill-router check``).

The modules that import litellm, and so the only ones a litellm upgrade touches: this one, ``strategy`` (the
routing strategy), ``composition`` (litellm's pre-routing, routing groups, overrides and retry breadcrumbs),
``decision_logger`` (the decision log's ``CustomLogger``), ``collection_client`` (``collect`` / ``judge`` calls)
and ``proxy_hook``. ``tests/test_runtime_imports.py`` checks that no other runtime module does.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import importlib
import inspect
import logging
import threading
import types
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

import litellm
from litellm.types.router import RoutingGroup

from .composition import (
    PREFILL,
    PREFILL_GROUPS_ATTRIBUTE,
    custom_strategy_of,
    deployments_of,
    is_prefill,
    prefill_groups_of,
    prompt_of,
    public_router,
    request_metadata,
    routing_groups_of,
    routing_strategy_of,
    say_prefill_asked_of_unrouted,
    served_price,
    strategy_name,
    use_strategy,
)
from .config import parse_strategy_args
from .decision_logger import watch_stream
from .deployments import complexity_config, deployment_id, tier_groups
from .forking import unheld_in_child
from .records import field_of, hidden_params
from .rollout import user_key
from .shared_metadata import answered, decision_for, routing_request
from .strategy import PrefillGroupsRouting, PrefillRoutingStrategy
from .sync_bridge import run_sync

# litellm's holder for a bare async stream (a Google GenAI generate_content stream: an async generator of SSE bytes),
# which litellm puts around such a stream after its endpoint returns, so the stream can carry hidden params: 1.110+
# moved it (the proxy unwraps it by its class, so the holder must be litellm's own)
try:
    from litellm.litellm_core_utils.add_retry_fallback_headers import (
        prepare_response_for_header_attachment as _stream_holder,
    )
except ImportError:  # litellm < 1.110
    try:
        from litellm.router_utils.add_retry_fallback_headers import (  # type: ignore[no-redef]
            prepare_response_for_header_attachment as _stream_holder,
        )
    except ImportError:  # a litellm without it: such a stream carries no decision (its headers still do)
        _stream_holder = None

logger = logging.getLogger("litellm_prefill_router")


_INSTALL_LOCK = unheld_in_child(threading.Lock())


# -- Router integration --------------------------------------------------------
def apply_prefill_routing_strategy(router: litellm.Router,
                                   routing_strategy_args: dict | None) -> PrefillRoutingStrategy:
    """Attach a prefill strategy to ``router`` (what ``routing_strategy="prefill"`` does): the one it has where the
    arguments are the same (see :func:`_kept_or_built`)."""
    args = routing_strategy_args or getattr(router, "routing_strategy_args", None)
    strategy = _kept_or_built(getattr(router, "prefill_strategy", None), router, args)
    router.routing_strategy = PREFILL
    use_strategy(router, strategy)
    router.prefill_strategy = strategy  # type: ignore[attr-defined]
    return strategy


def _kept_or_built(current: object, router: Any, args: Any, models: Any = None) -> PrefillRoutingStrategy:
    """The prefill strategy for ``router`` with these ``routing_strategy_args`` (and routing group ``models``):
    ``current`` - the one built for them before - where they are the same, else a new one. A litellm proxy with a
    database applies its config's router settings again every 30 s: a new strategy each time would forget what the
    serving one learned (autotune windows, answer lengths), warn again about its deployments and read its decision
    log again."""
    if (isinstance(current, PrefillRoutingStrategy) and current.router is router
            and current.models == (frozenset(models) if models is not None else None)
            and current.args == parse_strategy_args(args or {})):
        return current
    return PrefillRoutingStrategy(router, args or {}, models=models)


def _fell_back_from_tiers(router: Any, decision: Mapping, served_by: object) -> bool:
    """litellm 1.110+: whether a tier classifier's ``decision`` belongs to an attempt that its complexity router did
    not serve - the answer came from a model group none of its tiers names (a fallback to another group). Before
    1.110 litellm clears its routing record at such an attempt (``shared_metadata._classified_earlier``); the
    endpoint that 1.110 leaves to wrap sees the first attempt's record only."""
    if "tier" not in decision or not served_by:
        return False
    group, config, served_group = str(decision.get("model_group")), None, None
    for d in deployments_of(router):  # one pass: the complexity router's config and the answering deployment's group
        if config is None and str(d.get("model_name")) == group:
            config = complexity_config(d)
        if served_group is None and deployment_id(d) == str(served_by):
            served_group = d.get("model_name")
    pools = (config or {}).get("tiers")
    if not isinstance(pools, Mapping) or served_group is None:
        return False
    return served_group not in {name for pool in pools.values() for name in tier_groups(pool)}


def _attach_decision(response: Any, metadata: dict, trace_id: object = None, call_id: object = None,
                     router: Any = None, request: Mapping[str, Any] | None = None) -> Any:
    """Copy request ``trace_id``'s decision into the response's hidden params: a dict (chat, Responses API),
    litellm's ``HiddenParams`` (text completions) or the ``_hidden_params`` key of a dict response (Anthropic
    messages), or of a stream (litellm's stream wrapper: known before the first chunk; a bare async stream - Google
    GenAI's ``generate_content_stream`` - is put in litellm's holder first); and keep it (or that there is none) as
    the answer's decision of request ``call_id``, for the proxy's headers. A stream is watched for a reader that
    drops it before its end (see :func:`~.decision_logger.watch_stream`; ``request``: the request's arguments)."""
    if response is None:
        return response
    hidden = hidden_params(response, create=True)
    served_by = field_of(hidden, "model_id")
    # the request's own record: other requests may share its metadata dict (see shared_metadata)
    decision = decision_for(metadata, trace_id, served_by)
    if decision is not None and not ROUTER_ACCEPTS_SUBCLASSES and _fell_back_from_tiers(router, decision, served_by):
        decision = None
    answered(call_id, decision)  # what the proxy's headers say for this request (see shared_metadata.ANSWERED)
    if decision is None:
        return response
    if hasattr(response, "__anext__") or hasattr(response, "__next__"):
        kwargs = request or {}
        dep_id = served_by or decision.get("deployment_id")  # a bare stream (Anthropic, Google GenAI) names none
        response = watch_stream(response, decision, metadata, call_id or field_of(hidden, "litellm_call_id"),
                                functools.partial(prompt_of, kwargs.get("messages"), kwargs.get("input"), kwargs),
                                functools.partial(served_price, router, str(dep_id))
                                if router is not None and dep_id else None)
    if hidden is None and hasattr(response, "__anext__") and _stream_holder is not None:
        response = _stream_holder(response)  # a bare async stream, held now instead of after this hook
        hidden = hidden_params(response)
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
    md, trace = request_metadata(kwargs, metadata_key), kwargs.get("litellm_trace_id")
    user = user_key(kwargs.get("user"))  # the OpenAI user field: a tier classifier's rollout keeps users in one arm
    system = kwargs.get("system")  # the Anthropic API's system prompt: litellm leaves it out of a plugin's messages
    # a Google GenAI request's prompt (its contents, after its system instruction): litellm hands a plugin no messages
    prompt = prompt_of(None, None, kwargs) if "contents" in kwargs else None
    with routing_request(md, trace, user, self, system, prompt):  # the request a classifier / plugin decides for
        result = original(*args, **kwargs)  # a synchronous method routes and calls here
    if not asyncio.iscoroutine(result):
        return _attach_decision(result, md, trace, kwargs.get("litellm_call_id"), self, kwargs)

    async def attach() -> Any:
        with routing_request(md, trace, user, self, system, prompt):
            return _attach_decision(await result, md, trace, kwargs.get("litellm_call_id"), self, kwargs)
    return attach()


# -- how litellm.Router learns the strategy ------------------------------------
# Each hook is a litellm.Router method rewritten against the original (its first argument, bound to the router):
# PrefillRouter and install() apply the same table, so the subclass and the patched class behave alike.
def _validate_hook(original: Callable[..., Any], self: Any, routing_strategy: Any) -> None:
    if not is_prefill(routing_strategy):
        original(routing_strategy)


def _init_hook(original: Callable[..., Any], self: Any, routing_strategy: Any, routing_strategy_args: dict) -> None:
    if not is_prefill(routing_strategy):
        return original(routing_strategy, routing_strategy_args)
    original("simple-shuffle", {})
    apply_prefill_routing_strategy(self, routing_strategy_args)
    return None


def _apply_args_hook(original: Callable[..., Any], self: Any) -> None:
    if not is_prefill(routing_strategy_of(self)):
        return original()
    apply_prefill_routing_strategy(self, self.routing_strategy_args)
    return None


# litellm 1.103+ checks a routing_groups entry's strategy with a function of its routing_groups module (before: the
# router's _validate_routing_strategy, hooked above). Wrapped once, it accepts prefill while a hooked router (a
# PrefillRouter, or a Router after install()) builds its groups, and is unchanged for every other router.
_BUILDING_PREFILL_GROUPS: contextvars.ContextVar[bool] = contextvars.ContextVar("building_prefill_groups",
                                                                                default=False)


# where litellm checks each routing group's strategy: 1.103-1.106, then 1.109 (<= 1.102: no module-level check)
_GROUPS_VALIDATOR_MODULES = ("litellm.router_utils.routing_groups", "litellm.litellm_core_utils.routing_groups")


def _let_groups_validator_accept_prefill() -> None:
    for module in _GROUPS_VALIDATOR_MODULES:
        try:
            _accept_prefill_in(importlib.import_module(module))
        except ImportError:
            continue


def _accept_prefill_in(routing_groups: Any) -> None:
    original = getattr(routing_groups, "validate_routing_strategy", None)
    if original is None or getattr(original, "accepts_prefill", False):
        return

    def validate_routing_strategy(routing_strategy: Any) -> None:
        if not (is_prefill(routing_strategy) and _BUILDING_PREFILL_GROUPS.get()):
            original(routing_strategy)
    validate_routing_strategy.accepts_prefill = True  # type: ignore[attr-defined]
    setattr(routing_groups, "validate_routing_strategy", validate_routing_strategy)  # noqa: B010 - any release


def _init_groups_hook(original: Callable[..., Any], self: Any, groups_input: Any) -> None:
    """``routing_groups`` entries with ``routing_strategy: prefill`` get a strategy of their own (their
    ``routing_strategy_args`` name the bundle) that routes their models, whatever the router's own strategy is."""
    with _INSTALL_LOCK:
        _let_groups_validator_accept_prefill()
    selectors = getattr(self, "_group_selectors", None) or {}
    serving = {name: by_strategy.get(PREFILL) for name, by_strategy in selectors.items()}  # before litellm resets them
    token = _BUILDING_PREFILL_GROUPS.set(True)
    try:
        original(groups_input)
    finally:
        _BUILDING_PREFILL_GROUPS.reset(token)
    for name, group in routing_groups_of(self).items():
        if is_prefill(group.routing_strategy):
            self._group_selectors[name] = {PREFILL: _kept_or_built(
                serving.get(name), self, group.routing_strategy_args, models=group.models)}


def _group_select(strategy: str | None, selector: Any, kwargs: dict) -> Coroutine[Any, Any, dict] | None:
    """A prefill routing group's choice among the deployments litellm found for it (None: not a prefill group)."""
    if not (is_prefill(strategy) and isinstance(selector, PrefillRoutingStrategy)):
        return None
    return selector.select(kwargs["model"], kwargs["healthy_deployments"],
                           prompt_of(kwargs.get("messages"), kwargs.get("input"), kwargs.get("request_kwargs")),
                           kwargs.get("request_kwargs") or {})


async def _select_async_hook(original: Callable[..., Any], self: Any, *, strategy: str | None, selector: Any,
                             **kwargs: Any) -> Any:
    choice = _group_select(strategy, selector, kwargs)
    return await choice if choice is not None else await original(strategy=strategy, selector=selector, **kwargs)


def _select_sync_hook(original: Callable[..., Any], self: Any, *, strategy: str | None, selector: Any,
                      **kwargs: Any) -> Any:
    choice = _group_select(strategy, selector, kwargs)
    return run_sync(choice) if choice is not None else original(strategy=strategy, selector=selector, **kwargs)


def _context_hook(original: Callable[..., Any], self: Any, model: str, request_kwargs: dict | None = None
                  ) -> tuple[str | None, Any]:
    """A key's or team's ``routing_strategy: prefill`` (litellm ignores names it does not know, with a warning on every
    request) means: ``model`` as configured. Where no prefill strategy routes ``model``, that is said once."""
    if not is_prefill((request_kwargs or {}).get("routing_strategy")):
        return cast(tuple[str | None, Any], original(model, request_kwargs))
    strategy, selector = original(model, None)
    if not is_prefill(strategy):
        say_prefill_asked_of_unrouted(self, model, strategy)
    return strategy, selector


def _plugin_filter_hook(original: Callable[..., Any], self: Any, healthy_deployments: Any, request_kwargs: dict,
                        *args: Any, **kwargs: Any) -> Any:
    """litellm's narrowing of a request's healthy deployments to what its routing plugins left: where a
    :class:`~.routing_plugin.PrefillRoutingPlugin` left only a target litellm has no healthy deployment of (cooling
    down, filtered out), the policy's next pick among the healthy ones - not litellm's "no deployments left" error."""
    try:
        return original(healthy_deployments, request_kwargs, *args, **kwargs)
    except ValueError:
        from .routing_plugin import widened_pool

        candidates = request_metadata(request_kwargs).get("_routing_plugin_candidate_models")
        widened = widened_pool(healthy_deployments, candidates)
        if widened is None:
            raise
        return widened


_ROUTER_HOOKS: dict[str, Callable[..., Any]] = {
    "_validate_routing_strategy": _validate_hook,
    "routing_strategy_init": _init_hook,
    "_apply_updated_routing_strategy_args": _apply_args_hook,
    "_init_routing_groups": _init_groups_hook,
    "_select_deployment_async": _select_async_hook,
    "_select_deployment_sync": _select_sync_hook,
    "_get_routing_context": _context_hook,
    "_filter_by_routing_plugin_candidates": _plugin_filter_hook,
}


def _hooked(original: Callable[..., Any], hook: Callable[..., Any], static: bool = False) -> Callable[..., Any]:
    """The Router method ``original`` with ``hook`` in front of it (``static``: ``original`` is a staticmethod,
    called through the router, as litellm 1.103+ declares ``_validate_routing_strategy``)."""
    def bound(self: Any) -> Callable[..., Any]:
        return original if static else functools.partial(original, self)

    if asyncio.iscoroutinefunction(original):
        @functools.wraps(original)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await hook(bound(self), self, *args, **kwargs)
        return acall

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return hook(bound(self), self, *args, **kwargs)
    return call


def _router_methods(base: type) -> dict[str, Callable[..., Any]]:
    """Everything the prefill strategy changes in ``base`` (a litellm.Router class): the strategy hooks and the
    decision-carrying request methods. A litellm release without one of the hooked methods lacks that feature
    (e.g. ``routing_groups``, or the decision in one API's responses) and is left as it is."""
    hooks: dict[str, Callable[..., Any]] = {
        **_ROUTER_HOOKS, **{name: functools.partial(_decision_hook, key) for name, key in _DECISION_METHODS.items()}}
    return {name: _hooked(getattr(base, name), hook, isinstance(_declared(base, name), staticmethod))
            for name, hook in hooks.items() if callable(getattr(base, name, None))}


def _declared(base: type, name: str) -> Any:
    """``name`` as ``base`` declares it (a staticmethod stays one). From litellm 1.109 ``litellm.Router`` is a facade
    that serves its members from a core class (``_core_class``) and patches that class when its members are set."""
    for owner in (base, getattr(base, "_core_class", None)):
        found = inspect.getattr_static(owner, name, None) if owner is not None else None
        if found is not None:
            return found
    return None


# -- litellm 1.110+: a Router that refuses subclasses ----------------------------------------------------------------
# litellm 1.110 serves litellm.Router from a new core: the class refuses subclasses, and the members the hooks above
# rewrite are gone. There the prefill strategy goes in through the Router's own entry point for custom routing,
# register_plugin(), on a router built with litellm's simple-shuffle, and the request endpoints are wrapped so each
# response carries its decision - the strategy's, or a tier classifier's or routing plugin's: install() (which each
# of those hooks calls when built) wraps them on the class, for every router built before or after it, and a
# PrefillRouter built before any install() wraps its own. The proxy builds its Router with Router.from_config, which
# install() hooks the same way. The core hands the registered strategy every pick; for a key's or team's strategy
# override and for routing groups beside it, the strategy asks the core which litellm strategy applies and has that
# strategy's selector pick (composition.routing_context, group_pick). The core takes one custom strategy per router,
# none per routing group: a routing_groups entry with the prefill strategy is given to litellm as a simple-shuffle
# group (its name stays callable, its models grouped) and keeps its PrefillRoutingStrategy on the router
# (composition.prefill_groups_of); the router-wide prefill strategy, or else a PrefillGroupsRouting, is registered
# and hands each request of such a group to that group's strategy (strategy.route_request).

# request endpoints of a litellm 1.110+ Router whose responses carry the decision, with the metadata key of each
_SEALED_DECISION_ENDPOINTS: dict[str, str] = {
    "acompletion": "metadata", "completion": "metadata", "atext_completion": "metadata",
    "aresponses": "litellm_metadata", "responses": "litellm_metadata",
    "aanthropic_messages": "litellm_metadata", "anthropic_messages": "litellm_metadata",
    "agenerate_content": "litellm_metadata", "generate_content": "litellm_metadata",
    "agenerate_content_stream": "litellm_metadata", "generate_content_stream": "litellm_metadata",
}


# a Router's routing_groups entries with the prefill strategy: group name -> (models, routing_strategy_args)
_PrefillGroups = dict[str, tuple[list[str], dict]]


def _split_prefill_groups(routing_groups: Any) -> tuple[_PrefillGroups, Any]:
    """(the ``routing_groups`` entries with the prefill strategy, by name: their models and ``routing_strategy_args``;
    the entries a litellm 1.110+ Router is built with: each prefill one as a simple-shuffle group of the same name
    and models - its name stays callable, its models grouped - the others as given)."""
    if not routing_groups:
        return {}, routing_groups
    prefill: _PrefillGroups = {}
    built: list[Any] = []
    for group in routing_groups:
        if not is_prefill(field_of(group, "routing_strategy")):
            built.append(group)
            continue
        # litellm's own check of an entry (a pydantic ValidationError naming the field), as earlier releases make it
        entry = group if isinstance(group, RoutingGroup) else RoutingGroup.model_validate(group)
        prefill[entry.group_name] = (list(entry.models), dict(entry.routing_strategy_args or {}))
        built.append({"group_name": entry.group_name, "models": list(entry.models),
                      "routing_strategy": "simple-shuffle"})
    return prefill, built


def _say_prefill_groups_given_back_as_shuffle(router: Any, routing_groups: Any) -> None:
    """Warn where new ``routing_groups`` give a prefill group of ``router`` (litellm 1.110+) back as the simple-shuffle
    group litellm's ``settings()`` report it as (a read-modify-write of the settings): it stops being routed by its
    bundle, which is right only if that was meant."""
    now = prefill_groups_of(router)
    for group in routing_groups or ():
        name = field_of(group, "group_name")
        if name in now and strategy_name(field_of(group, "routing_strategy")) in (None, "simple-shuffle"):
            logger.warning(
                "routing group %r was routed by its bundle (routing_strategy: prefill) and is now a simple-shuffle "
                "group: litellm's settings() report a prefill group as simple-shuffle, so settings written back from "
                "them drop its prefill routing. To keep it, give it routing_strategy: prefill and its "
                "routing_strategy_args again.", name)


def _group_strategies(router: Any, groups: _PrefillGroups) -> dict[str, PrefillRoutingStrategy]:
    """The prefill strategy of each prefill ``routing_groups`` entry of ``router`` (a litellm 1.110+ Router; a group
    without ``bundle`` fails here, as on earlier releases), to be set as its :data:`PREFILL_GROUPS_ATTRIBUTE`."""
    serving = prefill_groups_of(router)
    return {name: _kept_or_built(serving.get(name), router, args, models=models)
            for name, (models, args) in groups.items()}


def _keep_custom_routing(router: Any) -> None:
    """Register the custom routing ``router`` (a litellm 1.110+ Router) needs now, where litellm dropped it (it forgets
    a custom strategy when the routing strategy changes): its router-wide prefill strategy registers itself; without
    one, a :class:`~.strategy.PrefillGroupsRouting` while it has prefill routing groups. Once they are gone the
    dispatcher is dropped, so litellm's own strategy picks again without it (it only handed every request on)."""
    if _routes_by_prefill(router):
        return
    custom = custom_strategy_of(router)
    if prefill_groups_of(router):
        if not isinstance(custom, PrefillGroupsRouting):
            use_strategy(router, PrefillGroupsRouting(router))
    elif isinstance(custom, PrefillGroupsRouting):  # litellm's way to drop a custom strategy: its strategy set again
        router.routing_strategy_init(routing_strategy_of(router), getattr(router, "routing_strategy_args", None) or {})


def _route_by_prefill(router: Any, routing_strategy_args: dict | None) -> None:
    """Make the prefill strategy choose ``router``'s deployments (a litellm 1.110+ Router, its own strategy
    simple-shuffle): registered as its custom routing, its request endpoints carrying each decision."""
    strategy = _kept_or_built(getattr(router, "prefill_strategy", None), router, routing_strategy_args)
    use_strategy(router, strategy)
    router.prefill_strategy = strategy


def _carry_decisions(router: Any) -> None:
    """Wrap ``router``'s request endpoints (a litellm 1.110+ Router) so each response carries the decision made for
    it - by its prefill strategy, or by a tier classifier or routing plugin of its complexity router. Nothing to do
    after :func:`install`, which wrapped them on the class."""
    if getattr(litellm.Router, "_prefill_installed", False):
        return
    for name, key in _SEALED_DECISION_ENDPOINTS.items():
        endpoint = getattr(router, name, None)
        if callable(endpoint):
            setattr(router, name, functools.partial(_sealed_decision_hook, key, endpoint, router))


def _sealed_endpoints(base: type) -> dict[str, Callable[..., Any]]:
    """The request endpoints of ``base`` (litellm 1.110+'s ``litellm.Router``) wrapped by :func:`_sealed_decision_hook`,
    to be set on the class (which patches its core's class: every router, built before or after, answers through
    them)."""
    return {name: _hooked(getattr(base, name), functools.partial(_sealed_decision_hook, key))
            for name, key in _SEALED_DECISION_ENDPOINTS.items() if callable(getattr(base, name, None))}


def _sealed_decision_hook(metadata_key: str, original: Callable[..., Any], router: Any, *args: Any,
                          **kwargs: Any) -> Any:
    """A litellm 1.110+ request endpoint's hook: :func:`_decision_hook` for the Router the request was sent to (an
    endpoint wrapped on the class runs bound to the Router's core), with the request's ``litellm_trace_id`` set here
    when the caller gave none (litellm sets it only inside the endpoint, and requests sharing a metadata dict find
    their own decision by it)."""
    kwargs.setdefault("litellm_trace_id", str(uuid.uuid4()))
    return _decision_hook(metadata_key, original, public_router(router), *args, **kwargs)


def _routes_by_prefill(router: Any) -> bool:
    own = getattr(router, "prefill_strategy", None)
    return own is not None and custom_strategy_of(router) is own


def _sealed_apply(original: Callable[..., Any], router: Any, changes: Any, *args: Any, **kwargs: Any) -> Any:
    """``router.apply(ChangeSet(settings={"routing_strategy": "prefill", ...}))`` on litellm 1.110+: litellm's
    simple-shuffle, then the prefill strategy; new ``routing_strategy_args`` of a prefill router rebuild its
    strategy (another strategy drops it: litellm forgets a custom strategy when the routing strategy changes). New
    ``routing_groups`` rebuild the prefill groups' strategies (see :func:`_split_prefill_groups`)."""
    settings = dict(getattr(changes, "settings", None) or {})
    to_prefill = is_prefill(settings.get("routing_strategy"))
    new_args = "routing_strategy_args" in settings and "routing_strategy" not in settings and _routes_by_prefill(router)
    strategies: dict[str, PrefillRoutingStrategy] | None = None
    if "routing_groups" in settings:  # built first: a group that cannot be built changes nothing
        _say_prefill_groups_given_back_as_shuffle(router, settings["routing_groups"])
        groups, settings["routing_groups"] = _split_prefill_groups(settings["routing_groups"])
        strategies = _group_strategies(router, groups)
    if to_prefill:
        settings["routing_strategy"] = "simple-shuffle"
    elif strategy_name(settings.get("routing_strategy")) == "simple-shuffle" and _routes_by_prefill(router):
        logger.warning("the router was routed by its bundle (routing_strategy: prefill) and now routes by "
                       "simple-shuffle: litellm's settings() report the prefill strategy as simple-shuffle, so "
                       "settings written back from them drop it. To keep it, give routing_strategy: prefill.")
    if to_prefill or strategies is not None:
        changes = dataclasses.replace(changes, settings=settings)
    result = original(changes, *args, **kwargs)
    if "routing_strategy" in settings and not to_prefill and _routes_by_prefill(router):
        # litellm drops a custom strategy only when the strategy changes: simple-shuffle -> simple-shuffle keeps it
        router.routing_strategy_init(settings["routing_strategy"], settings.get("routing_strategy_args") or {})
    if strategies is not None:
        setattr(router, PREFILL_GROUPS_ATTRIBUTE, strategies)
    if to_prefill or new_args:
        _route_by_prefill(router, cast("dict | None", settings.get("routing_strategy_args"))
                          or getattr(router, "routing_strategy_args", None))
    _keep_custom_routing(router)
    return result


def _sealed_arguments(arguments: Mapping[str, Any]) -> tuple[bool, _PrefillGroups, dict[str, Any]]:
    """(whether ``arguments`` - a litellm 1.110+ Router's - ask for the prefill strategy, their prefill routing
    groups, the arguments litellm builds the Router with: simple-shuffle in the prefill strategy's place, a
    simple-shuffle group in each prefill group's - see :func:`_split_prefill_groups`)."""
    prefill = is_prefill(arguments.get("routing_strategy"))
    built_with = dict(arguments)
    groups: _PrefillGroups = {}
    if "routing_groups" in arguments:
        groups, built_with["routing_groups"] = _split_prefill_groups(arguments["routing_groups"])
    if prefill:
        built_with["routing_strategy"] = "simple-shuffle"
    return prefill, groups, built_with


def _sealed_built(router: Any, prefill: bool, groups: _PrefillGroups, routing_strategy_args: dict | None) -> None:
    """``router`` (a litellm 1.110+ Router, just built) with its responses carrying decisions, its prefill routing
    groups' strategies, the prefill strategy registered where it was asked for (:func:`_route_by_prefill`), else the
    groups' custom routing, and an ``apply`` that learns the strategy's name."""
    _carry_decisions(router)
    # first: the router-wide strategy leaves their models to them
    setattr(router, PREFILL_GROUPS_ATTRIBUTE, _group_strategies(router, groups))
    if prefill:
        _route_by_prefill(router, routing_strategy_args)
    _keep_custom_routing(router)
    apply = getattr(router, "apply", None)
    if callable(apply):
        router.apply = functools.partial(_sealed_apply, apply, router)


def _build_sealed(original_init: Callable[..., None], router: Any, args: tuple, kwargs: dict) -> None:
    """Build ``router`` (a litellm 1.110+ Router) with ``original_init`` (see :func:`_sealed_arguments`,
    :func:`_sealed_built`)."""
    prefill, groups, built_with = _sealed_arguments(kwargs)
    original_init(router, *args, **built_with)
    _sealed_built(router, prefill, groups, kwargs.get("routing_strategy_args"))


def _sealed_from_config_hook(original: Callable[..., Any]) -> Any:
    """``litellm.Router.from_config`` (litellm 1.110+: how the proxy builds its Router, from a ``RouterConfig`` of
    the config's ``router_settings``) with the prefill strategy, as :func:`_build_sealed` builds one."""
    def from_config(cls: type, config: Any, *args: Any, **kwargs: Any) -> Any:
        arguments: Mapping[str, Any] = getattr(config, "arguments", None) or {}
        prefill, groups, built_with = _sealed_arguments(arguments)
        if prefill or groups:
            config = dataclasses.replace(config, arguments=types.MappingProxyType(built_with))
        router = original(config, *args, **kwargs)
        _sealed_built(router, prefill, groups, arguments.get("routing_strategy_args"))
        return router
    return classmethod(functools.wraps(original)(from_config))


class _BuildsRouters(type):
    """A ``PrefillRouter`` on litellm 1.110+ is a ``litellm.Router`` it built (the Router refuses subclasses):
    ``isinstance(router, PrefillRouter)`` is true for those."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, litellm.Router) and bool(getattr(instance, "_built_by_prefill_router", False))


try:
    class PrefillRouter(litellm.Router):
        """``litellm.Router`` with the ``prefill`` routing strategy built in.

        ``PrefillRouter(model_list=..., routing_strategy="prefill", routing_strategy_args={"bundle": DIR})``, or a
        prefill ``routing_groups`` entry beside another router-wide strategy.
        """
    ROUTER_ACCEPTS_SUBCLASSES = True
except TypeError:  # litellm 1.110+: "litellm.Router cannot be subclassed"
    ROUTER_ACCEPTS_SUBCLASSES = False

    class PrefillRouter(metaclass=_BuildsRouters):  # type: ignore[no-redef]
        """A ``litellm.Router`` with the ``prefill`` routing strategy (litellm 1.110+: the Router refuses subclasses,
        so this builds one): ``PrefillRouter(model_list=..., routing_strategy="prefill", routing_strategy_args=
        {"bundle": DIR})``, or a prefill ``routing_groups`` entry beside another router-wide strategy."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
            router = litellm.Router.__new__(litellm.Router)
            _build_sealed(_ROUTER_INIT, router, args, kwargs)
            router._built_by_prefill_router = True  # type: ignore[attr-defined]
            return router


_ROUTER_INIT: Callable[..., None] = litellm.Router.__init__  # litellm's own, captured before any install()

# written against litellm.Router's own methods (captured before any install())
if ROUTER_ACCEPTS_SUBCLASSES:
    for _name, _method in _router_methods(litellm.Router).items():
        setattr(PrefillRouter, _name, _method)
    del _name, _method


def _sealed_init_hook(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _build_sealed(original, self, args, kwargs)
    return __init__


def install() -> None:
    """Make a plain ``litellm.Router`` accept ``routing_strategy="prefill"`` (router-wide or in a
    ``routing_groups`` entry) and carry decisions in its responses (idempotent).

    Patches ``litellm.Router`` with the methods of :class:`PrefillRouter` (litellm 1.110+: its constructor and its
    request endpoints, for routers built before too); used by the proxy hook (``litellm_prefill_router.proxy_hook``)
    and called by the tier classifier and routing plugin when they are built.
    """
    with _INSTALL_LOCK:
        base = litellm.Router
        if getattr(base, "_prefill_installed", False) or (ROUTER_ACCEPTS_SUBCLASSES
                                                          and issubclass(base, PrefillRouter)):
            return
        if ROUTER_ACCEPTS_SUBCLASSES:
            for name, method in _router_methods(base).items():
                setattr(base, name, method)
        else:
            base.__init__ = _sealed_init_hook(base.__init__)  # type: ignore[method-assign]
            if callable(getattr(base, "from_config", None)):
                base.from_config = _sealed_from_config_hook(base.from_config)  # type: ignore[attr-defined]
            for name, endpoint in _sealed_endpoints(base).items():
                setattr(base, name, endpoint)
        base._prefill_installed = True  # type: ignore[attr-defined]


# keys of a proxy config's router_settings that decide how requests are routed (the rest - caches, retries, limits -
# does not change which deployment a prefill strategy chooses)
_ROUTING_SETTINGS = ("routing_strategy", "routing_strategy_args", "routing_groups", "model_group_alias",
                     "enable_pre_call_checks")


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
    if isinstance(own, PrefillRoutingStrategy) and (is_prefill(routing_strategy_of(router)) or
                                                     (not ROUTER_ACCEPTS_SUBCLASSES and _routes_by_prefill(router))):
        out["router"] = own
    for name, selectors in (getattr(router, "_group_selectors", None) or {}).items():
        if isinstance(strategy := selectors.get(PREFILL), PrefillRoutingStrategy):
            out[f"routing group {name}"] = strategy
    for name, strategy in prefill_groups_of(router).items():  # litellm 1.110+
        out[f"routing group {name}"] = strategy
    return out
