"""What the prefill router's litellm plugins share - the complexity router's tier classifier
(:mod:`.tier_classifier`) and the Router's routing plugin (:mod:`.routing_plugin`): a bundle (reloaded when it
changes), its policy and limits, the routes' prices, learned answer lengths, autotune, the decision log, metrics, and
how requests are served (decided and served, or shadow / a rollout's control arm). Each decides a request litellm
is routing and writes the decision into the request's metadata, where the decision log, the response's hidden params
and the proxy's headers read it (see :mod:`.shared_metadata`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from typing_extensions import Unpack

from .answer_lengths import AnswerLengths
from .autotune import Autotuner
from .costs import Price, given_prices, mean_price
from .decider import PrefillDecider
from .deployments import deployment_id, deployment_model, deployment_price, described_from
from .errors import ConfigurationError
from .hook_settings import HOOK_SETTINGS, HookSettings, validated_settings
from .jsonl import checked_log_template
from .metrics import reload_observer
from .predictor import shared_predictor
from .prompt import is_given
from .records import DECISION_LOG_KEY
from .reloading import BundleReloader
from .rollout import checked_serving
from .semantic import ServedRoutes, priced_routes
from .shared_metadata import current_request, store_decision

#: a prediction not ready by then is declined: below litellm's default ``classifier_plugin_timeout_ms`` (3000), past
#: which litellm cancels a complexity router's classifier
DEFAULT_DECISION_TIMEOUT_S = 2.5


class RequestHook(ServedRoutes):
    """A bundle deciding the requests of a litellm Router from inside it (see the module's docstring). ``routes``:
    the bundle targets it chooses among (None: all), named ``what`` in errors; ``serving``: the name and value of the
    setting that says what serves requests the hook only logs (``shadow_tier``, ...); ``settings``: see
    :class:`HookSettings`."""

    def __init__(self, bundle: str, routes: Sequence[str] | None, what: str, serving: tuple[str, object],
                 **settings: Unpack[HookSettings]) -> None:
        settings = cast(HookSettings, validated_settings(HOOK_SETTINGS, settings, type(self).__name__))
        preset, tolerance = settings.get("preset"), settings.get("tolerance")
        lambda_, value_usd = settings.get("lambda_"), settings.get("value_usd")
        prices, max_cost_usd, min_p_correct = settings.get("prices"), settings.get("max_cost_usd"), \
            settings.get("min_p_correct")
        reload_interval_s, prediction_cache_size = settings.get("reload_interval_s"), \
            settings.get("prediction_cache_size", 1024)
        decision_timeout_s, decision_log = settings.get("decision_timeout_s"), settings.get("decision_log")
        decision_log_messages = settings.get("decision_log_messages", True)
        decision_log_responses, metrics = settings.get("decision_log_responses", False), settings.get("metrics", False)
        learn_output_tokens = settings.get("learn_output_tokens", False)
        execution_providers, autotune = settings.get("execution_providers"), settings.get("autotune")
        shadow, rollout = settings.get("shadow", False), settings.get("rollout", 1.0)
        from .decision_logger import log_target  # litellm-facing: imported with the hook only
        from .router import install

        self.rollout = checked_serving(shadow, rollout, *serving)
        self.shadow = bool(shadow)
        try:
            log = checked_log_template(decision_log)
        except ValueError as err:
            raise ConfigurationError(str(err)) from err
        self.bundle, self._routes, self._what = bundle, list(routes) if routes is not None else None, what
        self._policy: dict[str, Any] = {"preset": preset, "tolerance": tolerance, "lambda_": lambda_,
                                        "value_usd": value_usd, "max_cost_usd": max_cost_usd,
                                        "min_p_correct": min_p_correct}
        self._predictor_args: dict[str, Any] = {
            "cache_size": prediction_cache_size,  # checked above
            "execution_providers": list(execution_providers) if execution_providers else None}
        self._timeout_s = DEFAULT_DECISION_TIMEOUT_S if decision_timeout_s is None else decision_timeout_s
        self._user_prices = given_prices(prices, "user")
        self._prices_seen: dict[tuple[object, ...], Price | None] = {}  # see _deployment_price
        # the targets' answer lengths, learned from their answers; outlives reloads
        self.answer_lengths = AnswerLengths() if learn_output_tokens else None
        # tunes the policy on the calls it decides (see litellm_prefill_router.autotune); kept across reloads
        self.autotuner = Autotuner(autotune) if autotune is not None else None
        self._reloader = BundleReloader(bundle, self._load, lambda served: served[0].predictor, reload_interval_s,
                                        on_reload=reload_observer(bundle) if metrics else None)
        install()  # the Router's request methods name the request being decided (see shared_metadata)
        self._log_target = log_target(log, messages=decision_log_messages, responses=decision_log_responses,
                                      metrics=metrics, answer_lengths=self.answer_lengths)
        if self.answer_lengths is not None:  # a restarted router keeps what it learned
            self.answer_lengths.seed_from_log(log, None)
        if self.autotuner is not None:  # a restarted router starts from its latest logged calls' setting
            self.autotuner.seed_from_log(log, self.decider.predictor.bundle.version, None,
                                         self.decider.default_policy)

    def _load(self) -> tuple[PrefillDecider, dict[str, Price]]:
        decider = PrefillDecider(shared_predictor(self.bundle, **self._predictor_args), timeout_s=self._timeout_s,
                                 autotuner=self.autotuner, answer_lengths=self.answer_lengths, **self._policy)
        routes = self._routes if self._routes is not None else decider.targets
        return decider, priced_routes(decider, self.bundle, routes, self._user_prices, self._what)

    def __deepcopy__(self, memo: dict[int, Any]) -> RequestHook:
        """Itself: litellm deep-copies its ``model_list``, config and all; a hook (a loaded bundle, its worker
        thread, autotune's window) is shared by the copies, not duplicated (nor could its sessions be copied)."""
        return self

    def _billed(self, router: Any, served_by: Mapping[str, list[dict]], prices: Mapping[str, Price]
                ) -> dict[str, Price]:
        """``prices`` (the served bundle's, with the hook's ``prices=``), each target not in ``prices=`` repriced
        as the request will be billed: the mean price of ``router``'s deployments that serve it (``served_by``:
        {target: deployments}), each priced as the prefill strategy prices a deployment (``litellm_params``,
        ``model_info``, litellm's cost map); a target none of whose deployments has a known price keeps its own."""
        out = dict(prices)
        for target, deps in served_by.items():
            if target not in out or target in self._user_prices:
                continue
            billed = mean_price([price for dep in deps if (price := self._deployment_price(router, dep)) is not None])
            if billed is not None:
                out[target] = billed
        return out

    #: deployments whose prices a hook remembers (an unpriced one costs a lookup in litellm's cost map, ~0.05 ms)
    PRICE_CACHE_SIZE = 4096

    def _deployment_price(self, router: Any, dep: dict) -> Price | None:
        """A deployment's price (None: unknown), remembered while what it is read from stays the same (a deployment
        updated in place is priced again), as the prefill strategy remembers its deployments'."""
        from .composition import deployment_model_info  # litellm-facing: imported with a request

        key = (id(router), deployment_id(dep), described_from(dep))
        if key in self._prices_seen:
            return self._prices_seen[key]
        price = deployment_price(dep, functools.partial(deployment_model_info, router, key[1], deployment_model(dep)))
        if len(self._prices_seen) >= self.PRICE_CACHE_SIZE:
            self._prices_seen.clear()
        self._prices_seen[key] = price
        return price

    def _store(self, md: dict, trace_id: object, record: dict, routed: object = None) -> None:
        """Leave ``record`` in the request's metadata ``md`` (and the decision log's file, if logging). ``routed``:
        the text the hook decided on, logged as the call's messages where litellm logs less of it (the Anthropic
        API's ``system``, a Google GenAI request's contents: see ``composition.plugin_prompt``)."""
        store_decision(md, record, trace_id)
        if self._log_target is not None:
            md[DECISION_LOG_KEY] = self._log_target
            request = current_request()
            if routed is not None and request is not None and (is_given(request.system) or
                                                                request.prompt is not None):
                from .decision_logger import keep_routed_messages  # litellm-facing: imported with the hook only

                keep_routed_messages(self._log_target, record, routed)
