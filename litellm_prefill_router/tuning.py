"""``prefill-router tune``: the policy setting that fits a budget, measured on the traffic a router already served.

Each logged decision holds P(correct) and the estimated cost of every candidate target for that call. Those are all a
policy looks at, so every tolerance, lambda and value_usd can be applied to the logged calls again without the bundle or
the messages: for each setting, the estimated cost per 1,000 requests and the expected accuracy (the mean P(correct) of
the targets it would choose - the bundle's own estimate, no labels needed) on *this* traffic, with its own prompt
lengths, price list and candidates. A call's logged limits (``max_cost_usd`` / ``min_p_correct``) are kept. Pinned
calls and fallbacks (no prediction) are left out: no policy chose them.

The setting picked: the most expected accuracy within ``budget_usd_per_1k`` (or within ``savings`` of always sending
each call to its dearest candidate), or the cheapest reaching ``min_expected_accuracy``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .errors import PrefillRouterError
from .policy import Constraints, RoutingPolicy, choose_batch, constrained_choice
from .records import answered_by, feedback_score

TOLERANCES = tuple(round(x, 3) for x in np.linspace(0.0, 1.0, 101))
LAMBDAS = tuple(round(x, 3) for x in np.concatenate([np.linspace(0.0, 1.0, 41), np.linspace(1.25, 5.0, 16)]))
#: what a right answer is worth, USD: 10 settings a decade from 1e-7 to 10 (calls cost ~1e-6 to 1e-1 USD)
VALUES_USD = tuple(float(f"{x:.3g}") for x in np.geomspace(1e-7, 10.0, 81))


class TuneError(PrefillRouterError):
    """A decision log cannot be tuned on, or no setting meets the goal; the message names why and the fix."""


class _Calls(NamedTuple):
    targets: list[str]
    p: np.ndarray  # (calls, targets): P(correct); -inf where the call could not go (not a candidate, or its limits)
    cost: np.ndarray  # estimated cost; 0 where it could not go (no weight in lambda's cost scale)
    dearest: np.ndarray  # each call's dearest candidate's cost, limits or not
    served: np.ndarray  # column of the target that answered (-1: none of them)
    score: np.ndarray  # its feedback / judge score (NaN: none)
    p_served: np.ndarray  # the logged P(correct) of the target that answered (NaN: none)
    limited: int  # calls with their own limits
    skipped: Counter[str]


def _calls(records: Iterable[Mapping[str, Any]], scores: Mapping[str, float] | None) -> _Calls:
    """One row per policy-decided call (see :class:`_Calls`)."""
    rows: list[tuple[dict[str, float], dict[str, float], Any]] = []
    served_by: list[str | None] = []
    scored: list[float] = []
    skipped: Counter[str] = Counter()
    for rec in records:
        d = rec.get("decision") or {}
        reason = str(d.get("reason", ""))
        p, cost = d.get("p_correct") or {}, d.get("cost_usd") or {}
        if not d.get("target"):
            continue
        if reason.startswith(("pinned", "fallback")):
            skipped["pinned or fallback (no policy chose them)"] += 1
            continue
        cands = [t for t in (d.get("candidates") or p) if t in p and t in cost]
        if not cands:
            skipped["no P(correct) and cost estimates logged"] += 1
            continue
        rows.append(({t: float(p[t]) for t in cands}, {t: float(cost[t]) for t in cands}, d.get("constraints")))
        served_by.append(answered_by(d))
        score = feedback_score(rec, scores)
        scored.append(np.nan if score is None else float(score))
    targets = sorted({t for p, _, _ in rows for t in p})
    col = {t: i for i, t in enumerate(targets)}
    P = np.full((len(rows), len(targets)), -np.inf)
    C = np.zeros((len(rows), len(targets)))
    for i, (p, cost, _) in enumerate(rows):
        for t in p:
            P[i, col[t]], C[i, col[t]] = p[t], cost[t]
    dearest = np.array([max(cost.values()) for _, cost, _ in rows])
    limited = [(i, Constraints.from_record(lim)) for i, (_, _, lim) in enumerate(rows) if lim]
    # which targets a call's limits allow does not depend on the policy: mask the others (or all but the way out)
    for i, lim in limited:
        p, cost, _ = rows[i]
        way_out, reason, record = constrained_choice(RoutingPolicy(), list(p), p, cost, lim)
        excluded = set((record or {}).get("excluded", ())) if reason == "policy" else set(p) - {way_out}
        for t in excluded:  # cost 0 too: lambda scales costs by the dearest of the targets it chooses among
            P[i, col[t]], C[i, col[t]] = -np.inf, 0.0
    served = np.array([col.get(t, -1) if t else -1 for t in served_by], dtype=np.int64)
    p_served = np.array([rows[i][0].get(t, np.nan) if t else np.nan for i, t in enumerate(served_by)])
    return _Calls(targets, P, C, dearest, served, np.array(scored, dtype=np.float64), p_served, len(limited), skipped)


#: scored calls a recalibration needs (two parameters, fitted on the answering targets' P(correct) and scores)
MIN_RECALIBRATION_CALLS = 30


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def recalibrated(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(correct) recalibrated by (a, b) of :func:`fit_recalibration`."""
    return 0.5 * (1.0 + np.tanh(0.5 * (a * _logit(p) + b)))  # the sigmoid, without overflow


def fit_recalibration(p: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(a, b) of P'(correct) = sigmoid(a * logit(P) + b) that best predicts ``score`` (0..1, soft labels) from the
    logged ``p`` of the target that answered: a logistic fit by Newton's method with step halving (each step lowers
    the loss), from the identity; a weak ridge keeps it finite when the scores are all one value."""
    x = np.stack([_logit(p), np.ones_like(p)], 1)

    def loss(w: np.ndarray) -> float:
        z = x @ w  # cross-entropy with soft labels, written stably: log(1 + e^z) - y z
        return float(np.sum(np.logaddexp(0.0, z) - score * z) + 5e-4 * w @ w)

    w = np.array([1.0, 0.0])
    for _ in range(100):
        q = recalibrated(p, w[0], w[1])
        grad = x.T @ (q - score) + 1e-3 * w
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-3 * np.eye(2)
        step, before = np.linalg.solve(hess, grad), loss(w)
        while loss(w - step) > before and np.abs(step).max() > 1e-12:
            step = step / 2
        w = w - step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def sweep(records: Iterable[Mapping[str, Any]], scores: Mapping[str, float] | None = None,
          recalibrate: bool = False) -> dict[str, Any]:
    """Every tolerance, lambda and value_usd setting on the logged calls: cost per 1k requests, expected accuracy, route
    shares; with ``scores`` (feedback / judge scores by call id), the observed mean score of the calls each
    setting would leave where they were served (the only ones whose outcome under that setting is known).
    ``recalibrate``: expected accuracies use P(correct) recalibrated to the scores (:func:`fit_recalibration`);
    the routes stay those the router picks with the bundle's own P(correct)."""
    calls = _calls(records, scores)
    targets, P, C, skipped = calls.targets, calls.p, calls.cost, calls.skipped
    n = len(P)
    if not n:
        raise TuneError(f"no call of the decision log was decided by a policy with its P(correct) and costs logged "
                        f"({dict(skipped) or 'the log is empty'}); point --log at a prefill router's decision_log")
    rows = np.arange(n)
    finite = np.where(np.isfinite(P), P, -1e9)  # below any P(correct) minus any tolerance or cost penalty
    accuracy_of = P  # what a route's P(correct) is taken to be worth in expected accuracy
    recalibration = None
    if recalibrate:
        has = ~np.isnan(calls.score) & ~np.isnan(calls.p_served)
        if scores is None or has.sum() < MIN_RECALIBRATION_CALLS:
            raise TuneError(f"--recalibrate needs feedback / judge scores on at least {MIN_RECALIBRATION_CALLS} of "
                            f"the logged calls ({int(has.sum())} scored); pass --feedback SCORES.jsonl (from users' "
                            "scores or `prefill-router judge`)")
        a, b = fit_recalibration(calls.p_served[has], calls.score[has])
        accuracy_of = np.where(np.isfinite(P), recalibrated(np.where(np.isfinite(P), P, 0.5), a, b), P)
        served_after = recalibrated(calls.p_served[has], a, b)
        recalibration = {"a": a, "b": b, "scored_calls": int(has.sum()),
                         "mean_p_correct_served": float(calls.p_served[has].mean()),
                         "mean_recalibrated_served": float(served_after.mean()),
                         "mean_score": float(calls.score[has].mean())}
    points = []
    for kind, values in (("tolerance", TOLERANCES), ("lambda", LAMBDAS), ("value_usd", VALUES_USD)):
        for v in values:
            pick = choose_batch(finite, C, kind, float(v))
            shares = np.bincount(pick, minlength=len(targets))
            point = {"kind": kind, "value": float(v), "cost_per_1k_usd": float(C[rows, pick].mean() * 1000),
                     "expected_accuracy": float(accuracy_of[rows, pick].mean()),
                     "routes": {t: int(c) / n for t, c in zip(targets, shares) if c}}
            if scores is not None:
                kept = (pick == calls.served) & ~np.isnan(calls.score)
                point["observed_kept"] = {"calls": int(kept.sum()),
                                          "mean_score": float(calls.score[kept].mean()) if kept.any() else None}
            points.append(point)
    out: dict[str, Any] = {"calls": n, "skipped": dict(skipped), "calls_with_limits": calls.limited,
                           "targets": targets, "dearest_cost_per_1k_usd": float(calls.dearest.mean() * 1000),
                           "points": points, "recalibration": recalibration}
    if scores is not None:  # how the bundle's P(correct) compares with what users said of the answers
        has = ~np.isnan(calls.score) & ~np.isnan(calls.p_served)
        out["calibration"] = {"scored_calls": int(has.sum()),
                              "mean_p_correct_served": float(calls.p_served[has].mean()) if has.any() else None,
                              "mean_score": float(calls.score[has].mean()) if has.any() else None}
    return out


def frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings no other beats on both cost and expected accuracy, cheapest first."""
    best: list[dict[str, Any]] = []
    for pt in sorted(points, key=lambda q: (q["cost_per_1k_usd"], -q["expected_accuracy"])):
        if not best or pt["expected_accuracy"] > best[-1]["expected_accuracy"] + 1e-12:
            best.append(pt)
    return best


def tune(records: Iterable[Mapping[str, Any]], *, budget_usd_per_1k: float | None = None,
         savings: float | None = None, min_expected_accuracy: float | None = None,
         scores: Mapping[str, float] | None = None, model_group: str | None = None,
         recalibrate: bool = False) -> dict[str, Any]:
    """:func:`sweep`, its frontier, and the setting for the goal (exactly one of the three); ``model_group``: only the
    calls routed in that model group (a router's groups have their own prices and targets: tune each apart)."""
    records = list(records)
    groups = Counter(str((r.get("decision") or {}).get("model_group")) for r in records if r.get("decision"))
    if model_group is not None:
        if model_group not in groups:
            raise TuneError(f"no logged call was routed in model group {model_group!r}; the log has {dict(groups)}")
        records = [r for r in records if str((r.get("decision") or {}).get("model_group")) == model_group]
    goals = [g for g in (budget_usd_per_1k, savings, min_expected_accuracy) if g is not None]
    if len(goals) != 1:
        raise TuneError("give exactly one goal: --budget-usd-per-1k, --savings or --min-expected-accuracy")
    if savings is not None and not 0.0 <= savings < 1.0:
        raise TuneError(f"--savings is a fraction of the dearest candidates' cost in [0, 1), got {savings}")
    s = sweep(records, scores, recalibrate)
    front = frontier(s["points"])
    chosen, goal, best = pick_setting(front, s["dearest_cost_per_1k_usd"], budget_usd_per_1k=budget_usd_per_1k,
                                      savings=savings, min_expected_accuracy=min_expected_accuracy)
    if chosen is None:
        raise TuneError(f"no setting (tolerance, lambda or value_usd) meets {goal} on these {s['calls']} calls: {best}")
    return {**s, "goal": goal, "frontier": front, "chosen": chosen, "model_groups": dict(groups),
            "model_group": model_group}


def pick_setting(front: list[dict[str, Any]], dearest_cost_per_1k_usd: float, *, budget_usd_per_1k: float | None,
                 savings: float | None, min_expected_accuracy: float | None,
                 ) -> tuple[dict[str, Any] | None, str, str]:
    """(setting, goal, what is possible) for one goal on a :func:`frontier` (cheapest first): the cheapest setting
    reaching ``min_expected_accuracy``, else the most accurate within the budget (``budget_usd_per_1k``, or
    ``savings`` below always sending each call to its dearest candidate); None when no setting meets the goal."""
    if min_expected_accuracy is not None:
        ok = [q for q in front if q["expected_accuracy"] >= min_expected_accuracy]
        return (ok[0] if ok else None, f"expected accuracy >= {min_expected_accuracy:g}",
                f"the most any setting reaches is {front[-1]['expected_accuracy']:.4f}")
    cap = budget_usd_per_1k if budget_usd_per_1k is not None else \
        (1.0 - float(savings or 0.0)) * dearest_cost_per_1k_usd
    ok = [q for q in front if q["cost_per_1k_usd"] <= cap * (1 + 1e-9)]
    goal = f"cost <= {cap:.6g} USD per 1k requests" + (f" ({savings:.0%} saved)" if savings is not None else "")
    cheapest = f"the cheapest setting costs {front[0]['cost_per_1k_usd']:.6g} USD per 1k requests"
    return ok[-1] if ok else None, goal, cheapest
