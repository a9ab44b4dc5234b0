"""litellm's complexity router with its own classifiers against the prefill bundle as its classifier.

    python benchmarks/complexity_router.py --bundle bundles/llmrouter --data ../shared/datasets/llmrouter \
        [--out benchmarks/results]

A complexity router (``model: auto_router/complexity_router``) whose four tiers are four of the dataset's models - a
ladder from cheap to strong chosen on the training split: SIMPLE the cheapest model, MEDIUM the most accurate of the
next price, COMPLEX and REASONING the two most accurate of the dearest - serves the prompts the bundle was not fitted
on (its validation rows and the test split) through litellm.Router with mock deployments, once per classifier:

- litellm's ``heuristic`` (keyword / structure scoring, the default) and ``heuristic_v2`` (its bundled trained
  success predictor), both local;
- ``PrefillTierClassifier`` (``classifier_type: custom``) at the bundle's presets, and at the setting that
  ``prefill-router tune --budget-usd-per-1k`` picks, from the classifier's own decision log (no labels), for the
  heuristic's cost;
- the balanced classifier in shadow mode (the heuristic serves): what ``prefill-router stats`` estimates from its log
  for the classifier's tiers and for what was served, against the accuracy the labels measure for both.

Accuracy is the dataset's score (>= 0.5 counts as right) of the model the tier routes to; cost is the bundle's
estimate for that model (its price x (prompt tokens + the manifest's answer tokens)), the same for every classifier.
Paired bootstrap (1,000 resamples) for each classifier's accuracy minus the heuristic's. Writes
complexity_router.json, complexity_router.md and complexity_router.png (accuracy vs cost per 1,000 requests: every
classifier, every tier model alone, and the prefill classifier's lambda sweep).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _serving import accuracy_cost_plot, bundle_split, serving_args

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TIER_NAMES = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
SHADOW = "prefill balanced in shadow mode"


def held_out(data: str) -> tuple[list[str], np.ndarray, list[str], dict[str, tuple[float, float]], dict[str, float]]:
    """(prompts, their (N, K) scores, targets, prices, training-split accuracy per target)."""
    ds, fit, val = bundle_split(data)
    held = [int(i) for i in np.r_[val, ds.indices("test")]]
    scores = ds.scores()
    train_acc = {t: float((scores[fit, j] >= 0.5).mean()) for j, t in enumerate(ds.targets)}
    prices = {t: (float(ds.prices[t][0]), float(ds.prices[t][1])) for t in ds.targets}
    return [str(ds.rows[i].prompt) for i in held], scores[held], list(ds.targets), prices, train_acc


def ladder(prices: dict[str, tuple[float, float]], train_acc: dict[str, float]) -> dict[str, str]:
    """Tier -> model: the cheapest; the most accurate of the next price; the two most accurate of the dearest."""
    levels = sorted({sum(p) for p in prices.values()})
    at = {lv: sorted((t for t, p in prices.items() if sum(p) == lv), key=lambda t: -train_acc[t]) for lv in levels}
    cheapest = min(at[levels[0]], key=lambda t: -train_acc[t])
    dearest = at[levels[-1]]
    return dict(zip(TIER_NAMES, (cheapest, at[levels[1]][0], dearest[0], dearest[1])))


async def serve(prompts: list[str], tiers: dict[str, str], complexity_config: dict) -> tuple[list[str], list[dict]]:
    """The model each prompt was served by (through a complexity router), and the prefill decisions (if any)."""
    import litellm

    deployments = [{"model_name": f"tier-{tier}", "litellm_params": {
        "model": f"openai/{target}", "api_key": "sk-mock", "mock_response": target}} for tier, target in tiers.items()]
    smart = {"model_name": "smart", "litellm_params": {"model": "auto_router/complexity_router",
                                                       "complexity_router_config": {
                                                           "tiers": {t: f"tier-{t}" for t in tiers},
                                                           **complexity_config}}}
    router = litellm.Router(model_list=[*deployments, smart])
    served, decisions = [], []
    for p in prompts:
        resp = await router.acompletion(model="smart", messages=[{"role": "user", "content": p}])
        served.append(str(resp.choices[0].message.content))
        if (d := resp._hidden_params.get("prefill_routing")) is not None:
            decisions.append(d)
    return served, decisions


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 1000) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    return float(a.mean() - b.mean()), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def main() -> None:
    args = serving_args().parse_args()

    from litellm_prefill_router.policy import choose_batch
    from litellm_prefill_router.tier_classifier import PrefillTierClassifier
    from litellm_prefill_router.tuning import tune

    prompts, scores, targets, prices, train_acc = held_out(args.data)
    tiers = ladder(prices, train_acc)
    col = {t: j for j, t in enumerate(targets)}
    print(f"{len(prompts)} held-out prompts; tiers: {tiers}")

    # the prefill classifier at max-quality first: its decisions hold every tier's P(correct) and estimated cost
    results: dict[str, dict] = {}
    served: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log, shadow_log = Path(tmp) / "decisions.jsonl", Path(tmp) / "shadow.jsonl"

        def classifier(logged: Path | None = None, **policy: object) -> dict:
            return {"classifier_type": "custom", "classifier_plugin": PrefillTierClassifier(
                args.bundle, tiers, decision_log=str(logged) if logged else None, **policy)}

        variants: list[tuple[str, Callable[[], dict]]] = [
            ("litellm heuristic", dict), ("litellm heuristic_v2", lambda: {"classifier_type": "heuristic_v2"}),
            ("prefill max-quality", lambda: classifier(logged=log, preset="max-quality"))]
        variants += [(f"prefill {p}", lambda p=p: classifier(preset=p)) for p in ("balanced", "min-cost")]
        # shadow mode: the balanced classifier decides and logs, litellm's heuristic serves (as before the switch)
        variants += [(SHADOW, lambda: classifier(logged=shadow_log, preset="balanced", shadow=True))]
        decisions: list[dict] = []
        for name, config in variants:
            t0 = time.perf_counter()
            served[name], got = asyncio.run(serve(prompts, tiers, config()))
            timings[name] = time.perf_counter() - t0
            decisions = decisions or got
            print(f"  {name}: {timings[name]:.1f} s")
        from litellm_prefill_router import flush_logging
        asyncio.run(flush_logging())
        records = [json.loads(x) for x in log.read_text().splitlines()]
        shadow_records = [json.loads(x) for x in shadow_log.read_text().splitlines()]
    shadowed = served.pop(SHADOW)
    assert shadowed == served["litellm heuristic"], "shadow mode must serve every prompt as the heuristic does"
    cost = np.array([[d["cost_usd"][tiers[t]] for t in TIER_NAMES] for d in decisions])  # (N, 4) estimates
    p = np.array([[d["p_correct"][tiers[t]] for t in TIER_NAMES] for d in decisions])
    right = np.stack([scores[:, col[tiers[t]]] >= 0.5 for t in TIER_NAMES], axis=1).astype(float)
    tier_of = {target: j for j, target in enumerate(tiers[t] for t in TIER_NAMES)}

    heuristic_cost = float(np.mean([cost[i, tier_of[m]] for i, m in enumerate(served["litellm heuristic"])])) * 1000
    tuned = tune(records, budget_usd_per_1k=heuristic_cost)["chosen"]
    key = {"tolerance": "tolerance", "lambda": "lambda_", "value_usd": "value_usd"}[tuned["kind"]]
    name = f"prefill tuned to the heuristic's cost ({tuned['kind']}={tuned['value']:g})"
    t0 = time.perf_counter()
    served[name], _ = asyncio.run(serve(prompts, tiers, classifier(**{key: float(tuned["value"])})))
    timings[name] = time.perf_counter() - t0

    base = np.array([right[i, tier_of[m]] for i, m in enumerate(served["litellm heuristic"])])
    for name, models in served.items():
        j = np.array([tier_of[m] for m in models])
        acc = right[np.arange(len(j)), j]
        results[name] = {
            "accuracy": float(acc.mean()), "cost_per_1k_usd": float(cost[np.arange(len(j)), j].mean() * 1000),
            "tiers": {t: int((j == k).sum()) for k, t in enumerate(TIER_NAMES)},
            "accuracy_minus_heuristic": bootstrap_diff(acc, base), "seconds": timings[name]}
    singles = {f"{t} ({tiers[t]}) alone": {"accuracy": float(right[:, k].mean()),
                                           "cost_per_1k_usd": float(cost[:, k].mean() * 1000)}
               for k, t in enumerate(TIER_NAMES)}
    oracle = float(right.max(axis=1).mean())
    sweep = []
    for lam in np.r_[0.0, np.geomspace(1e-3, 10, 60)]:
        j = choose_batch(p, cost, "lambda", float(lam))
        sweep.append({"lambda": float(lam), "accuracy": float(right[np.arange(len(j)), j].mean()),
                      "cost_per_1k_usd": float(cost[np.arange(len(j)), j].mean() * 1000)})
    # what `prefill-router stats` tells a user in shadow mode (the bundle's estimates, no labels) against what the
    # dataset's labels measure for the same two policies on the same prompts
    from litellm_prefill_router.log_stats import summarize
    estimated = summarize(shadow_records)["shadow"]
    assert [r["decision"]["served_target"] for r in shadow_records] == shadowed
    shadow_check = {"calls": estimated["calls"], "served_as_heuristic": True,
                    "estimated_accuracy_routed": estimated["expected_accuracy"]["routed"],
                    "measured_accuracy_routed": results["prefill balanced"]["accuracy"],
                    "estimated_accuracy_served": estimated["expected_accuracy"]["served"],
                    "measured_accuracy_served": results["litellm heuristic"]["accuracy"],
                    "estimated_cost_per_1k_routed_usd": estimated["estimated_cost_routed_usd"] / len(prompts) * 1000,
                    "estimated_cost_per_1k_served_usd": estimated["estimated_cost_served_usd"] / len(prompts) * 1000}
    latency = [float(d["latency_ms"]) for d in decisions]
    out = {"prompts": len(prompts), "tiers": tiers, "classifiers": results, "single_tier_models": singles,
           "oracle_accuracy_over_tiers": oracle, "prefill_lambda_sweep": sweep, "shadow_mode": shadow_check,
           "prefill_decision_latency_ms": {"p50": statistics.median(latency),
                                           "p95": float(np.percentile(latency, 95))}}
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "complexity_router.json").write_text(json.dumps(out, indent=1))

    lines = [f"# Complexity router: litellm's classifiers vs the prefill bundle ({len(prompts)} held-out prompts)", "",
             "tiers: " + ", ".join(f"{t} -> {m}" for t, m in tiers.items()), "",
             "| classifier | accuracy | accuracy - heuristic [95% CI] | cost / 1k requests (USD) | tiers S/M/C/R | "
             "wall s |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        d, lo, hi = r["accuracy_minus_heuristic"]
        lines.append(f"| {name} | {r['accuracy']:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['cost_per_1k_usd']:.4f} | "
                     + "/".join(str(r["tiers"][t]) for t in TIER_NAMES) + f" | {r['seconds']:.1f} |")
    for name, r in singles.items():
        lines.append(f"| {name} | {r['accuracy']:.3f} | - | {r['cost_per_1k_usd']:.4f} | - | - |")
    latency_ms, sc = out["prefill_decision_latency_ms"], shadow_check
    lines += ["", f"oracle over the four tier models: {oracle:.3f}; prefill decision latency p50 "
              f"{latency_ms['p50']:.1f} ms, p95 {latency_ms['p95']:.1f} ms",
              "", f"shadow mode (balanced classifier logging, the heuristic serving; {sc['calls']} calls): "
              "`stats` estimates the classifier's tiers at accuracy "
              f"{sc['estimated_accuracy_routed']:.3f} (measured {sc['measured_accuracy_routed']:.3f})"
              f" and what was served at {sc['estimated_accuracy_served']:.3f} (measured "
              f"{sc['measured_accuracy_served']:.3f}); estimated cost / 1k "
              f"{sc['estimated_cost_per_1k_routed_usd']:.4f} vs "
              f"{sc['estimated_cost_per_1k_served_usd']:.4f} USD"]
    (outdir / "complexity_router.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    accuracy_cost_plot(outdir / "complexity_router.png", "litellm complexity router: tier classifiers", results,
                       singles, lambda name: name.startswith("prefill"), lambda name: name.split(" (")[0],
                       {"prefill classifier, lambda sweep": ([s["cost_per_1k_usd"] for s in sweep],
                                                             [s["accuracy"] for s in sweep])})


if __name__ == "__main__":
    main()
