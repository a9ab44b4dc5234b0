"""PrefillRouterRunnable: a RunnableSerializable that sends each input to the runnable of the chosen target.

Shaped like langchain-core's ``RouterRunnable``/``RunnableBranch``: one run for the router, whose metadata
holds the decision, and the chosen runnable's run as its child tagged ``route:<target>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.runnables import Runnable, RunnableSerializable
from langchain_core.runnables.config import (
    RunnableConfig,
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from litellm_prefill_router.answer_lengths import AnswerLengths
from litellm_prefill_router.autotune import Autotuner, AutotuneSettings
from litellm_prefill_router.config import (
    LAMBDA_DOC,
    TOLERANCE_DOC,
    VALUE_USD_DOC,
    CacheSize,
    DecisionTimeout,
    NonNegative,
    Positive,
    RequestOverrides,
    Share,
    parse_overrides,
)
from litellm_prefill_router.costs import Price
from litellm_prefill_router.decider import PrefillDecider, cap_in, lowest_cap
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.jsonl import append_log_record, checked_log_template
from litellm_prefill_router.metrics import observe_call, reload_observer
from litellm_prefill_router.policy import RoutingDecision
from litellm_prefill_router.predictor import shared_predictor
from litellm_prefill_router.records import abandoned_reason
from litellm_prefill_router.reloading import BundleReloader
from litellm_prefill_router.rollout import checked_serving, rollout_arm
from litellm_prefill_router.validation_messages import no_bool_for_a_number

from .calls import Route, call_row
from .inputs import CAP_FIELDS, accumulate, as_messages, chat_model, input_for, output_cap, prompt_from_input
from .reloaders import remember_reloader, reusable_reloader

logger = logging.getLogger("litellm_prefill_router.langchain")

class PrefillRouterRunnable(RunnableSerializable[Any, Any]):
    """Route each input to ``runnables[target]`` for the target the bundle picks (``bundle``: a directory or
    ``hf://owner/name[@revision][/path]`` on the Hugging Face Hub).

    Policy fields (``preset``, ``tolerance``, ``lambda_``, ``value_usd``) can be made configurable per call with
    ``configurable_fields``; per-call overrides also come from ``config["metadata"]["prefill"]``
    (``preset``, ``tolerance``, ``lambda``, ``value_usd``, ``pin_model``, ``candidates``, ``max_cost_usd``,
    ``min_p_correct``).
    """

    # extra="forbid": a misspelt setting (tolerence=0.2) fails instead of routing with the default policy
    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, extra="forbid")

    name: str | None = Field(default=None, description=(
        "the router's run name in traces and the model_group of its decision log and metrics (none: the class name)"))
    runnables: Mapping[str, Runnable[Any, Any]] = Field(description=(
        "bundle target -> the runnable (a chat model) that serves it, or a model string init_chat_model reads"))
    bundle: str = Field(description="bundle directory or hf://owner/name[@revision][/path]")
    preset: str | None = Field(default=None, description=(
        "policy: a preset of the bundle (none: its default); a tolerance, lambda or value_usd replaces it (e.g. one "
        "configurable per call)"))
    tolerance: Share | None = Field(default=None, description=TOLERANCE_DOC)
    lambda_: NonNegative | None = Field(default=None, alias="lambda", description=LAMBDA_DOC)
    value_usd: NonNegative | None = Field(default=None, description=VALUE_USD_DOC)
    max_cost_usd: Positive | None = Field(default=None, description=(
        "every call's cost ceiling (estimated USD); a call's metadata may lower it"))
    min_p_correct: Share | None = Field(default=None, description=(
        "every call's quality floor; a call's metadata may set its own"))
    autotune: AutotuneSettings | None = Field(default=None, description=(
        "tune the policy to a goal on the calls this router decides (e.g. {\"savings\": 0.5}); the policy above "
        "decides until the first tune"))
    learn_output_tokens: bool = Field(default=False, description=(
        "estimate each target's answer length from its latest answers (usage_metadata) instead of the bundle's"))
    prices: Mapping[str, tuple[float, float]] | None = Field(default=None, description=(
        "target -> (input, output) USD per token; none: the bundle's training prices"))
    fallback_target: str | None = Field(default=None, description=(
        "the target of calls with no prediction (no text, inference failed, timed out); none: the best prior one"))
    on_error: Literal["fallback", "raise"] = Field(default="fallback", description=(
        "a call whose prediction failed or timed out: sent to fallback_target, or failed with InferenceError"))
    decision_timeout_s: DecisionTimeout | None = Field(default=None, description=(
        "seconds a call waits for its prediction; later, it goes to the fallback target; none: wait"))
    allow_partial: bool = Field(default=False, description=(
        "serve only the bundle targets that have a runnable (else every target needs one)"))
    reload_interval_s: Positive | None = Field(default=None, description=(
        "seconds between checks whether the bundle changed; a changed one is loaded in the background and swapped "
        "in; none: never reload"))
    decision_log: str | None = Field(default=None, description=(
        "JSONL decision log in the LiteLLM router's format ({date}, {pid} as there): per call the decision, its "
        "outcome and the router run's run_id (the id feedback names)"))
    decision_log_messages: bool = Field(default=True, description="the input goes into the decision log")
    decision_log_responses: bool = Field(default=False, description=(
        "the answer's text goes into the decision log too, for a judge to score later"))
    metrics: bool = Field(default=False, description=(
        "Prometheus metrics, labelled with this runnable's name as model_group (the `metrics` extra)"))
    max_reroutes: int = Field(default=0, ge=0, description=(
        "when the chosen target's runnable raises one of reroute_on, try up to this many other targets, the "
        "policy's next pick first (no new inference; a stream only before its first chunk); 0: raise"))
    reroute_on: tuple[type[BaseException], ...] = Field(default=(Exception,), description=(
        "the errors that reroute a call (max_reroutes)"))
    shadow: bool = Field(default=False, description=(
        "decide and record every call but serve it with shadow_target's runnable (the model serving today)"))
    shadow_target: str | None = Field(default=None, description=(
        "the target that serves calls in shadow mode and a rollout's control arm"))
    rollout: Share = Field(default=1.0, description=(
        "canary: the share of calls served by the router's choice, by a hash of config metadata user_id (else at "
        "random); the rest as in shadow mode"))
    prediction_cache_size: CacheSize = Field(default=1024, description=(
        "predictions remembered per process for prompts seen again (exact token ids); 0: off"))
    execution_providers: list[str | tuple[str, dict[str, Any]]] | None = Field(default=None, min_length=1, description=(
        "onnxruntime execution providers of the encoder, as routing_strategy_args.execution_providers; none: the CPU"))

    _reloader: BundleReloader[PrefillDecider] = PrivateAttr()
    _autotuner: Autotuner | None = PrivateAttr(default=None)
    _answer_lengths: AnswerLengths | None = PrivateAttr(default=None)
    _runnable_caps: dict[str, int | None] = PrivateAttr()  # target -> its runnable's answer-length limit

    @field_validator("runnables", mode="before")
    @classmethod
    def _chat_models_from_strings(cls, v: Any) -> Any:
        """A target given as a model string (``"openai:gpt-4o-mini"``, ``"litellm:together_ai/..."``) is the chat
        model langchain's ``init_chat_model`` builds from it."""
        if not isinstance(v, Mapping) or not any(isinstance(r, str) for r in v.values()):
            return v
        return {target: chat_model(target, r) if isinstance(r, str) else r for target, r in v.items()}

    _no_bool_for_a_number = field_validator("*", mode="before")(no_bool_for_a_number)

    @field_validator("decision_log")
    @classmethod
    def _known_placeholders(cls, v: str | None) -> str | None:
        return checked_log_template(v)

    @model_validator(mode="after")
    def _check_against_bundle(self) -> PrefillRouterRunnable:
        key = (self.bundle, self.prediction_cache_size, str(self.execution_providers), self.reload_interval_s,
               self.metrics, self.preset, self.autotune, self.learn_output_tokens,
               self.tolerance, self.lambda_, self.value_usd, self.max_cost_usd, self.min_p_correct,
               self.fallback_target,
               self.on_error, self.decision_timeout_s,
               tuple(sorted(self.runnables)), self.allow_partial)
        reloader = reusable_reloader(key, self.bundle)
        if reloader is None:
            # one per reloader: routers sharing a bundle and settings share their window; kept across reloads
            self._autotuner = Autotuner(self.autotune) if self.autotune is not None else None
            self._answer_lengths = AnswerLengths() if self.learn_output_tokens else None
            reloader = BundleReloader(self.bundle, self._load_decider, lambda d: d.predictor, self.reload_interval_s,
                                      on_reload=reload_observer(self.bundle) if self.metrics else None)
            if self._answer_lengths is not None:  # a restarted router keeps the answer lengths it learned
                self._answer_lengths.seed_from_log(self.decision_log, [self.get_name()])
            if self._autotuner is not None:  # a restarted router starts from its latest logged calls' setting
                self._autotuner.seed_from_log(self.decision_log, reloader.current.predictor.bundle.version,
                                              [self.get_name()], reloader.current.default_policy)
            remember_reloader(key, reloader)
        self._reloader = reloader
        self._runnable_caps = {t: output_cap(r) for t, r in self.runnables.items()}  # fixed with the runnables
        checked_serving(self.shadow, self.rollout, "shadow_target", self.shadow_target)
        if (self.shadow or self.rollout < 1.0) and self.shadow_target not in self.runnables:
            raise ConfigurationError(f"shadow mode and a rollout serve calls by shadow_target, the runnable serving "
                                     f"today: got {self.shadow_target!r}; pass one of {sorted(self.runnables)}")
        return self

    @property
    def autotuner(self) -> Autotuner | None:
        """The tuner of ``autotune`` (its ``status()``: the setting and what it found); None without it."""
        return self._reloader.current.autotuner

    @property
    def _decider(self) -> PrefillDecider:
        """The decider of the bundle being served (a reload swaps it whole)."""
        self._reloader.maybe_reload()
        return self._reloader.current

    def _load_decider(self) -> PrefillDecider:
        """A decider for the bundle, checked against ``runnables`` (raises ConfigurationError naming the targets)."""
        # a tolerance / lambda / value_usd replaces the preset: a configurable field set per call overrides the
        # preset the runnable was built with
        explicit = any(v is not None for v in (self.tolerance, self.lambda_, self.value_usd))
        decider = PrefillDecider(shared_predictor(self.bundle, cache_size=self.prediction_cache_size,
                                                  execution_providers=self.execution_providers),
                                 preset=None if explicit else self.preset, tolerance=self.tolerance,
                                 lambda_=self.lambda_, value_usd=self.value_usd, fallback_target=self.fallback_target,
                                 on_error=self.on_error,
                                 timeout_s=self.decision_timeout_s, max_cost_usd=self.max_cost_usd,
                                 min_p_correct=self.min_p_correct, autotuner=self._autotuner,
                                 answer_lengths=self._answer_lengths)
        targets = decider.targets
        unknown = sorted(set(self.runnables) - set(targets))
        missing = [t for t in targets if t not in self.runnables]
        if unknown:
            raise ConfigurationError(f"runnables {unknown} are not targets of bundle {self.bundle}; "
                                     f"its targets are {targets}")
        if missing and not self.allow_partial:
            raise ConfigurationError(f"no runnable for bundle targets {missing} (bundle {self.bundle}); add them to "
                                     "`runnables` or pass allow_partial=True to route among the ones given")
        if not self.runnables:
            raise ConfigurationError("`runnables` is empty")
        if decider.fallback_target not in self.runnables:
            decider.fallback_target = decider.fallback(list(self.runnables))
        return decider

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    # -- chat-model conveniences, applied to every target ---------------------
    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> PrefillRouterRunnable:
        """A router whose every target is ``runnable.bind_tools(tools, **kwargs)`` - so an agent (``create_agent``,
        LangGraph's tool loop) can use the router as its model. The route still depends only on the input."""
        return self._map_targets("bind_tools", lambda r: r.bind_tools(tools, **kwargs))

    def with_structured_output(self, schema: Any, **kwargs: Any) -> PrefillRouterRunnable:
        """A router whose every target is ``runnable.with_structured_output(schema, **kwargs)``."""
        return self._map_targets("with_structured_output", lambda r: r.with_structured_output(schema, **kwargs))

    def _map_targets(self, method: str, fn: Callable[[Any], Runnable[Any, Any]]) -> PrefillRouterRunnable:
        mapped: dict[str, Runnable[Any, Any]] = {}
        for target, runnable in self.runnables.items():
            if not callable(getattr(runnable, method, None)):
                raise ConfigurationError(f"the runnable for target {target!r} ({type(runnable).__name__}) has no "
                                         f"{method}(); pass chat models that support it, or apply it per target")
            try:
                mapped[target] = fn(runnable)
            except NotImplementedError as err:
                raise ConfigurationError(f"the runnable for target {target!r} ({type(runnable).__name__}) does not "
                                         f"implement {method}(); pass a chat model that supports it") from err
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, "runnables": mapped})

    # -- decision -----------------------------------------------------------
    def _prices(self, decider: PrefillDecider) -> dict[str, Price]:
        base = decider.manifest_prices()
        if self.prices:
            base.update({t: Price(p[0], p[1], "runnable") for t, p in self.prices.items()})
        unpriced = [t for t in self.runnables if t not in base]
        if unpriced:
            raise ConfigurationError(f"targets {unpriced} have no price in the bundle; pass prices={{target: "
                                     "(input_usd_per_token, output_usd_per_token)}}")
        return {t: base[t] for t in self.runnables}

    @staticmethod
    def _overrides(config: RunnableConfig) -> RequestOverrides:
        # the instance's own preset/tolerance/lambda are the decider's default policy (configurable_fields
        # builds a new instance, so they are re-validated there); per-call metadata overrides them
        return parse_overrides(config.get("metadata") or {})

    def _output_caps(self, call_kwargs: Mapping[str, Any]) -> dict[str, int]:
        """Per target, the answer-length limit its runnable or this call sets (the cost estimate stays under it)."""
        call_cap = cap_in(call_kwargs, CAP_FIELDS)
        caps = {t: lowest_cap(call_cap, cap) for t, cap in self._runnable_caps.items()}
        return {t: c for t, c in caps.items() if c is not None}

    def decide(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> RoutingDecision:
        """The route for ``input``; ``kwargs`` are the call's model arguments (e.g. ``max_tokens``)."""
        config = ensure_config(config)
        decider = self._decider
        return decider.decide(prompt_from_input(input), self._prices(decider), self._overrides(config),
                              self.get_name(), self._output_caps(kwargs))

    async def adecide(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> RoutingDecision:
        config = ensure_config(config)
        decider = self._decider
        return await decider.adecide(prompt_from_input(input), self._prices(decider), self._overrides(config),
                                     self.get_name(), self._output_caps(kwargs))

    def _route(self, decision: RoutingDecision, config: RunnableConfig) -> Route:
        """Who serves the call: the decision's target, or - in shadow mode and a rollout's control arm - the
        shadow target, with the decision still recorded."""
        user = (config.get("metadata") or {}).get("user_id")
        arm = rollout_arm(self.rollout, user if isinstance(user, str) else None)
        if self.shadow or arm == "control":
            extra: dict[str, Any] = {"shadow": True, "served_target": self.shadow_target}
            return Route(decision, str(self.shadow_target), {**extra, "arm": arm} if arm else extra)
        return Route(decision, decision.target, {"arm": arm} if arm else {})

    @staticmethod
    def _metadata(route: Route) -> dict[str, Any]:
        return {"prefill_route": route.decision.target, "prefill_decision": route.record()}

    def _start_run(self, input: Any, config: RunnableConfig, route: Route) -> Any:
        """The router's own run, with the decision in its (non-inherited) metadata."""
        cm = get_callback_manager_for_config(config)
        cm.add_metadata(self._metadata(route), inherit=False)
        return cm.on_chain_start(None, input, name=config.get("run_name") or self.get_name(),
                                 run_id=config.pop("run_id", None))

    async def _astart_run(self, input: Any, config: RunnableConfig, route: Route) -> Any:
        cm = get_async_callback_manager_for_config(config)
        cm.add_metadata(self._metadata(route), inherit=False)
        return await cm.on_chain_start(None, input, name=config.get("run_name") or self.get_name(),
                                       run_id=config.pop("run_id", None))

    # -- decision log ---------------------------------------------------------
    def _log(self, route: Route, run: Any, input: Any, started: float, out: Any = None,
             error: BaseException | None = None, abandoned: str | None = None) -> None:
        """Append the call's line to ``decision_log`` (if set) and count it in the metrics (if on). A log that cannot
        be written is reported, never allowed to fail the call. ``abandoned``: the caller stopped reading the stream
        (``records.abandoned_reason``), ``out`` the part it read."""
        lengths = self._reloader.current.answer_lengths
        if lengths is not None and error is None and abandoned is None:
            lengths.observe(self.get_name(), route.served, (getattr(out, "usage_metadata", None) or {}).get(
                "output_tokens"))
        if self.decision_log is None and not self.metrics:
            return
        try:
            row = call_row(route, str(run.run_id), self._prices(self._reloader.current), started, out, error,
                           messages=as_messages(prompt_from_input(input))
                           if self.decision_log is not None and self.decision_log_messages else None,
                           response=self.decision_log is not None and self.decision_log_responses,
                           abandoned=abandoned)
        except Exception as err:  # noqa: BLE001 - the answer is the caller's; the log line is not worth losing it
            logger.error("prefill router: could not record the call (decision log %s, metrics %s): %s",
                         self.decision_log, self.metrics, err)
            return
        if self.metrics:
            observe_call(row)
        if self.decision_log is not None:
            append_log_record(self.decision_log, row)

    # -- Runnable API -------------------------------------------------------
    def _reroute(self, route: Route, failed: list[str], error: BaseException) -> Route | None:
        """The next route after ``route``'s target raised ``error`` (``failed`` gains it), or None: raise it. A call
        served as before (shadow mode, a rollout's control arm) fails as it did before."""
        if route.extra.get("shadow") or not isinstance(error, self.reroute_on) or len(failed) >= self.max_reroutes:
            return None
        failed.append(route.served)
        nxt = self._reloader.current.reroute(route.decision, failed)
        if nxt is None:
            return None
        logger.warning("prefill router: target %r failed (%s: %s); rerouting to %r", route.served,
                       type(error).__name__, error, nxt.target)
        return Route(nxt, nxt.target, route.extra)

    def _input_for(self, route: Route, input: Any) -> Any:
        return input_for(self.runnables[route.served], input)

    @staticmethod
    def _child(config: RunnableConfig, run: Any, route: Route) -> RunnableConfig:
        return patch_config(config, callbacks=run.get_child(tag=f"route:{route.served}"))

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        started = time.perf_counter()
        route = self._route(self.decide(input, config, **kwargs), config)
        run = self._start_run(input, config, route)
        failed: list[str] = []
        while True:
            try:
                out = self.runnables[route.served].invoke(self._input_for(route, input),
                                                          self._child(config, run, route), **kwargs)
                break
            except BaseException as e:
                self._log(route, run, input, started, error=e)
                if (nxt := self._reroute(route, failed, e)) is None:
                    run.on_chain_error(e)
                    raise
                route, started = nxt, time.perf_counter()
        run.on_chain_end(out)
        self._log(route, run, input, started, out)
        return out

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        started = time.perf_counter()
        route = self._route(await self.adecide(input, config, **kwargs), config)
        run = await self._astart_run(input, config, route)
        failed: list[str] = []
        while True:
            try:
                out = await self.runnables[route.served].ainvoke(self._input_for(route, input),
                                                                    self._child(config, run, route), **kwargs)
                break
            except BaseException as e:
                self._log(route, run, input, started, error=e)
                if (nxt := self._reroute(route, failed, e)) is None:
                    await run.on_chain_error(e)
                    raise
                route, started = nxt, time.perf_counter()
        await run.on_chain_end(out)
        self._log(route, run, input, started, out)
        return out

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        config = ensure_config(config)
        started = time.perf_counter()
        route = self._route(self.decide(input, config, **kwargs), config)
        run = self._start_run(input, config, route)
        final, ok = None, True
        failed: list[str] = []
        while True:
            streamed = 0
            try:
                for chunk in self.runnables[route.served].stream(self._input_for(route, input),
                                                                 self._child(config, run, route), **kwargs):
                    streamed += 1
                    final, ok = accumulate(final, chunk, ok)  # before the yield: a reader that stops there read it
                    yield chunk
                break
            except GeneratorExit as e:  # the caller stopped reading: an abandoned call, not a failure
                self._log(route, run, input, started, final, abandoned=abandoned_reason(streamed))
                run.on_chain_error(e)
                raise
            except BaseException as e:
                self._log(route, run, input, started, error=e)
                if streamed or (nxt := self._reroute(route, failed, e)) is None:
                    run.on_chain_error(e)
                    raise
                route, started = nxt, time.perf_counter()
        run.on_chain_end(final)
        self._log(route, run, input, started, final)

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        config = ensure_config(config)
        started = time.perf_counter()
        route = self._route(await self.adecide(input, config, **kwargs), config)
        run = await self._astart_run(input, config, route)
        final, ok = None, True
        failed: list[str] = []
        while True:
            streamed = 0
            try:
                async for chunk in self.runnables[route.served].astream(self._input_for(route, input),
                                                                        self._child(config, run, route), **kwargs):
                    streamed += 1
                    final, ok = accumulate(final, chunk, ok)  # before the yield: a reader that stops there read it
                    yield chunk
                break
            except (GeneratorExit, asyncio.CancelledError) as e:  # the caller stopped reading (or was cancelled)
                self._log(route, run, input, started, final, abandoned=abandoned_reason(streamed))
                await run.on_chain_error(e)
                raise
            except BaseException as e:
                self._log(route, run, input, started, error=e)
                if streamed or (nxt := self._reroute(route, failed, e)) is None:
                    await run.on_chain_error(e)
                    raise
                route, started = nxt, time.perf_counter()
        await run.on_chain_end(final)
        self._log(route, run, input, started, final)
