"""The bundle as a litellm routing plugin: picking the model inside a complexity router's tier pool, and among a
model group's deployments, against litellm's own pick there.

    python benchmarks/routing_plugin.py --bundle bundles/llmrouter --data ../shared/datasets/llmrouter \
        [--out benchmarks/results]

A complexity router (``model: auto_router/complexity_router``) whose tiers are pools of several model groups - the
dataset's models split by price: SIMPLE and MEDIUM send to the pool of every model below the dearest price, COMPLEX
and REASONING to the pool of the dearest ones - serves the prompts the bundle was not fitted on (its validation rows
and the test split) through litellm.Router with mock deployments (one model group per model), once per variant:

- litellm's ``heuristic`` picks the tier and litellm picks the group in the pool (as without the plugin);
- the heuristic picks the tier, ``PrefillRoutingPlugin`` (``complexity_router_config.plugins``) the group in it, at
  the bundle's ``balanced`` and ``max-quality`` presets;
- ``PrefillTierClassifier`` picks the tier and the plugin the group in it (both ``balanced``);
- no complexity router: one model group of every model, litellm's simple-shuffle narrowed by the plugin
  (``Router(plugins=[...])``, ``balanced``) - and without the plugin, litellm's shuffle over all of them.

Accuracy is the dataset's score (>= 0.5 counts as right) of the model that answered; cost is the bundle's estimate for
that model (its price x (prompt tokens + the manifest's answer tokens)), the same for every variant. Paired bootstrap
(1,000 resamples) for each variant's accuracy minus the heuristic-with-litellm's-pick baseline. litellm's shuffle is
seeded. Writes routing_plugin.json, routing_plugin.md and routing_plugin.png (accuracy vs cost per 1,000 requests).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _serving import accuracy_cost_plot, serving_args
from complexity_router import bootstrap_diff, held_out

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TIER_NAMES = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
BASELINE = "heuristic tier, litellm's pick in the pool"


def pools(prices: dict[str, tuple[float, float]]) -> dict[str, list[str]]:
    """Tier -> its pool of model groups: every model below the dearest price for SIMPLE / MEDIUM, the dearest for
    COMPLEX / REASONING."""
    top = max(sum(p) for p in prices.values())
    cheap = sorted(t for t, p in prices.items() if sum(p) < top)
    dear = sorted(t for t, p in prices.items() if sum(p) == top)
    return {"SIMPLE": cheap, "MEDIUM": cheap, "COMPLEX": dear, "REASONING": dear}


async def serve(prompts: list[str], targets: list[str], tier_pools: dict[str, list[str]] | None,
                complexity_config: dict[str, Any], plugins: list[Any]) -> tuple[list[str], list[dict]]:
    """The model each prompt was answered by, and the prefill decisions. ``tier_pools`` None: no complexity router -
    one model group ("all") of every model, ``plugins`` on the Router."""
    import litellm

    random.seed(0)  # litellm's simple-shuffle
    if tier_pools is None:
        model_list = [{"model_name": "all", "litellm_params": {"model": f"openai/{t}", "api_key": "sk-mock",
                                                                "mock_response": t}} for t in targets]
        router, group = litellm.Router(model_list=model_list, plugins=plugins or None), "all"
    else:
        model_list = [{"model_name": t, "litellm_params": {"model": f"openai/{t}", "api_key": "sk-mock",
                                                            "mock_response": t}} for t in targets]
        model_list.append({"model_name": "smart", "litellm_params": {
            "model": "auto_router/complexity_router",
            "complexity_router_config": {"tiers": tier_pools, **complexity_config,
                                         **({"plugins": plugins} if plugins else {})}}})
        router, group = litellm.Router(model_list=model_list), "smart"
    served, decisions = [], []
    for p in prompts:
        resp = await router.acompletion(model=group, messages=[{"role": "user", "content": p}])
        served.append(str(resp.choices[0].message.content))
        if (d := resp._hidden_params.get("prefill_routing")) is not None:
            decisions.append(d)
    return served, decisions


def main() -> None:
    args = serving_args().parse_args()

    from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin
    from litellm_prefill_router.tier_classifier import PrefillTierClassifier

    prompts, scores, targets, prices, train_acc = held_out(args.data)
    tier_pools = pools(prices)
    col = {t: j for j, t in enumerate(targets)}
    right = (scores >= 0.5).astype(float)
    print(f"{len(prompts)} held-out prompts; pools: {tier_pools}")

    def plugin(**policy: Any) -> PrefillRoutingPlugin:
        return PrefillRoutingPlugin(args.bundle, decision_timeout_s=30, **policy)

    # the tier classifier's tiers stand for their pools' most accurate model on the training split
    best = {tier: max(pool, key=lambda t: train_acc[t]) for tier, pool in tier_pools.items()}
    classifier_tiers = {"SIMPLE": best["SIMPLE"], "COMPLEX": best["COMPLEX"]}
    variants: list[tuple[str, dict[str, list[str]] | None, Callable[[], dict], Callable[[], list]]] = [
        ("plugin balanced over one group of every model", None, dict, lambda: [plugin(preset="balanced")]),
        (BASELINE, tier_pools, dict, list),
        ("heuristic tier, plugin balanced in the pool", tier_pools, dict, lambda: [plugin(preset="balanced")]),
        ("heuristic tier, plugin max-quality in the pool", tier_pools, dict, lambda: [plugin(preset="max-quality")]),
        ("tier classifier balanced, plugin balanced in the pool", tier_pools,
         lambda: {"classifier_type": "custom", "classifier_plugin": PrefillTierClassifier(
             args.bundle, classifier_tiers, preset="balanced", decision_timeout_s=30)},
         lambda: [plugin(preset="balanced")]),
        ("litellm's shuffle over one group of every model", None, dict, list),
    ]
    served: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    latency: dict[str, list[float]] = {}
    everything: list[dict] = []
    for name, tiers, config, plugins in variants:
        t0 = time.perf_counter()
        served[name], decisions = asyncio.run(serve(prompts, targets, tiers, config(), plugins()))
        timings[name] = time.perf_counter() - t0
        latency[name] = [float(d["latency_ms"]) for d in decisions]
        everything = everything or decisions  # the first variant decides among every model: its cost estimates
        print(f"  {name}: {timings[name]:.1f} s")
    cost = np.array([[d["cost_usd"][t] for t in targets] for d in everything])  # (N, K) estimates

    def measured(models: list[str]) -> tuple[np.ndarray, np.ndarray]:
        j = np.array([col[m] for m in models])
        return right[np.arange(len(j)), j], cost[np.arange(len(j)), j]

    base, _ = measured(served[BASELINE])
    results: dict[str, dict] = {}
    for name, models in served.items():
        acc, spent = measured(models)
        results[name] = {"accuracy": float(acc.mean()), "cost_per_1k_usd": float(spent.mean() * 1000),
                         "accuracy_minus_baseline": bootstrap_diff(acc, base), "seconds": timings[name],
                         "models": {t: models.count(t) for t in targets if models.count(t)},
                         "decision_latency_ms": {"p50": statistics.median(latency[name]),
                                                 "p95": float(np.percentile(latency[name], 95))}
                         if latency[name] else None}
    singles = {t: {"accuracy": float(right[:, col[t]].mean()), "cost_per_1k_usd": float(cost[:, col[t]].mean() * 1000)}
               for t in targets}
    out = {"prompts": len(prompts), "pools": tier_pools, "classifier_tiers": classifier_tiers, "variants": results,
           "single_models": singles, "oracle_accuracy": float(right.max(axis=1).mean())}
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "routing_plugin.json").write_text(json.dumps(out, indent=1))

    lines = [f"# The bundle as a litellm routing plugin ({len(prompts)} held-out prompts)", "",
             "pools: SIMPLE/MEDIUM -> " + ", ".join(tier_pools["SIMPLE"]) + "; COMPLEX/REASONING -> "
             + ", ".join(tier_pools["COMPLEX"]), "",
             "| variant | accuracy | accuracy - baseline [95% CI] | cost / 1k requests (USD) | decision p50 / p95 ms "
             "| wall s |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        d, lo, hi = r["accuracy_minus_baseline"]
        lat = r["decision_latency_ms"]
        lines.append(f"| {name} | {r['accuracy']:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                     f"{r['cost_per_1k_usd']:.4f} | " + (f"{lat['p50']:.1f} / {lat['p95']:.1f}" if lat else "-")
                     + f" | {r['seconds']:.1f} |")
    lines += ["", f"oracle over every model: {out['oracle_accuracy']:.3f}; single models: "
              + ", ".join(f"{t} {r['accuracy']:.3f} at {r['cost_per_1k_usd']:.4f}" for t, r in singles.items())]
    (outdir / "routing_plugin.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    accuracy_cost_plot(outdir / "routing_plugin.png", "litellm routing plugin: the prefill bundle picks the model "
                       "group", results, singles, lambda name: "plugin" in name)


if __name__ == "__main__":
    main()
