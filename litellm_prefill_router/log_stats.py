"""``prefill-router stats``: what a router did in production, from its decision log.

Reads the JSONL that ``routing_strategy_args.decision_log`` writes (one line per call: the decision and its outcome)
and sums it up: calls, failures and streams abandoned by their reader (cost counted, not failures), where they went
and why, routing latency, what they cost and what they saved against each decision's baseline (the dearest candidate
target, priced at the call's own token usage). In shadow mode ``targets`` counts the routes the router would have
taken, ``shadow.served`` who answered, and the costs compare the decisions' own estimates for both. In a canary
rollout (``rollout`` below 1) ``arms`` compares the requests served by the router's choice ("router") with those
served as before ("control"): calls, failure rate, actual cost per call. With feedback or judge scores
(``--feedback``, joined by call id) ``feedback`` gives the mean score per target that answered, and ``arms`` per
arm. Lines of the semantic-router drop-in have no outcome (the caller calls the model): ``decided_only`` counts
them, and a call it declined counts under ``(declined)``. ``bundles`` splits the calls by the bundle version that
decided them (a reload, a retrained bundle, a new commit on the Hub: each version's routes, savings and scores).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PrefillRouterError
from .feedback import load_feedback
from .jsonl import EmptyWindowError, read_logs
from .novelty import NOVEL_ABOVE
from .records import answered_by, feedback_score, policy_label, reason_kind


class LogStatsError(PrefillRouterError):
    """The decision log cannot be summarised; the message names the file and the fix."""


def summarize(records: Iterable[Mapping[str, Any]], scores: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Totals over decision-log records (see the module docstring); costs and savings in USD. ``scores``: feedback
    or judge scores (0..1) by call id (see :func:`~.feedback.load_feedback`): their mean per served target and per
    rollout arm."""
    calls = failures = abandoned = 0
    per_target: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "failures": 0, "abandoned": 0,
                                                                 "cost_usd": 0.0,
                                                                 "p_chosen": [], "answer_tokens": [],
                                                                 "estimated_usd": 0.0, "actual_usd": 0.0})
    reasons: Counter[str] = Counter()
    presets: Counter[str] = Counter()
    latency: list[float] = []
    cost = saved = 0.0
    priced = 0
    shadow = 0
    served: Counter[str] = Counter()
    est_routed = est_served = 0.0  # shadow mode: the decisions' own estimates for their route and for who answered
    p_routed: list[float] = []  # ... and the bundle's P(correct) for both, over the calls that have both
    p_served: list[float] = []
    # a tier classifier's calls that litellm's complexity router served from another tier: cause -> served target
    moved: dict[str, Counter[str]] = defaultdict(Counter)
    arms: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "failures": 0, "cost_usd": 0.0, "costed": 0,
                                                           "scores": []})
    scored: dict[str, list[float]] = defaultdict(list)  # served target -> feedback scores of its answers
    versions: dict[str, dict[str, Any]] = {}  # bundle version -> its calls (a reload or a push starts a new one)
    decided_only = 0
    limited = narrowed = 0  # calls with limits (max_cost_usd / min_p_correct), and those whose limits excluded a target
    with_novelty = novel = 0  # calls whose decision says how novel the prompt is, and the novel ones
    autotuned: dict[str, list[dict[str, Any]]] = {}  # model group -> autotune's settings, in logged order
    for rec in records:
        decision, outcome = rec.get("decision") or {}, rec.get("outcome") or {}
        target = decision.get("target")
        if not target:
            continue
        calls += 1
        version = _version_of(versions, decision, rec)
        # the semantic-router drop-in decides and the caller serves: a declined call goes to the caller's default
        t = per_target["(declined)" if decision.get("declined") else str(target)]
        t["calls"] += 1
        kind = reason_kind(str(decision.get("reason", "")))
        reasons[kind] += 1
        # a retry repeats its request's limits and prediction: limits and novelty are counted once per request
        if kind != "retry" and isinstance(decision.get("constraints"), dict):
            limited += 1
            narrowed += bool(decision["constraints"].get("excluded"))
        if kind != "retry" and isinstance(decision.get("novelty"), (int, float)):
            with_novelty += 1
            novel += decision["novelty"] > NOVEL_ABOVE
        policy = decision.get("policy") or {}
        if policy.get("autotuned"):  # consecutive calls by one setting are one entry
            runs = autotuned.setdefault(str(decision.get("model_group")), [])
            label = policy_label(policy)
            if not runs or runs[-1]["policy"] != label:
                runs.append({"policy": label, "first_ts": rec.get("ts"), "calls": 0})
            runs[-1]["calls"] += 1
        presets[policy_label(policy)] += 1  # worded as the x-prefill-policy header and the metrics label say it
        if isinstance(decision.get("latency_ms"), (int, float)):
            latency.append(float(decision["latency_ms"]))
        p = (decision.get("p_correct") or {}).get(target)
        if isinstance(p, (int, float)):
            t["p_chosen"].append(float(p))
        if decision.get("shadow"):
            shadow += 1
            served[str(decision.get("served_target"))] += 1
            est = decision.get("cost_usd") or {}
            if target in est and decision.get("served_target") in est:
                est_routed += float(est[target])
                est_served += float(est[decision["served_target"]])
            chances = decision.get("p_correct") or {}
            if isinstance(chances.get(target), (int, float)) and \
                    isinstance(chances.get(decision.get("served_target")), (int, float)):
                p_routed.append(float(chances[target]))
                p_served.append(float(chances[decision["served_target"]]))
        elif decision.get("served_tier") and not decision.get("declined"):
            moved[str(decision.get("served_cause") or "unknown")][str(decision.get("served_target"))] += 1
        arm = arms[str(decision["arm"])] if decision.get("arm") else None
        if arm is not None:
            arm["calls"] += 1
        score = feedback_score(rec, scores)
        if score is not None:
            scored[str(answered_by(decision) or target)].append(score)
            if arm is not None:
                arm["scores"].append(score)
            if version is not None:
                version["scores"].append(score)
        if "outcome" in rec and rec["outcome"] is None:  # decided only (the semantic-router drop-in's lines)
            decided_only += 1
            continue
        if outcome.get("abandoned"):  # a stream its reader left: not a failure; what it cost so far is spent
            abandoned += 1
            t["abandoned"] += 1
            if isinstance(c := outcome.get("response_cost"), (int, float)):
                cost += float(c)
                t["cost_usd"] += float(c)
            continue
        if not outcome.get("success"):
            failures += 1
            t["failures"] += 1
            if arm is not None:
                arm["failures"] += 1
            if version is not None:
                version["failures"] += 1
            continue
        c, s = outcome.get("response_cost"), outcome.get("savings_usd")
        if isinstance(tokens := outcome.get("completion_tokens"), int) and tokens > 0:  # 0: usage not reported
            t["answer_tokens"].append(tokens)
        # the decision's cost estimate for the target that answered, against what the call cost
        est = (decision.get("cost_usd") or {}).get(answered_by(decision) or target)
        if isinstance(c, (int, float)) and c > 0 and isinstance(est, (int, float)):
            t["estimated_usd"] += float(est)
            t["actual_usd"] += float(c)
        if isinstance(c, (int, float)):
            cost += float(c)
            t["cost_usd"] += float(c)
            if arm is not None:
                arm["cost_usd"] += float(c)
                arm["costed"] += 1
            if version is not None:
                version["cost_usd"] += float(c)
            if isinstance(s, (int, float)):
                saved += float(s)
                priced += 1
                if version is not None:
                    version["savings_usd"] += float(s)
                    version["baseline_usd"] += float(c) + float(s)
    if not calls:
        raise LogStatsError("no routed calls in the log: is it a decision_log written by the prefill router?")
    targets = {name: {"calls": v["calls"], "share": v["calls"] / calls, "failures": v["failures"],
                      "abandoned": v["abandoned"], "cost_usd": v["cost_usd"],
                      "mean_p_correct": float(np.mean(v["p_chosen"])) if v["p_chosen"] else None,
                      "mean_answer_tokens": float(np.mean(v["answer_tokens"])) if v["answer_tokens"] else None,
                      "estimate_to_actual_cost": v["estimated_usd"] / v["actual_usd"] if v["actual_usd"] > 0 else None}
               for name, v in sorted(per_target.items(), key=lambda kv: -kv[1]["calls"])}
    estimated, actual = (sum(v[k] for v in per_target.values()) for k in ("estimated_usd", "actual_usd"))
    baseline = cost + saved
    return {"calls": calls, "failures": failures, "abandoned": abandoned, "decided_only": decided_only,
            "targets": targets,
            "reasons": dict(reasons.most_common()), "policies": dict(presets.most_common()),
            "limits": {"calls": limited, "excluded_a_target": narrowed},
            "autotune": autotuned or None,
            "novel": ({"calls": with_novelty, "novel": novel, "share": novel / with_novelty} if with_novelty else None),
            "routing_latency_ms": ({"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95)),
                                    "max": float(max(latency))} if latency else None),
            "cost_usd": cost, "calls_with_savings": priced, "savings_usd": saved,
            "estimate_to_actual_cost": estimated / actual if actual > 0 else None,
            "baseline_cost_usd": baseline, "savings_fraction": saved / baseline if baseline > 0 else None,
            "shadow": ({"calls": shadow, "served": dict(served.most_common()),
                        "estimated_cost_routed_usd": est_routed, "estimated_cost_served_usd": est_served,
                        # the bundle's expected accuracy of the routes and of what was served, on the same calls
                        "expected_accuracy": ({"calls": len(p_routed), "routed": float(np.mean(p_routed)),
                                               "served": float(np.mean(p_served))} if p_routed else None)}
                       if shadow else None),
            "moved_by_litellm": ({"calls": sum(sum(c.values()) for c in moved.values()),
                                  "by_cause": {cause: dict(c.most_common()) for cause, c in sorted(moved.items())}}
                                 if moved else None),
            "arms": ({name: {"calls": a["calls"], "failures": a["failures"], "failure_rate": a["failures"] / a["calls"],
                             "cost_usd": a["cost_usd"],
                             "cost_per_call_usd": a["cost_usd"] / a["costed"] if a["costed"] else None,
                             "scored": len(a["scores"]),
                             "mean_score": float(np.mean(a["scores"])) if a["scores"] else None}
                      for name, a in sorted(arms.items())} if arms else None),
            "bundles": ({v: {"bundle": b["bundle"], "calls": b["calls"], "failures": b["failures"],
                             "first_ts": b["first_ts"], "last_ts": b["last_ts"],
                             "targets": dict(b["targets"].most_common()), "cost_usd": b["cost_usd"],
                             "savings_fraction": b["savings_usd"] / b["baseline_usd"] if b["baseline_usd"] > 0
                             else None,
                             "mean_p_correct": float(np.mean(b["p_chosen"])) if b["p_chosen"] else None,
                             "scored": len(b["scores"]),
                             "mean_score": float(np.mean(b["scores"])) if b["scores"] else None}
                         for v, b in versions.items()} if versions else None),
            "feedback": ({"scored": sum(len(v) for v in scored.values()),
                          "mean_score": float(np.mean([x for v in scored.values() for x in v])),
                          "by_served_target": {t: {"scored": len(v), "mean_score": float(np.mean(v))}
                                               for t, v in sorted(scored.items())}}
                         if scored else None)}


def _version_of(versions: dict[str, dict[str, Any]], decision: Mapping[str, Any],
                rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The running totals of the bundle version that made ``decision`` (None: a line written before versions were
    recorded), counted with this call, in the order versions first appear."""
    key = decision.get("bundle_version")
    if not key:
        return None
    v = versions.setdefault(str(key), {"bundle": decision.get("bundle"), "calls": 0, "failures": 0,
                                       "first_ts": rec.get("ts"), "last_ts": rec.get("ts"), "targets": Counter(),
                                       "cost_usd": 0.0, "savings_usd": 0.0, "baseline_usd": 0.0, "p_chosen": [],
                                       "scores": []})
    v["calls"] += 1
    v["last_ts"] = rec.get("ts") or v["last_ts"]
    v["targets"][str(decision.get("target"))] += 1
    p = (decision.get("p_correct") or {}).get(decision.get("target"))
    if isinstance(p, (int, float)):
        v["p_chosen"].append(float(p))
    return v


def summarize_log(path: str | Path | Sequence[str | Path],
                  feedback: str | Path | Sequence[str | Path] | None = None, *, since: datetime | None = None,
                  until: datetime | None = None) -> dict[str, Any]:
    """:func:`summarize` over one decision log or several (the daily files of a ``{date}`` log, each proxy worker's
    ``{pid}`` file); ``log`` names them. ``feedback``: feedback / judge score files joined by call id. ``since`` /
    ``until``: only the calls logged in that window."""
    records = decision_log_records(path, LogStatsError, since=since, until=until)
    scores: dict[str, float] = {}
    for f in [feedback] if isinstance(feedback, (str, Path)) else feedback or []:
        scores.update(load_feedback(f))
    files = [str(path)] if isinstance(path, (str, Path)) else [str(x) for x in path]
    return {"log": files[0] if len(files) == 1 else files, **summarize(records, scores)}


def decision_log_records(path: str | Path | Sequence[str | Path], error: type[Exception], *,
                         since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """Every record of one decision log or several, within ``since`` / ``until``; a missing file, or a window with no
    call, is ``error`` saying so (and how to get a log)."""
    try:
        return [rec for _, _, rec in read_logs(path, "decision log", since=since, until=until)]
    except FileNotFoundError as err:
        raise error(f"{err}; set routing_strategy_args.decision_log to write one") from err
    except EmptyWindowError as err:
        raise error(str(err)) from err
