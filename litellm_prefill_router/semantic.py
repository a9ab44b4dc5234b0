"""A drop-in for semantic routers (aurelio-labs semantic-router, LiteLLM ``auto_router/...``).

``PrefillSemanticRouter(bundle=...)("text")`` returns a :class:`RouteChoice` with ``.name`` (the chosen
target, or ``None`` when the router declines) and ``.similarity_score`` (the chosen target's
P(correct)), like ``SemanticRouter("text")``; ``await router.acall("text")`` is the async twin.

:func:`migrate_auto_router_config` rewrites a LiteLLM proxy config that uses an ``auto_router/``
semantic deployment into the equivalent prefill setup.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .autotune import Autotuner, AutotuneSettings
from .config import RequestOverrides, checked_cache_size
from .costs import Price, given_prices
from .decider import PrefillDecider
from .errors import ConfigurationError
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

    ``routes`` restricts the choice to some targets; ``min_score`` makes the router decline
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
                 min_score: float | None = None,
                 prices: Mapping[str, tuple[float, float]] | None = None,
                 reload_interval_s: float | None = None, prediction_cache_size: int = 1024,
                 decision_timeout_s: float | None = None, decision_log: str | None = None,
                 decision_log_messages: bool = True,
                 execution_providers: Sequence[ProviderSpec] | None = None,
                 max_cost_usd: float | None = None, min_p_correct: float | None = None,
                 autotune: AutotuneSettings | Mapping[str, Any] | None = None, shadow: bool = False,
                 shadow_route: str | None = None, rollout: float = 1.0) -> None:
        checked_cache_size(prediction_cache_size)
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

    def _choice(self, d: RoutingDecision, text: str, user: str | None) -> RouteChoice:
        score = d.p_correct.get(d.target)
        declined = d.reason != "policy" or (self.min_score is not None and (score is None or score < self.min_score))
        arm = rollout_arm(self.rollout, user_key(user))
        as_before = self.shadow or arm == "control"  # decided and logged, served as before the swap
        name = self.shadow_route if as_before else None if declined else d.target
        # the score of the route returned (as before: the shadow route's P(correct), none for the caller's default)
        similarity = (d.p_correct.get(name) if name else None) if as_before else score
        choice = RouteChoice(name=name, similarity_score=similarity, decision=d, shadow=as_before, arm=arm,
                             id=uuid.uuid4().hex if self.decision_log is not None else None)
        if self.decision_log is not None:
            self._log(choice, text, declined)
        return choice

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
        return overrides.model_copy(update={"candidates": kept})

    def __call__(self, text: str | None = None, vector: object = None, simulate_static: bool = False,
                 route_filter: Sequence[str] | None = None, *, overrides: RequestOverrides | None = None,
                 user: str | None = None) -> RouteChoice:
        """Route ``text`` (semantic-router's ``__call__``: ``route_filter`` restricts the routes considered;
        ``simulate_static`` is accepted and changes nothing - the routes are static; ``user``: the end user, who keeps
        one arm of a rollout)."""
        self._reloader.maybe_reload()
        overrides = self._narrowed(overrides, route_filter, vector)
        decider, prices = self._reloader.current
        return self._choice(decider.decide(text or "", prices, overrides, MODEL_GROUP), text or "", user)

    async def acall(self, text: str | None = None, vector: object = None, simulate_static: bool = False,
                    route_filter: Sequence[str] | None = None, *, overrides: RequestOverrides | None = None,
                    user: str | None = None) -> RouteChoice:
        """Async twin of :meth:`__call__`."""
        self._reloader.maybe_reload()
        overrides = self._narrowed(overrides, route_filter, vector)
        decider, prices = self._reloader.current
        return self._choice(await decider.adecide(text or "", prices, overrides, MODEL_GROUP), text or "", user)


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
    return str((dep.get("litellm_params") or {}).get("model") or "").startswith("auto_router/")


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
    model_list = list(config.get("model_list") or [])
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
                m_model = str((member.get("litellm_params") or {}).get("model") or "")
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
    migrated = list(dict.fromkeys(str(d.get("model_name")) for d in model_list if _is_auto_router(d)))
    out["router_settings"] = _with_prefill_group(dict(config.get("router_settings") or {}), migrated, bundle,
                                                 {str(d.get("model_name")) for d in new_list}, notes)
    ls = dict(config.get("litellm_settings") or {})
    cbs = ls.get("callbacks") or []
    cbs = [cbs] if isinstance(cbs, str) else list(cbs)
    hook = "litellm_prefill_router.proxy_hook.proxy_handler_instance"
    ls["callbacks"] = cbs + ([hook] if hook not in cbs else [])
    out["litellm_settings"] = ls
    return out, notes
