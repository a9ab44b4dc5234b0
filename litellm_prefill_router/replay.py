"""``prefill-router replay``: what another bundle would have done with the traffic a router already served.

Reads a decision log (with its messages: ``decision_log_messages``, on by default) and decides every logged call
again with ``bundle`` - a retrained one, a new commit on the Hub - offline: no request is sent, nothing serving is
touched. Each call keeps what it had: its candidates and their cost estimates (the deployments' prices and the
call's tokens, as logged), its limits (``max_cost_usd``, ``min_p_correct``) and its policy (the same preset name,
read from the new bundle's recalibrated presets, or the same tolerance / lambda; ``policy`` overrides it). Pinned
calls (the caller's choice) are counted apart, calls logged without messages or cost estimates are skipped, each with
the reason. The summary: how many calls would
move and where (route shares before and after, the top moves), the estimated cost before and after, the mean
P(correct) of the new route and of the old one *under the new bundle*, and with feedback scores (joined by call id)
the mean score of the calls it keeps and of those it would move - the answers it would move away from should be the
worse ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .decider import NO_TEXT_REASON
from .errors import ConfigurationError, PrefillRouterError
from .novelty import NOVEL_ABOVE
from .policy import POLICY_KINDS, Constraints, RoutingPolicy, constrained_choice, resolve_policy
from .predictor import PrefillPredictor
from .progress import progress_bar
from .records import feedback_score


class ReplayError(PrefillRouterError):
    """A decision log cannot be replayed; the message names what is missing and the fix."""


def logged_policy(logged: Mapping[str, Any] | None, predictor: PrefillPredictor) -> RoutingPolicy:
    """The policy a logged decision used, for the replaying bundle: a preset by name (its recalibrated value), else the
    same kind and value (also for a preset the bundle lacks); the bundle's default when the log names none."""
    m = predictor.bundle.manifest
    logged = logged or {}
    preset = logged.get("preset")
    if preset and preset in m.presets:
        return resolve_policy(m.presets, preset=str(preset))
    if logged.get("kind") in POLICY_KINDS and isinstance(logged.get("value"), (int, float)):
        return RoutingPolicy(logged["kind"], float(logged["value"]))  # the same setting (or a preset it lacks)
    return resolve_policy(m.presets, default_preset=m.default_preset)


def replay(records: Iterable[Mapping[str, Any]], predictor: PrefillPredictor, *, policy: RoutingPolicy | None = None,
           scores: Mapping[str, float] | None = None, progress: bool = False, top: int = 10) -> dict[str, Any]:
    """Decide each logged call again with ``predictor``'s bundle (see the module docstring)."""
    targets = predictor.targets
    usable: list[tuple[Mapping[str, Any], Mapping[str, Any], list[str]]] = []
    skipped: Counter[str] = Counter()
    pinned = 0
    for rec in records:
        d = rec.get("decision") or {}
        if not d.get("target"):
            skipped["no decision"] += 1
            continue
        if not rec.get("messages"):
            skipped["no messages (decision_log_messages was off)"] += 1
            continue
        costs = d.get("cost_usd") or {}
        if str(d.get("reason", "")).startswith("pinned"):
            pinned += 1  # the caller's choice, not the bundle's: the same route whatever the bundle
            continue
        if str(d.get("reason", "")).startswith(NO_TEXT_REASON):
            skipped["no text to route on (any bundle falls back)"] += 1
            continue
        if not costs:
            skipped["no cost estimates logged (the old router fell back without a prediction)"] += 1
            continue
        logged_cands = d.get("candidates") or list(costs)
        cands = [t for t in targets if t in costs and t in logged_cands]
        if not cands:
            skipped["no candidate target of the replaying bundle has a logged cost"] += 1
            continue
        usable.append((rec, d, cands))
    if not usable:
        raise ReplayError(
            f"no call of the decision log can be replayed ({dict(skipped) or 'the log is empty'}); the router must "
            "log messages (routing_strategy_args.decision_log_messages: true, the default) and its targets must "
            f"overlap the bundle's ({targets})")
    bar = progress_bar(len(usable), "replaying", "call", progress)
    p_all, n_tokens = predictor.predict_many([rec["messages"] for rec, _, _ in usable], progress=bar.update)
    bar.close()
    # prompts unlike the reference: as the log says (the logging bundle), and for this bundle (after a retrain on
    # them, fewer should be)
    logged_novelty = [float(n) for _, d, _ in usable if isinstance(n := d.get("novelty"), (int, float))]
    novel = {"before": float(np.mean(np.array(logged_novelty) > NOVEL_ABOVE)) if logged_novelty else None,
             "after": float(np.mean(predictor.novelty.distances(p_all, n_tokens) > NOVEL_ABOVE))
             if predictor.novelty is not None else None}
    col = {t: i for i, t in enumerate(targets)}
    old_routes: Counter[str] = Counter()
    new_routes: Counter[str] = Counter()
    moves: Counter[tuple[str, str]] = Counter()
    old_cost = new_cost = 0.0
    p_new_route: list[float] = []
    p_old_route: list[float] = []
    kept_scores: list[float] = []
    moved_scores: list[float] = []
    kept = 0
    for (rec, d, cands), p in zip(usable, p_all):
        old = str(d["target"])
        costs = d["cost_usd"]
        pol = policy or logged_policy(d.get("policy"), predictor)
        # within the call's own limits (max_cost_usd, min_p_correct), as logged
        limits = Constraints.from_record(d.get("constraints"))
        new, _, _ = constrained_choice(pol, cands, {t: float(p[col[t]]) for t in cands},
                                       {t: float(costs[t]) for t in cands}, limits)
        old_routes[old] += 1
        new_routes[new] += 1
        new_cost += float(costs[new])
        if old in costs:
            old_cost += float(costs[old])
        p_new_route.append(float(p[col[new]]))
        if old in col:
            p_old_route.append(float(p[col[old]]))
        score = feedback_score(rec, scores)
        if new == old:
            kept += 1
            if score is not None:
                kept_scores.append(score)
        else:
            moves[(old, new)] += 1
            if score is not None:
                moved_scores.append(score)
    n = len(usable)
    names = sorted(set(old_routes) | set(new_routes), key=lambda t: -(old_routes[t] + new_routes[t]))
    return {
        "bundle": predictor.bundle.source, "bundle_version": predictor.bundle.version,
        "policy": policy.describe() if policy else "as logged",
        "calls": n, "pinned": pinned, "skipped": dict(skipped), "kept": kept, "moved": n - kept,
        "agreement": kept / n,
        "routes": {t: {"before": old_routes[t], "after": new_routes[t]} for t in names},
        "top_moves": [{"from": a, "to": b, "calls": c} for (a, b), c in moves.most_common(top)],
        "estimated_cost_before_usd": old_cost, "estimated_cost_after_usd": new_cost,
        "mean_p_correct_new_route": float(np.mean(p_new_route)),
        "mean_p_correct_old_route": float(np.mean(p_old_route)) if p_old_route else None,
        "novel_share": novel,
        "feedback": ({"kept": {"scored": len(kept_scores),
                               "mean_score": float(np.mean(kept_scores)) if kept_scores else None},
                      "moved": {"scored": len(moved_scores),
                                "mean_score": float(np.mean(moved_scores)) if moved_scores else None}}
                     if scores else None),
    }


def policy_from_args(preset: str | None, tolerance: float | None, lambda_: float | None,
                     predictor: PrefillPredictor, value_usd: float | None = None) -> RoutingPolicy | None:
    """An explicit replay policy (None: each call's logged one)."""
    if preset is None and tolerance is None and lambda_ is None and value_usd is None:
        return None
    try:
        return resolve_policy(predictor.bundle.manifest.presets, preset=preset, tolerance=tolerance, lambda_=lambda_,
                              value_usd=value_usd)
    except ConfigurationError as err:
        raise ReplayError(f"replay policy: {err}") from err
