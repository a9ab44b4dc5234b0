"""The routing decision, free of any framework: prompt + priced candidates + overrides -> RoutingDecision.

Shared by the LiteLLM strategy, the LangChain runnable and the semantic-router facade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from .answer_lengths import AnswerLengths
from .autotune import Autotuner
from .config import RequestOverrides
from .costs import Price, estimate_cost, manifest_price
from .errors import ConfigurationError, InferenceError, RequestSettingsError
from .policy import Constraints, RoutingDecision, RoutingPolicy, constrained_choice, resolve_policy
from .predictor import Prediction, PrefillPredictor

logger = logging.getLogger("litellm_prefill_router")


def lowest_cap(*caps: int | None) -> int | None:
    """The tightest of several output-token limits (None: no limit)."""
    given = [c for c in caps if c is not None]
    return min(given) if given else None


def capped(expected: float, cap: int | None) -> float:
    """An expected answer length, at most ``cap`` (the request's own output-token limit; None: no limit)."""
    return expected if cap is None else min(expected, float(cap))


def cap_in(values: object, names: Sequence[str]) -> int | None:
    """The tightest output-token limit that ``values`` (a mapping of call arguments, or an object's attributes)
    sets under any of ``names``: positive integers only (None: no limit)."""
    get = values.get if isinstance(values, Mapping) else (lambda name: getattr(values, name, None))
    return lowest_cap(*(v for name in names if isinstance(v := get(name), int) and not isinstance(v, bool) and v > 0))


#: a decision's ``reason`` when the request has no text (an empty prompt, images only): the fallback target
NO_TEXT_REASON = "fallback: the request has no text to route on"


def retry_reason(failed_targets: Collection[str]) -> str:
    """A decision's ``reason`` when a retry routes away from the targets that already failed the request."""
    return f"retry: {', '.join(sorted(failed_targets))} failed this request"


def capacity_reason(full_targets: Collection[str]) -> str:
    """A decision's ``reason`` when litellm found every deployment of the targets chosen first at its rpm/tpm limit
    and the request went to the policy's pick among the others."""
    return f"at capacity: {', '.join(sorted(full_targets))} (every deployment at its rpm/tpm limit)"


class PrefillDecider:
    """Turns a prompt into a :class:`RoutingDecision` among the targets that have a price."""

    def __init__(
        self,
        predictor: PrefillPredictor,
        *,
        preset: str | None = None,
        tolerance: float | None = None,
        lambda_: float | None = None,
        value_usd: float | None = None,
        fallback_target: str | None = None,
        on_error: Literal["fallback", "raise"] = "fallback",
        timeout_s: float | None = None,
        max_cost_usd: float | None = None,
        min_p_correct: float | None = None,
        autotuner: Autotuner | None = None,
        answer_lengths: AnswerLengths | None = None,
    ) -> None:
        self.predictor = predictor
        # each target's answer length learned from its answers (kept by the caller across reloads); None: the bundle's
        self.answer_lengths = answer_lengths
        # tunes the router's policy on the calls it decides (kept by the caller across bundle reloads); None: off
        self.autotuner = autotuner
        # every request's limits unless it sets its own (a request's max_cost_usd can only lower this one)
        self.default_constraints = Constraints(max_cost_usd, min_p_correct)
        self.manifest = predictor.bundle.manifest
        self.targets = self.manifest.target_names
        self.bundle_lengths = {t.name: float(t.expected_output_tokens) for t in self.manifest.targets}
        self.default_policy = resolve_policy(self.manifest.presets, preset=preset, tolerance=tolerance,
                                             lambda_=lambda_, default_preset=self.manifest.default_preset,
                                             value_usd=value_usd)
        self.fallback_target = fallback_target or self.manifest.best_prior_target()
        if self.fallback_target not in self.targets:
            raise ConfigurationError(f"fallback_target {self.fallback_target!r} is not a target of bundle "
                                     f"{predictor.bundle.source}; targets: {self.targets}")
        self.on_error = on_error
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigurationError(f"decision timeout must be > 0 seconds (None: wait for the encoder), got "
                                     f"{timeout_s!r}")
        self.timeout_s = timeout_s  # a prediction not ready by then: the fallback target (or InferenceError)
        self.novelty = predictor.novelty  # built now (once per predictor), not on the first request

    def manifest_prices(self) -> dict[str, Price]:
        """Prices recorded in the manifest at training time (targets without one are left out)."""
        return {t.name: manifest_price(t) for t in self.manifest.targets
                if t.input_cost_per_token is not None and t.output_cost_per_token is not None}

    @staticmethod
    def sets_policy(overrides: RequestOverrides) -> bool:
        """Whether the request (or its proxy key or team) chose its own policy."""
        return any(v is not None for v in (overrides.preset, overrides.tolerance, overrides.lambda_,
                                           overrides.value_usd))

    def policy_for(self, overrides: RequestOverrides, model_group: str | None = None) -> RoutingPolicy:
        """The request's own policy, else the router's: the autotuned setting for ``model_group`` once there is one,
        else the configured one."""
        if not self.sets_policy(overrides):
            tuned = self.autotuner.policy(model_group) if self.autotuner is not None else None
            return tuned or self.default_policy
        try:
            return resolve_policy(self.manifest.presets, preset=overrides.preset, tolerance=overrides.tolerance,
                                  lambda_=overrides.lambda_, value_usd=overrides.value_usd)
        except ConfigurationError as err:  # e.g. a preset this bundle does not have: the request's error
            raise RequestSettingsError(f"this request's policy: {err}") from err

    def constraints_for(self, overrides: RequestOverrides) -> Constraints:
        """The request's limits: the lower of its ``max_cost_usd`` and the router's; its ``min_p_correct``, else the
        router's."""
        base = self.default_constraints
        caps = [c for c in (base.max_cost_usd, overrides.max_cost_usd) if c is not None]
        floor = overrides.min_p_correct if overrides.min_p_correct is not None else base.min_p_correct
        return Constraints(min(caps) if caps else None, floor)

    def candidates(self, prices: Mapping[str, Price], overrides: RequestOverrides, where: str) -> list[str]:
        cands = [t for t in self.targets if t in prices]
        if overrides.candidates is not None:
            unknown = sorted(set(overrides.candidates) - set(self.targets))
            if unknown:
                raise RequestSettingsError(f"requested candidates name unknown targets {unknown}; "
                                           f"targets: {self.targets}")
            cands = [t for t in cands if t in overrides.candidates]
        if not cands:  # narrowed to nothing by the request (its error), or nothing deployed (the router's)
            error = ConfigurationError if overrides.candidates is None else RequestSettingsError
            raise error(f"no candidate target is available in {where} "
                        f"(requested: {overrides.candidates}, available: {sorted(prices)})")
        return cands

    async def adecide(self, prompt: object, prices: Mapping[str, Price], overrides: RequestOverrides | None = None,
                      model_group: str | None = None, output_caps: Mapping[str, int] | None = None) -> RoutingDecision:
        """``output_caps``: per target, the most output tokens its model may produce (its own ``max_tokens``); the
        cost estimate never assumes a longer answer (nor one longer than ``overrides.max_output_tokens``)."""
        return await self._decide(prompt, prices, overrides or RequestOverrides(), model_group, output_caps,
                                  asynchronous=True)

    def decide(self, prompt: object, prices: Mapping[str, Price], overrides: RequestOverrides | None = None,
               model_group: str | None = None, output_caps: Mapping[str, int] | None = None) -> RoutingDecision:
        coro = self._decide(prompt, prices, overrides or RequestOverrides(), model_group, output_caps,
                            asynchronous=False)
        try:  # the synchronous path never awaits anything real: drive the coroutine by hand
            coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        coro.close()
        raise asyncio.InvalidStateError("synchronous decision unexpectedly awaited")

    async def _decide(self, prompt: object, prices: Mapping[str, Price], overrides: RequestOverrides,
                      model_group: str | None, output_caps: Mapping[str, int] | None,
                      asynchronous: bool) -> RoutingDecision:
        t0 = time.perf_counter()
        where = f"model group {model_group!r}" if model_group else "this router"
        policy = self.policy_for(overrides, model_group)
        candidates = self.candidates(prices, overrides, where)
        bundle = self.predictor.bundle

        def done(target: str, reason: str, p: dict[str, float], cost: dict[str, float], n_tok: int = 0,
                 truncated: bool = False, cached: bool = False, constraints: dict[str, object] | None = None,
                 novelty: float | None = None) -> RoutingDecision:
            return RoutingDecision(target=target, reason=reason, policy=policy, p_correct=p, cost_usd=cost,
                                   candidates=tuple(candidates), input_tokens=n_tok, truncated=truncated,
                                   latency_ms=(time.perf_counter() - t0) * 1000.0, model_group=model_group,
                                   cached=cached, bundle=bundle.source, bundle_version=bundle.version,
                                   constraints=constraints, novelty=novelty)

        if overrides.pin_model is not None:
            if overrides.pin_model in candidates:
                return done(overrides.pin_model, "pinned", {}, {})
            logger.warning("prefill router: pinned target %r is not available among %s; routing by policy",
                           overrides.pin_model, candidates)
        try:
            pred: Prediction = await self.predictor.apredict_one(prompt, self.timeout_s) if asynchronous \
                else self.predictor.predict_one(prompt, self.timeout_s)
        except TimeoutError as err:  # the encoder is overloaded (or stuck): the request is not held any longer
            if self.on_error == "raise":
                raise InferenceError(f"prefill routing timed out in {where}: {err}") from err
            target = self.fallback(candidates)
            self._warn_timed_out(str(err), target)
            return done(target, f"fallback: routing timed out ({err})", {}, {})
        except Exception as err:  # noqa: BLE001 - a request is never lost to a routing failure
            if self.on_error == "raise":
                raise InferenceError(f"prefill routing failed in {where}: {err}") from err
            target = self.fallback(candidates)
            logger.warning("prefill router: inference failed (%s); sending the request to fallback target %r",
                           err, target)
            return done(target, f"fallback: inference failed ({type(err).__name__}: {err})", {}, {})
        p_all = dict(zip(self.targets, (float(x) for x in pred.p_correct)))
        p = {t: p_all[t] for t in candidates}
        caps = output_caps or {}
        lengths = self.answer_lengths.lengths_for(model_group, self.bundle_lengths) \
            if self.answer_lengths is not None else self.bundle_lengths
        cost = {t: estimate_cost(prices[t], pred.input_tokens,
                                 capped(lengths[t], lowest_cap(overrides.max_output_tokens, caps.get(t))))
                for t in candidates}
        if not pred.has_text:
            return done(self.fallback(candidates), NO_TEXT_REASON, p, cost,
                        pred.input_tokens, cached=pred.cached)
        target, reason, limits = constrained_choice(policy, candidates, p, cost, self.constraints_for(overrides))
        novelty = self.novelty.score(pred.p_correct, pred.input_tokens) if self.novelty is not None else None
        decision = done(target, reason, p, cost, pred.input_tokens, pred.truncated, pred.cached, limits, novelty)
        if self.autotuner is not None and not self.sets_policy(overrides):
            self.autotuner.observe(decision)
        return decision

    def unpredicted(self, prices: Mapping[str, Price], overrides: RequestOverrides, model_group: str | None,
                    reason: str, latency_ms: float) -> RoutingDecision:
        """The decision for a request that got no prediction (``reason``: why; a ``fallback: ...``): the fallback
        target among its candidates, with the policy it would have been decided by."""
        where = f"model group {model_group!r}" if model_group else "this router"
        candidates = self.candidates(prices, overrides, where)
        bundle = self.predictor.bundle
        return RoutingDecision(target=self.fallback(candidates), reason=reason,
                               policy=self.policy_for(overrides, model_group), candidates=tuple(candidates),
                               latency_ms=latency_ms, model_group=model_group, bundle=bundle.source,
                               bundle_version=bundle.version)

    #: at most one "routing timed out" warning per this many seconds (a burst times out many requests at once)
    TIMEOUT_WARNING_EVERY_S = 60.0
    _timeouts_unreported = 0
    _last_timeout_warning = float("-inf")

    def _warn_timed_out(self, why: str, target: str) -> None:
        self._timeouts_unreported += 1
        now = time.monotonic()
        if now - self._last_timeout_warning < self.TIMEOUT_WARNING_EVERY_S:
            return
        logger.warning("prefill router: routing timed out (%s) for %d request(s) since the last warning; sent to "
                       "fallback target %r - the encoder is overloaded: add workers or CPU, or raise "
                       "decision_timeout_s", why, self._timeouts_unreported, target)
        self._timeouts_unreported, self._last_timeout_warning = 0, now

    def reroute(self, decision: RoutingDecision, failed_targets: Collection[str]) -> RoutingDecision | None:
        """``decision`` without the targets that failed the request: the policy's pick among the other candidates, on
        the same predictions (no new inference), or the fallback rule's where the decision had none. None when no
        candidate is left or the request pinned its target (a pin is kept, as LiteLLM keeps it)."""
        rest = [t for t in decision.candidates if t not in failed_targets]
        if not rest or decision.reason.startswith("pinned"):
            return None
        limits = decision.constraints
        if all(t in decision.p_correct and t in decision.cost_usd for t in rest) and \
                not decision.reason.startswith("fallback"):
            # the policy's pick among the others, within the request's limits (or their way out) again
            target, _, limits = constrained_choice(decision.policy, rest, decision.p_correct, decision.cost_usd,
                                                   Constraints.from_record(decision.constraints))
        else:  # a fallback decision (no text, inference failed): the fallback rule again
            target = self.fallback(rest)
        return replace(decision, target=target, candidates=tuple(rest), reason=retry_reason(failed_targets),
                       constraints=limits)

    def fallback(self, candidates: list[str]) -> str:
        if self.fallback_target in candidates:
            return self.fallback_target
        return max(candidates, key=lambda t: self.manifest.target(t).prior_accuracy)
