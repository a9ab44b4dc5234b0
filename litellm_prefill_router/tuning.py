"""``prefill-router tune``: the policy setting that fits a budget, measured on the traffic a router already served.

Each logged decision holds P(correct) and the estimated cost of every candidate target for that call. Those are all a
policy looks at, so every tolerance and lambda can be applied to the logged calls again without the bundle or the
messages: for each setting, the estimated cost per 1,000 requests and the expected accuracy (the mean P(correct) of
the targets it would choose - the bundle's own estimate, no labels needed) on *this* traffic, with its own prompt
lengths, price list and candidates. A call's logged limits (``max_cost_usd`` / ``min_p_correct``) are kept. Pinned
calls and fallbacks (no prediction) are left out: no policy chose them.

The setting picked: the most expected accuracy within ``budget_usd_per_1k`` (or within ``savings`` of always sending
each call to its dearest candidate), or the cheapest reaching ``min_expected_accuracy``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import PrefillRouterError
from .policy import Constraints, RoutingPolicy, choose_batch, constrained_choice

TOLERANCES = tuple(round(x, 3) for x in np.linspace(0.0, 1.0, 101))
LAMBDAS = tuple(round(x, 3) for x in np.concatenate([np.linspace(0.0, 1.0, 41), np.linspace(1.25, 5.0, 16)]))


class TuneError(PrefillRouterError):
    """A decision log cannot be tuned on, or no setting meets the goal; the message names why and the fix."""


def _calls(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int,
                                                           Counter[str]]:
    """(targets, p, cost, dearest, calls with limits, skipped): one row per policy-decided call; a target the call
    could not go to (not a candidate, or excluded by the call's limits) has p = -inf and cost 0 (never chosen, and no
    weight in lambda's cost scale); ``dearest``: each call's dearest candidate's cost, limits or not."""
    rows: list[tuple[dict[str, float], dict[str, float], Any]] = []
    skipped: Counter[str] = Counter()
    for rec in records:
        d = rec.get("decision") or {}
        reason = str(d.get("reason", ""))
        p, cost = d.get("p_correct") or {}, d.get("cost_usd") or {}
        if not d.get("target"):
            continue
        if reason == "pinned" or reason.startswith("fallback"):
            skipped["pinned or fallback (no policy chose them)"] += 1
            continue
        cands = [t for t in (d.get("candidates") or p) if t in p and t in cost]
        if not cands:
            skipped["no P(correct) and cost estimates logged"] += 1
            continue
        rows.append(({t: float(p[t]) for t in cands}, {t: float(cost[t]) for t in cands}, d.get("constraints")))
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
    return targets, P, C, dearest, len(limited), skipped


def sweep(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every tolerance and lambda on the logged calls: cost per 1k requests, expected accuracy, route shares."""
    targets, P, C, dearest, limited, skipped = _calls(records)
    n = len(P)
    if not n:
        raise TuneError(f"no call of the decision log was decided by a policy with its P(correct) and costs logged "
                        f"({dict(skipped) or 'the log is empty'}); point --log at a prefill router's decision_log")
    rows = np.arange(n)
    finite = np.where(np.isfinite(P), P, -1e9)  # below any P(correct) minus any tolerance or cost penalty
    points = []
    for kind, values in (("tolerance", TOLERANCES), ("lambda", LAMBDAS)):
        for v in values:
            pick = choose_batch(finite, C, kind, float(v))
            shares = Counter(targets[j] for j in pick)
            points.append({"kind": kind, "value": float(v),
                           "cost_per_1k_usd": float(C[rows, pick].mean() * 1000),
                           "expected_accuracy": float(P[rows, pick].mean()),
                           "routes": {t: shares[t] / n for t in targets if shares[t]}})
    return {"calls": n, "skipped": dict(skipped), "calls_with_limits": limited, "targets": targets,
            "dearest_cost_per_1k_usd": float(dearest.mean() * 1000), "points": points}


def frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings no other beats on both cost and expected accuracy, cheapest first."""
    best: list[dict[str, Any]] = []
    for pt in sorted(points, key=lambda q: (q["cost_per_1k_usd"], -q["expected_accuracy"])):
        if not best or pt["expected_accuracy"] > best[-1]["expected_accuracy"] + 1e-12:
            best.append(pt)
    return best


def tune(records: Iterable[Mapping[str, Any]], *, budget_usd_per_1k: float | None = None,
         savings: float | None = None, min_expected_accuracy: float | None = None) -> dict[str, Any]:
    """:func:`sweep`, its frontier, and the setting for the goal (exactly one of the three)."""
    goals = [g for g in (budget_usd_per_1k, savings, min_expected_accuracy) if g is not None]
    if len(goals) != 1:
        raise TuneError("give exactly one goal: --budget-usd-per-1k, --savings or --min-expected-accuracy")
    if savings is not None and not 0.0 <= savings < 1.0:
        raise TuneError(f"--savings is a fraction of the dearest candidates' cost in [0, 1), got {savings}")
    s = sweep(records)
    front = frontier(s["points"])
    if min_expected_accuracy is not None:
        ok = [q for q in front if q["expected_accuracy"] >= min_expected_accuracy]
        goal = f"expected accuracy >= {min_expected_accuracy:g}"
        chosen = ok[0] if ok else None
        best = f"the most any setting reaches is {front[-1]['expected_accuracy']:.4f}"
    else:
        cap = budget_usd_per_1k if budget_usd_per_1k is not None else \
            (1.0 - float(savings or 0.0)) * s["dearest_cost_per_1k_usd"]
        ok = [q for q in front if q["cost_per_1k_usd"] <= cap * (1 + 1e-9)]
        goal = f"cost <= {cap:.6g} USD per 1k requests" + (f" ({savings:.0%} saved)" if savings is not None else "")
        chosen = ok[-1] if ok else None
        best = f"the cheapest setting costs {front[0]['cost_per_1k_usd']:.6g} USD per 1k requests"
    if chosen is None:
        raise TuneError(f"no tolerance or lambda meets {goal} on these {s['calls']} calls: {best}")
    return {**s, "goal": goal, "frontier": front, "chosen": chosen}
