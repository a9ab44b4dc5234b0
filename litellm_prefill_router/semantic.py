"""A drop-in for semantic routers (aurelio-labs semantic-router 0.x and 1.x, LiteLLM ``auto_router/...``).

``PrefillSemanticRouter(bundle=...)("text")`` returns a :class:`RouteChoice` with ``.name`` (the chosen
target, or ``None`` when the router declines) and its P(correct) as ``.similarity_score`` (semantic-router 0.x's
``SemanticRouter``) and ``.confidence`` (1.x's ``IndexedRouter``, with ``.calibrated``); ``limit=`` returns the ranked
routes and ``threshold=`` sets a call's confidence bar, as in 1.x; ``await router.acall("text")`` is the async twin.

:func:`migrate_auto_router_config` rewrites a LiteLLM proxy config that uses an ``auto_router/``
semantic deployment into the equivalent prefill setup.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, overload

from .autotune import Autotuner, AutotuneSettings
from .config import RequestOverrides
from .costs import Price, given_prices
from .decider import PrefillDecider
from .deployments import deployment_model
from .errors import ConfigurationError, RequestSettingsError
from .hook_settings import SEMANTIC_SETTINGS, validated_settings
from .jsonl import append_log_record, checked_log_template
from .policy import Constraints, RoutingDecision
from .predictor import shared_predictor
from .reloading import BundleReloader
from .rollout import checked_serving, rollout_arm, user_key
from .sessions import ProviderSpec

#: the model group of the drop-in's decisions (decision log, metrics, autotune)
MODEL_GROUP = "semantic router"


@dataclass(frozen=True)
class RouteChoice:
    """Same fields as semantic-router's ``RouteChoice`` plus the full decision."""

    name: str | None = None
    function_call: list[dict[str, Any]] | None = None
    similarity_score: float | None = None
    decision: RoutingDecision | None = None
    # the decision's id in the decision log (``decision_log``): name it in feedback ({"id": ..., "score": ...})
    id: str | None = None
    # shadow mode or a rollout's control arm: ``name`` is what serves as before (``shadow_route``), not the router's
    # choice (that is ``decision.target``); ``arm``: the call's rollout arm ("router" / "control"), None without one
    shadow: bool = False
    arm: str | None = None
    # semantic-router 1.x's names: the route's confidence (its P(correct), as ``similarity_score``), and whether that
    # is a probability (always: the bundle's P(correct) per route, not a raw similarity)
    confidence: float | None = None
    calibrated: bool = True


def priced_routes(decider: PrefillDecider, bundle: str, routes: Sequence[str], user_prices: Mapping[str, Price],
                  what: str) -> dict[str, Price]:
    """The price of each of ``routes`` (bundle targets named by a caller as ``what``): the caller's, else the
    bundle's; an unknown target or one without a price is an error naming it."""
    unknown = sorted(set(routes) - set(decider.targets))
    if unknown:
        raise ConfigurationError(f"{what} {unknown} are not targets of bundle {bundle}; its targets: {decider.targets}")
    base = {**decider.manifest_prices(), **user_prices}
    missing = [t for t in routes if t not in base]
    if missing:
        raise ConfigurationError(f"no price for {what} {missing}; pass prices={{target: (input, output)}}")
    return {t: base[t] for t in routes}


class ServedRoutes:
    """What a router built from its bundle (a decider, and the prices of the targets it routes among), reloaded
    with the bundle (``_reloader``); shared by the semantic-router drop-in and the tier classifier."""

    _reloader: BundleReloader[tuple[PrefillDecider, dict[str, Price]]]

    @property
    def decider(self) -> PrefillDecider:
        return self._reloader.current[0]

    @property
    def prices(self) -> dict[str, Price]:
        return self._reloader.current[1]


class PrefillSemanticRouter(ServedRoutes):
    """Semantic-router-shaped router whose routes are the bundle's targets (``bundle``: a directory or
    ``hf://owner/name[@revision][/path]`` on the Hugging Face Hub).

    ``routes`` restricts the choice to some targets; ``min_score`` (or semantic-router 1.x's name for it,
    ``confidence_threshold``; a call's ``threshold=`` overrides it) makes the router decline
    (``RouteChoice(name=None)``) when the chosen target's P(correct) is below it, as a semantic router
    declines below its ``score_threshold``. ``prediction_cache_size``: predictions remembered for prompts seen
    again (0: every call runs the encoder); ``decision_timeout_s``: a prediction not ready by then is declined, like
    every fallback decision (``decision.reason``: ``fallback: routing timed out``). ``decision_log``: a JSONL path
    (``{date}`` / ``{pid}`` as for the LiteLLM router) getting one line per call - the decision, ``declined``, the
    text (``decision_log_messages``) and ``route_id`` (= ``RouteChoice.id``, for feedback) - which ``prefill-router
    stats``, ``feedback`` and ``replay`` read. ``execution_providers``: onnxruntime providers for the encoder, as
    for :class:`~.predictor.PrefillPredictor`. ``max_cost_usd`` / ``min_p_correct``: limits for every call (a call's
    ``overrides`` may lower the ceiling or set its own floor); a call no route meets them for is declined.
    ``autotune``: tune the policy to a goal on the calls it decides (e.g. ``{"savings": 0.5}``; see
    :mod:`litellm_prefill_router.autotune`), from the end of ``decision_log`` at start.

    Shadow mode and canary rollouts, as for the LiteLLM strategy: ``shadow=True`` decides and logs every call but
    returns ``shadow_route`` (the route serving today; unset: ``RouteChoice(name=None)``, so the caller's own default
    serves, as before the swap); ``rollout=0.1`` returns the router's choice for that share of calls (by a hash of the
    call's ``user=`` where given: each user stays in one arm) and the rest (arm ``control``) as in shadow mode. The
    choice says which (``RouteChoice.shadow`` / ``.arm``); ``prefill-router stats`` compares the routes with what was
    served.
    """

    def __init__(self, bundle: str, *, routes: Sequence[str] | None = None, preset: str | None = None,
                 tolerance: float | None = None, lambda_: float | None = None, value_usd: float | None = None,
                 min_score: float | None = None, confidence_threshold: float | None = None,
                 prices: Mapping[str, tuple[float, float]] | None = None,
                 reload_interval_s: float | None = None, prediction_cache_size: int = 1024,
                 decision_timeout_s: float | None = None, decision_log: str | None = None,
                 decision_log_messages: bool = True,
                 execution_providers: Sequence[ProviderSpec] | None = None,
                 max_cost_usd: float | None = None, min_p_correct: float | None = None,
                 autotune: AutotuneSettings | Mapping[str, Any] | None = None, shadow: bool = False,
                 shadow_route: str | None = None, rollout: float = 1.0) -> None:
        given = validated_settings(SEMANTIC_SETTINGS, {
            "preset": preset, "tolerance": tolerance, "lambda_": lambda_, "value_usd": value_usd, "prices": prices,
            "reload_interval_s": reload_interval_s, "prediction_cache_size": prediction_cache_size,
            "decision_timeout_s": decision_timeout_s, "decision_log": decision_log,
            "decision_log_messages": decision_log_messages, "execution_providers": execution_providers,
            "max_cost_usd": max_cost_usd, "min_p_correct": min_p_correct, "autotune": autotune, "shadow": shadow,
            "rollout": rollout, "min_score": min_score, "confidence_threshold": confidence_threshold},
            "PrefillSemanticRouter")
        min_score, confidence_threshold = given["min_score"], given["confidence_threshold"]
        tolerance, lambda_, value_usd = given["tolerance"], given["lambda_"], given["value_usd"]
        max_cost_usd, min_p_correct, autotune = given["max_cost_usd"], given["min_p_correct"], given["autotune"]
        decision_log_messages, shadow, rollout = given["decision_log_messages"], given["shadow"], given["rollout"]
        reload_interval_s, decision_timeout_s = given["reload_interval_s"], given["decision_timeout_s"]
        execution_providers, prices = given["execution_providers"], given["prices"]
        if min_score is not None and confidence_threshold is not None and min_score != confidence_threshold:
            raise ConfigurationError(f"min_score ({min_score}) and confidence_threshold ({confidence_threshold}) are "
                                     "one setting (semantic-router 0.x's and 1.x's name): give one")
        min_score = min_score if min_score is not None else confidence_threshold
        self.rollout = checked_serving(shadow, rollout, "shadow_route", shadow_route)
        self.shadow, self.shadow_route = bool(shadow), shadow_route
        try:
            self.decision_log = checked_log_template(decision_log)
        except ValueError as err:
            raise ConfigurationError(str(err)) from err
        self.decision_log_messages = decision_log_messages
        self.bundle, self._requested_routes, self.min_score = bundle, list(routes or ()), min_score
        self._cache_size, self._timeout_s = prediction_cache_size, decision_timeout_s
        self._providers = list(execution_providers) if execution_providers else None
        self._preset, self._tolerance, self._lambda, self._value_usd = preset, tolerance, lambda_, value_usd
        self._limits = Constraints(max_cost_usd, min_p_correct)  # checked here, before the bundle loads
        self._user_prices = given_prices(prices, "user")
        # tunes the policy on the calls it decides (see litellm_prefill_router.autotune); kept across reloads
        self.autotuner = Autotuner(autotune) if autotune is not None else None
        self._reloader = BundleReloader(bundle, self._load, lambda served: served[0].predictor, reload_interval_s)
        if shadow_route is not None and shadow_route not in self.routes:
            raise ConfigurationError(f"shadow_route {shadow_route!r} is not a route of this router (the route that "
                                     f"serves calls as before); its routes: {self.routes}")
        if self.autotuner is not None:  # a restarted router starts from its latest logged calls' setting
            self.autotuner.seed_from_log(decision_log, self.decider.predictor.bundle.version, [MODEL_GROUP],
                                         self.decider.default_policy)

    def _load(self) -> tuple[PrefillDecider, dict[str, Price]]:
        decider = PrefillDecider(shared_predictor(self.bundle, cache_size=self._cache_size,
                                                  execution_providers=self._providers), preset=self._preset,
                                 tolerance=self._tolerance, lambda_=self._lambda, value_usd=self._value_usd,
                                 timeout_s=self._timeout_s,
                                 max_cost_usd=self._limits.max_cost_usd, min_p_correct=self._limits.min_p_correct,
                                 autotuner=self.autotuner)
        return decider, priced_routes(decider, self.bundle, self._requested_routes or decider.targets,
                                      self._user_prices, "routes")

    @property
    def routes(self) -> list[str]:
        return list(self._reloader.current[1])

    def list_route_names(self) -> list[str]:
        return list(self.routes)

    def _choice(self, d: RoutingDecision, text: str, user: str | None, threshold: float | None) -> RouteChoice:
        score = d.p_correct.get(d.target)
        bar = self.min_score if threshold is None else threshold
        declined = d.reason != "policy" or (bar is not None and (score is None or score < bar))
        arm = rollout_arm(self.rollout, user_key(user))
        as_before = self.shadow or arm == "control"  # decided and logged, served as before the swap
        name = self.shadow_route if as_before else None if declined else d.target
        # the score of the route returned (as before: the shadow route's P(correct), none for the caller's default)
        similarity = (d.p_correct.get(name) if name else None) if as_before else score
        choice = RouteChoice(name=name, similarity_score=similarity, confidence=similarity if name else None,
                             decision=d, shadow=as_before, arm=arm,
                             id=uuid.uuid4().hex if self.decision_log is not None else None)
        if self.decision_log is not None:
            self._log(choice, text, declined)
        return choice

    def _ranked(self, first: RouteChoice, decider: PrefillDecider, limit: int | None,
                threshold: float | None) -> list[RouteChoice]:
        """semantic-router 1.x's ``limit``: the routes in the order the policy would take them - its pick, then its
        pick without that one, and so on, on the same prediction - those whose P(correct) clears the bar, at most
        ``limit`` (None: all). A declined call has none; shadow mode and a control arm only the route serving."""
        if first.name is None or first.decision is None:
            return []
        out, d, taken = [first], first.decision, [first.decision.target]
        bar = self.min_score if threshold is None else threshold
        while not first.shadow and (limit is None or len(out) < limit):
            nxt = decider.reroute(d, taken)
            if nxt is None:
                break
            taken.append(nxt.target)
            p = d.p_correct.get(nxt.target)
            if p is not None and (bar is None or p >= bar):
                out.append(replace(first, name=nxt.target, similarity_score=p, confidence=p))
        return out[:limit] if limit is not None else out

    def _log(self, choice: RouteChoice, text: str, declined: bool) -> None:
        """One decision-log line, in the LiteLLM router's format less the outcome: the caller calls the model, so
        ``outcome`` is null and ``stats`` counts the line as decided only. ``prefill-router feedback`` (scores by
        ``route_id``), ``replay`` and ``stats`` read it. A line that cannot be written is logged, never raised."""
        assert choice.decision is not None and self.decision_log is not None
        decision: dict[str, Any] = {**choice.decision.to_dict(), "declined": declined}
        if choice.shadow:  # the route above is the router's; the caller served this one (None: its own default)
            decision.update(shadow=True, served_target=choice.name)
        if choice.arm is not None:
            decision["arm"] = choice.arm
        row: dict[str, Any] = {"ts": datetime.now(timezone.utc).isoformat(), "route_id": choice.id,
                               "decision": decision, "outcome": None}
        if self.decision_log_messages:
            row["messages"] = [{"role": "user", "content": text}]
        append_log_record(self.decision_log, row)

    def _narrowed(self, overrides: RequestOverrides | None, route_filter: Sequence[str] | None,
                  vector: object) -> RequestOverrides | None:
        """semantic-router's call arguments: ``route_filter`` narrows the routes (as ``candidates`` does); a
        ``vector`` cannot be routed on (the router reads the text's prefill activations, not an embedding)."""
        if vector is not None:
            raise ConfigurationError("PrefillSemanticRouter routes on the text (its prefill activations), not on an "
                                     "embedding vector: pass text=... instead of vector=...")
        if route_filter is None:
            return overrides
        unknown = sorted(set(route_filter) - set(self.routes))
        if unknown:
            raise ConfigurationError(f"route_filter names {unknown}, which are not routes of this router; its "
                                     f"routes: {self.routes}")
        overrides = overrides or RequestOverrides()
        kept = [r for r in route_filter if overrides.candidates is None or r in overrides.candidates]
        if not kept:  # semantic-router raises too: "No routes found matching the filter criteria"
            raise RequestSettingsError(f"route_filter {list(route_filter)} leaves no route to choose from"
                                       + (f" among this call's candidates {overrides.candidates}"
                                          if overrides.candidates is not None else ""))
        return overrides.model_copy(update={"candidates": kept})

    @overload
    def __call__(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                 route_filter: Sequence[str] | None = None, *, limit: Literal[1] = 1, threshold: float | None = None,
                 query: str | None = None, overrides: RequestOverrides | None = None,
                 user: str | None = None) -> RouteChoice: ...

    @overload
    def __call__(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                 route_filter: Sequence[str] | None = None, *, limit: int | None, threshold: float | None = None,
                 query: str | None = None, overrides: RequestOverrides | None = None,
                 user: str | None = None) -> RouteChoice | list[RouteChoice]: ...

    def __call__(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                 route_filter: Sequence[str] | None = None, *, limit: int | None = 1, threshold: float | None = None,
                 query: str | None = None, overrides: RequestOverrides | None = None,
                 user: str | None = None) -> RouteChoice | list[RouteChoice]:
        """Route ``text`` - semantic-router 0.x's ``__call__`` (``route_filter`` restricts the routes considered;
        ``simulate_static`` is accepted and changes nothing: the routes are static) and 1.x's (``query``; ``limit``:
        with other than 1, the ranked routes as a list, see :meth:`_ranked`; ``threshold``: this call's confidence
        bar). 1.x's positional ``router(query, 3, 0.8)`` reads as ``limit=3, threshold=0.8`` (an int is no embedding
        vector, a float no ``simulate_static``). ``user``: the end user, who keeps one arm of a rollout."""
        text, vector, limit, threshold = _call_shape(text, query, vector, simulate_static, limit, threshold)
        self._reloader.maybe_reload()
        overrides = self._narrowed(overrides, route_filter, vector)
        decider, prices = self._reloader.current
        first = self._choice(decider.decide(text, prices, overrides, MODEL_GROUP), text, user, threshold)
        return first if limit == 1 else self._ranked(first, decider, limit, threshold)

    @overload
    async def acall(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                    route_filter: Sequence[str] | None = None, *, limit: Literal[1] = 1,
                    threshold: float | None = None, query: str | None = None,
                    overrides: RequestOverrides | None = None, user: str | None = None) -> RouteChoice: ...

    @overload
    async def acall(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                    route_filter: Sequence[str] | None = None, *, limit: int | None, threshold: float | None = None,
                    query: str | None = None, overrides: RequestOverrides | None = None,
                    user: str | None = None) -> RouteChoice | list[RouteChoice]: ...

    async def acall(self, text: str | None = None, vector: object = None, simulate_static: bool | float = False,
                    route_filter: Sequence[str] | None = None, *, limit: int | None = 1,
                    threshold: float | None = None, query: str | None = None,
                    overrides: RequestOverrides | None = None, user: str | None = None
                    ) -> RouteChoice | list[RouteChoice]:
        """Async twin of :meth:`__call__`."""
        text, vector, limit, threshold = _call_shape(text, query, vector, simulate_static, limit, threshold)
        self._reloader.maybe_reload()
        overrides = self._narrowed(overrides, route_filter, vector)
        decider, prices = self._reloader.current
        first = self._choice(await decider.adecide(text, prices, overrides, MODEL_GROUP), text, user, threshold)
        return first if limit == 1 else self._ranked(first, decider, limit, threshold)


def _call_shape(text: str | None, query: str | None, vector: object, simulate_static: bool | float,
                limit: int | None, threshold: float | None) -> tuple[str, object, int | None, float | None]:
    """(text, vector, limit, threshold) of a call made the semantic-router 0.x way (``text, vector,
    simulate_static, route_filter``) or the 1.x way (``query, limit, threshold``), checked."""
    if isinstance(vector, int) and not isinstance(vector, bool):  # 1.x's positional limit, not a 0.x vector
        vector, limit = None, vector
    if isinstance(simulate_static, float):  # 1.x's positional threshold, not 0.x's simulate_static flag
        threshold = simulate_static
    if text is not None and query is not None and text != query:
        raise ConfigurationError("give the text to route once: text=... (semantic-router 0.x) or query=... (1.x)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigurationError(f"limit is how many ranked routes to return (1: one RouteChoice, None: all); got "
                                 f"{limit!r}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigurationError(f"threshold is a confidence (a route's P(correct)) between 0 and 1; got {threshold!r}")
    return (text if text is not None else query) or "", vector, limit, threshold


def _routes_of(params: Mapping[str, Any], base: Path) -> list[str]:
    if params.get("auto_router_config"):
        raw = params["auto_router_config"]
        cfg = json.loads(raw) if isinstance(raw, str) else raw
    elif params.get("auto_router_config_path"):
        cfg = json.loads((base / params["auto_router_config_path"]).read_text())
    else:
        raise ConfigurationError("auto_router deployment has neither auto_router_config nor auto_router_config_path")
    return [str(r["name"]) for r in cfg.get("routes", [])]


def _is_auto_router(dep: Mapping[str, Any]) -> bool:
    return deployment_model(dep).startswith("auto_router/")


def _with_prefill_group(settings: dict[str, Any], models: list[str], bundle: str, model_names: set[str],
                        notes: list[str]) -> dict[str, Any]:
    """``settings`` (a config's router_settings) with a ``routing_groups`` entry that routes ``models`` by ``bundle``;
    an existing group that listed one of them gives it up (a model is in one group)."""
    groups = []
    for g in settings.get("routing_groups") or []:
        kept = [m for m in g.get("models") or [] if m not in models]
        if len(kept) != len(g.get("models") or []):
            dropped = sorted(set(g["models"]) - set(kept))
            notes.append(f"routing group {g.get('group_name')!r} no longer lists {dropped}: the prefill group routes "
                         "them")
        if kept:
            groups.append({**g, "models": kept})
    taken = model_names | {str(g.get("group_name")) for g in groups}
    name = next(n for n in ("prefill-routed", *(f"prefill-routed-{i}" for i in range(2, 1000))) if n not in taken)
    groups.append({"group_name": name, "models": models, "routing_strategy": "prefill",
                   "routing_strategy_args": {"bundle": bundle}})
    notes.append(f"router_settings.routing_groups: {name!r} routes {models} by the bundle; the router's own strategy "
                 f"({settings.get('routing_strategy') or 'simple-shuffle'}) still routes every other model group")
    return {**settings, "routing_groups": groups}


def migrate_auto_router_config(config: Mapping[str, Any], bundle: str, *, target_map: Mapping[str, str] | None = None,
                               config_dir: str | Path = ".") -> tuple[dict[str, Any], list[str]]:
    """Rewrite a LiteLLM proxy config using ``auto_router/`` deployments into a prefill one.

    Each auto-router ``model_name`` becomes a model group holding the deployments of its routes' model
    groups (and of its default model), each tagged ``model_info.prefill_target`` (from ``target_map``,
    else by name), and a ``router_settings.routing_groups`` entry with ``routing_strategy: prefill`` routes those
    groups by the bundle. The router's own strategy (latency-, usage-, cost-based, ...) and its arguments are kept
    for every other model group. Returns (new config, notes).
    """
    targets = shared_predictor(bundle).targets
    target_map = dict(target_map or {})
    if unknown := sorted({t for t in target_map.values() if t not in targets}):
        raise ConfigurationError(f"--map names {unknown}, which are not targets of bundle {bundle}; its targets: "
                                 f"{sorted(targets)}")
    model_list = list(config.get("model_list") or [])
    migrated = list(dict.fromkeys(str(d.get("model_name")) for d in model_list if _is_auto_router(d)))
    if not migrated:
        raise ConfigurationError("the config has no auto_router deployment to migrate (a model_list entry whose "
                                 "litellm_params.model starts with 'auto_router/'); nothing was written")
    by_group: dict[str, list[dict[str, Any]]] = {}
    for dep in model_list:
        by_group.setdefault(str(dep.get("model_name")), []).append(dep)
    new_list: list[dict[str, Any]] = []
    notes: list[str] = []
    for dep in model_list:
        params = dep.get("litellm_params") or {}
        if not _is_auto_router(dep):
            new_list.append(dep)
            continue
        groups = list(dict.fromkeys(g for g in [*_routes_of(params, Path(config_dir)),
                                                 str(params.get("auto_router_default_model") or "")] if g))
        for group in groups:
            members = by_group.get(group)
            if not members:
                notes.append(f"route {group!r} of {dep.get('model_name')!r} has no deployment in model_list; skipped")
                continue
            for member in members:
                m_model = deployment_model(member)
                target = target_map.get(group) or next(
                    (t for t in targets if t in (group, m_model, m_model.split("/")[-1])), None)
                if target is None:
                    notes.append(f"route {group!r} ({m_model}) maps to no bundle target; add --map {group}=<target>")
                    continue
                new_list.append({**member, "model_name": dep.get("model_name"),
                                 "model_info": {**(member.get("model_info") or {}), "prefill_target": target}})
        notes.append(f"{dep.get('model_name')!r}: semantic auto_router replaced by prefill routing over {groups}")
    out = {k: v for k, v in config.items() if k not in ("model_list", "router_settings", "litellm_settings")}
    out["model_list"] = new_list
    out["router_settings"] = _with_prefill_group(dict(config.get("router_settings") or {}), migrated, bundle,
                                                 {str(d.get("model_name")) for d in new_list}, notes)
    ls = dict(config.get("litellm_settings") or {})
    cbs = ls.get("callbacks") or []
    cbs = [cbs] if isinstance(cbs, str) else list(cbs)
    hook = "litellm_prefill_router.proxy_hook.proxy_handler_instance"
    ls["callbacks"] = cbs + ([hook] if hook not in cbs else [])
    out["litellm_settings"] = ls
    return out, notes
