"""Online policy tuning (``autotune``): the router tunes its own policy to a goal on the calls it just decided.

``prefill-router tune`` finds, on a decision log, the setting (tolerance, lambda or value_usd) that meets a budget; a
router set with ``autotune: {savings: 0.5}`` (or ``budget_usd_per_1k`` / ``min_expected_accuracy``) does the same as
it serves: it keeps its latest ``window`` policy-decided calls per model group and, every ``every`` calls once it has
``min_calls``, runs the same sweep on them off the request path (a background thread) and routes the following calls
by the setting chosen. Each call's candidates' P(correct) and cost estimates do not depend on the policy, so the
setting does not feed back into what it is tuned on: it follows the traffic (its prompt lengths, its mix, the prices)
and nothing else.

Only the calls the router's own policy decides are tuned on and follow the tuned setting: a request (or a proxy key or
team) that sets its own preset / tolerance / lambda keeps it; pinned calls and fallbacks have no policy. Until the
first tune the configured policy (preset / tolerance / lambda, else the bundle's default) decides. A goal no setting
meets on the window gets the nearest setting (the cheapest for a budget, the most accurate for an accuracy goal),
with a warning. After a bundle reload the window starts again (P(correct) changed) and the last setting stays until
it is full enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigurationError
from .forking import reset_after_fork
from .jsonl import logs_of, records_from_end
from .policy import Constraints, RoutingDecision, RoutingPolicy, constrained_choice
from .tuning import TuneError, frontier, pick_setting, sweep
from .validation_messages import Settings, explain

logger = logging.getLogger("litellm_prefill_router")


class AutotuneSettings(Settings):
    """``autotune`` of ``routing_strategy_args`` / ``PrefillRouterRunnable``: exactly one goal, and how often."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_usd_per_1k: float | None = Field(default=None, gt=0.0, description=(
        "goal: estimated USD per 1,000 calls"))
    savings: float | None = Field(default=None, ge=0.0, lt=1.0, description=(
        "goal: this share below the cost of sending each call to its dearest candidate"))
    min_expected_accuracy: float | None = Field(default=None, gt=0.0, le=1.0, description=(
        "goal: the cheapest setting whose routes' mean P(correct) reaches this"))
    window: int = Field(default=2000, ge=20, le=1_000_000, description="the latest calls tuned on, per model group")
    every: int = Field(default=100, ge=1, le=1_000_000, description="calls between two tunes")
    min_calls: int = Field(default=200, ge=20, le=1_000_000, description="calls before the first tune")
    seed_from_log: bool = Field(default=True, description=(
        "at start, fill the window from the end of the decision log (the calls the same bundle version decided by "
        "the router's policy), so a restarted router routes by a tuned setting from its first call"))

    @model_validator(mode="after")
    def _one_goal(self) -> AutotuneSettings:
        goals = [g for g in (self.budget_usd_per_1k, self.savings, self.min_expected_accuracy) if g is not None]
        if len(goals) != 1:
            raise ValueError("autotune needs exactly one goal: budget_usd_per_1k (USD per 1,000 calls), savings "
                             "(e.g. 0.5: half the cost of sending each call to its dearest candidate) or "
                             "min_expected_accuracy (e.g. 0.7)")
        if self.min_calls > self.window:
            raise ValueError(f"autotune min_calls ({self.min_calls}) is more than window ({self.window}) holds: "
                             "raise window or lower min_calls")
        return self

    def tune_due(self, calls: int, tuned: bool, since_tune: int) -> bool:
        """Whether a window holding ``calls`` calls is tuned now: from ``min_calls`` on, first at once, then every
        ``every`` calls since the last tune (one rule for the router and for :func:`simulate`)."""
        return calls >= self.min_calls and (not tuned or since_tune >= self.every)

    def describe(self) -> str:
        goal = (f"budget_usd_per_1k={self.budget_usd_per_1k:g}" if self.budget_usd_per_1k is not None else
                f"savings={self.savings:g}" if self.savings is not None else
                f"min_expected_accuracy={self.min_expected_accuracy:g}")
        return f"{goal} (window {self.window}, every {self.every} calls, from {self.min_calls})"


#: what :func:`sweep` reads of a logged decision
_SWEPT = ("target", "reason", "p_correct", "cost_usd", "candidates", "constraints")


def _record(d: RoutingDecision | Mapping[str, Any]) -> Mapping[str, Any]:
    """What :func:`sweep` reads of a decision, as its log line has it (so `prefill-router tune` on the decision log
    picks the same setting); a record read from the log (:meth:`Autotuner.seed`) already is."""
    if not isinstance(d, RoutingDecision):
        return d
    return {"decision": {"target": d.target, "reason": d.reason, "p_correct": d.logged_p_correct(),
                         "cost_usd": d.cost_usd, "candidates": list(d.candidates), "constraints": d.constraints}}


def _decided_by_policy(reason: str) -> bool:
    """Whether a decision with this reason was the policy's choice, as :meth:`Autotuner.observe` sees them (retries and
    capacity fallbacks re-decide a call already counted; pinned calls and fallbacks have no policy)."""
    return reason == "policy" or reason.startswith(("over budget", "below floor"))


class _Group:
    """One model group's window, tuned setting and what the last tune found."""

    def __init__(self, window: int) -> None:
        self.calls: deque[RoutingDecision | Mapping[str, Any]] = deque(maxlen=window)
        self.since_tune = 0
        self.bundle_version: str | None = None
        self.policy: RoutingPolicy | None = None
        self.tuning = False
        self.last: dict[str, Any] | None = None


class Autotuner:
    """Keeps each model group's latest decisions and the setting tuned on them (see the module's docstring)."""

    def __init__(self, settings: AutotuneSettings | Mapping[str, Any]) -> None:
        try:
            self.settings = settings if isinstance(settings, AutotuneSettings) else \
                AutotuneSettings.model_validate(settings)
        except ValidationError as err:
            raise ConfigurationError(f"invalid autotune settings: {explain(err, AutotuneSettings)}") from err
        self._groups: dict[str | None, _Group] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (see :mod:`.forking`): the parent's tunes never finish here; the next due call tunes."""
        self._lock = threading.Lock()
        self._threads = []
        for group in self._groups.values():
            group.tuning = False

    def policy(self, model_group: str | None) -> RoutingPolicy | None:
        """The setting tuned for ``model_group``; None before its first tune."""
        group = self._groups.get(model_group)
        return group.policy if group is not None else None

    def observe(self, decision: RoutingDecision) -> None:
        """Add a call the router's policy decided; every ``every`` calls (from ``min_calls`` on) tune again in the
        background."""
        if not _decided_by_policy(decision.reason) or not decision.cost_usd:
            return
        s = self.settings
        with self._lock:
            group = self._groups.get(decision.model_group)
            if group is None:
                group = self._groups[decision.model_group] = _Group(s.window)
            if group.bundle_version != decision.bundle_version:  # another bundle: other P(correct), start again
                group.calls.clear()
                group.since_tune, group.bundle_version = 0, decision.bundle_version
            group.calls.append(decision)
            group.since_tune += 1
            due = not group.tuning and s.tune_due(len(group.calls), group.policy is not None, group.since_tune)
            if not due:
                return
            group.tuning, group.since_tune = True, 0
            calls = list(group.calls)
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=self._tune, args=(decision.model_group, group, calls),
                                      name="prefill-router-autotune", daemon=True)
            self._threads.append(thread)
        thread.start()

    def seed(self, records: Iterable[Mapping[str, Any]], bundle_version: str | None,
             model_groups: Collection[str] | None, default_policy: RoutingPolicy) -> dict[str, int]:
        """Fill each model group's window (``model_groups``; None: every group the log names) from logged calls, the
        newest first (:func:`~.jsonl.records_from_end`): those the same bundle version decided by the router's own
        policy (``default_policy`` or an autotuned setting), and tune each group that has ``min_calls`` of them now,
        before its first request. Returns the calls seeded per group."""
        want = self.settings.window
        found: dict[str, list[Mapping[str, Any]]] = {str(g): [] for g in model_groups or ()}
        configured = {"kind": default_policy.kind, "value": default_policy.value, "preset": default_policy.preset}
        for read, rec in enumerate(records):
            if read >= 20 * want * max(1, len(found)) or all(len(v) >= want for v in found.values()):
                break  # enough, or as far back as is worth reading
            d = rec.get("decision")
            if not isinstance(d, Mapping) or d.get("bundle_version") != bundle_version:
                continue
            calls = found.get(str(d.get("model_group"))) if model_groups is not None else \
                found.setdefault(str(d.get("model_group")), [])
            if calls is None or len(calls) >= want or not d.get("cost_usd") or \
                    not _decided_by_policy(str(d.get("reason", ""))):
                continue
            policy = d.get("policy")
            if not isinstance(policy, Mapping):
                continue
            if policy.get("autotuned") or {k: policy.get(k) for k in configured} == configured:
                calls.append({"decision": {k: d.get(k) for k in _SWEPT}})
        seeded = {name: len(calls) for name, calls in found.items() if calls}
        for name in seeded:
            with self._lock:
                group = self._groups.setdefault(name, _Group(want))
                group.bundle_version = bundle_version
                group.calls.extendleft(found[name])  # newest first: the oldest ends up leftmost
                due = len(group.calls) >= self.settings.min_calls and not group.tuning
                group.tuning = group.tuning or due
            if due:
                self._tune(name, group, list(group.calls))
        if seeded:
            logger.info("prefill router: autotune seeded from the decision log: %s logged calls per model group",
                        seeded)
        return seeded

    def seed_from_log(self, template: str | None, bundle_version: str | None, model_groups: Collection[str] | None,
                      default_policy: RoutingPolicy) -> dict[str, int]:
        """:meth:`seed` from the files a ``decision_log`` template has written (all days and processes, the latest
        first), unless ``seed_from_log`` is off; a file that cannot be read is skipped with a warning."""
        if not template or not self.settings.seed_from_log:
            return {}
        return self.seed(records_from_end(logs_of(template)), bundle_version, model_groups, default_policy)

    def wait(self, timeout_s: float = 30.0) -> None:
        """Wait for the tunes running now (tests, and a clean shutdown)."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def status(self) -> dict[str | None, dict[str, Any] | None]:
        """Per model group, what the last tune found (None before the first)."""
        return {name: group.last for name, group in self._groups.items()}

    def _tune(self, model_group: str | None, group: _Group, calls: list[RoutingDecision | Mapping[str, Any]]) -> None:
        try:
            policy, last = tuned_setting(self.settings, calls)
        except Exception as err:  # noqa: BLE001 - a failed tune keeps the setting routing now, never a request
            logger.warning("prefill router: autotune of model group %r failed (%s: %s); routing stays %s",
                           model_group, type(err).__name__, err,
                           group.policy.describe() if group.policy else "the configured policy")
            with self._lock:
                group.tuning = False
            return
        with self._lock:
            before, group.policy, group.last, group.tuning = group.policy, policy, last, False
        if policy != before:
            logger.info("prefill router: autotune of model group %r (%s): %s -> %s on the last %d calls: est. %.6g "
                        "USD per 1k calls, expected accuracy %.4f", model_group, last["goal"],
                        before.describe() if before else "the configured policy", policy.describe(), len(calls),
                        last["cost_per_1k_usd"], last["expected_accuracy"])


def tuned_setting(s: AutotuneSettings, calls: list[RoutingDecision | Mapping[str, Any]]
                  ) -> tuple[RoutingPolicy, dict[str, Any]]:
    """The setting for goal ``s`` on a window of ``calls`` (tune's sweep and choice), and what it found; a goal no
    setting meets gets the nearest one, with a warning."""
    swept = sweep([_record(d) for d in calls])
    front = frontier(swept["points"])
    chosen, goal, best = pick_setting(front, swept["dearest_cost_per_1k_usd"],
                                      budget_usd_per_1k=s.budget_usd_per_1k, savings=s.savings,
                                      min_expected_accuracy=s.min_expected_accuracy)
    met = chosen is not None
    if chosen is None:  # the nearest: the cheapest setting for a budget, the most accurate for an accuracy goal
        chosen = front[-1] if s.min_expected_accuracy is not None else front[0]
        logger.warning("prefill router: autotune: no setting (tolerance, lambda or value_usd) meets %s on the last "
                       "%d calls (%s); routing by the nearest, %s=%g", goal, swept["calls"], best, chosen["kind"],
                       chosen["value"])
    policy = RoutingPolicy(chosen["kind"], float(chosen["value"]), autotuned=True)
    return policy, {"policy": policy.describe(), "goal": goal, "goal_met": met, "calls": swept["calls"],
                    "cost_per_1k_usd": chosen["cost_per_1k_usd"],
                    "expected_accuracy": chosen["expected_accuracy"],
                    "dearest_cost_per_1k_usd": swept["dearest_cost_per_1k_usd"], "tuned_at": time.time()}


def simulate(records: Iterable[Mapping[str, Any]], settings: AutotuneSettings | Mapping[str, Any],
             model_group: str | None = None) -> dict[str, Any]:
    """What ``autotune`` with ``settings`` would have done on a decision log (``prefill-router tune
    --simulate-autotune``): the calls its policy decided (pinned calls, fallbacks, retries and capacity re-decisions
    left out), in logged order, each routed as logged until the first tune and then by the setting the latest tune
    chose - on the logged P(correct) and cost estimates, within each call's own limits - with the tunes at the calls a
    router would run them (synchronously here, where a router tunes beside its calls). Returns the setting changes,
    and the estimated cost, savings against each call's dearest candidate and expected accuracy (mean P(correct) of the
    route) overall, after the first tune and per tenth of the calls. Requests that set their own policy cannot be told
    apart in the log and are simulated as if they followed autotune."""
    try:
        s = settings if isinstance(settings, AutotuneSettings) else AutotuneSettings.model_validate(settings)
    except ValidationError as err:
        raise TuneError(f"invalid autotune settings to simulate: {explain(err, AutotuneSettings)}") from err
    calls = [rec for rec in records if isinstance(d := rec.get("decision"), Mapping) and d.get("target")
             and _decided_by_policy(str(d.get("reason", ""))) and d.get("cost_usd") and d.get("p_correct")
             and (model_group is None or d.get("model_group") == model_group)]
    if len(calls) < s.min_calls:
        raise TuneError(f"autotune needs min_calls={s.min_calls} policy-decided calls before its first tune; the log "
                        f"has {len(calls)}: lower --min-calls, or simulate on a longer log")
    window: deque[Mapping[str, Any]] = deque(maxlen=s.window)
    setting: RoutingPolicy | None = None
    since = 0
    changes: list[dict[str, Any]] = []
    cost, dearest, expected = np.zeros(len(calls)), np.zeros(len(calls)), np.zeros(len(calls))
    first = None
    for i, rec in enumerate(calls):
        d = rec["decision"]
        p, c = d["p_correct"], d["cost_usd"]
        cands = [t for t in (d.get("candidates") or p) if t in p and t in c]
        target = str(d["target"]) if setting is None else \
            constrained_choice(setting, cands, p, c, Constraints.from_record(d.get("constraints")))[0]
        cost[i], dearest[i], expected[i] = c[target], max(c[t] for t in cands), p[target]
        window.append({"decision": {k: d.get(k) for k in _SWEPT}})
        since += 1
        if s.tune_due(len(window), setting is not None, since):
            new, found = tuned_setting(s, list(window))
            since = 0
            if first is None:
                first = i + 1
            if new != setting:
                changes.append({"after_call": i + 1, "setting": new.describe(), "goal_met": found["goal_met"],
                                "window_cost_per_1k_usd": found["cost_per_1k_usd"],
                                "window_expected_accuracy": found["expected_accuracy"]})
                setting = new

    def summary(part: slice) -> dict[str, float]:
        return {"calls": int(len(cost[part])), "cost_per_1k_usd": float(cost[part].mean() * 1000),
                "savings": float(1 - cost[part].sum() / dearest[part].sum()) if dearest[part].sum() > 0 else 0.0,
                "expected_accuracy": float(expected[part].mean())}

    n = len(calls)
    tenths = [summary(slice(round(k * n / 10), round((k + 1) * n / 10))) for k in range(10) if n >= 10]
    return {"settings": s.model_dump(), "calls": n, "first_tune_after_call": first, "changes": changes,
            "overall": summary(slice(0, n)), "after_first_tune": summary(slice(first, n)) if first and first < n
            else None, "by_tenth": tenths}


__all__ = ["AutotuneSettings", "Autotuner", "simulate", "tuned_setting"]
