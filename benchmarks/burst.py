"""A burst beyond the encoder's throughput, with and without `decision_timeout_s`.

    python benchmarks/burst.py --bundle bundles/llmrouter [--burst 120] [--timeout 0.25] [--out benchmarks/results]

Per variant (same prompts, same process, variants alternated over --rounds): a burst of --burst concurrent
256-token requests through `PrefillRouter.acompletion` (mock deployments), and a steady load at --steady-rps for
--steady-s seconds (below the encoder's throughput: the timeout should then cost nothing). Reported: per-request
latency (p50 / p95 / max), share of requests routed by prediction (the rest: "fallback: routing timed out"), and
the time until the last request was answered. Writes burst.json and burst.png (latency CDFs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from routing_latency import model_list, prompt_of_tokens  # noqa: E402 - the same deployments and prompts


async def one(router, prompt: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": prompt}])
    return (time.perf_counter() - t0) * 1000, resp._hidden_params["prefill_routing"]["reason"]


async def burst(router, prompts: list[str]) -> tuple[list[tuple[float, str]], float]:
    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(router, p) for p in prompts))
    return list(out), (time.perf_counter() - t0) * 1000


async def steady(router, prompts: list[str], rps: float, seconds: float) -> list[tuple[float, str]]:
    tasks = []
    for i in range(int(rps * seconds)):
        tasks.append(asyncio.create_task(one(router, prompts[i % len(prompts)])))
        await asyncio.sleep(1.0 / rps)
    return list(await asyncio.gather(*tasks))


def summary(results: list[tuple[float, str]]) -> dict[str, float]:
    ms = np.array([r[0] for r in results])
    return {"n": len(results), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "predicted_share": sum(r[1] == "policy" for r in results) / len(results)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--burst", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=0.25)
    ap.add_argument("--steady-rps", type=float, default=8.0)
    ap.add_argument("--steady-s", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from litellm_prefill_router import PrefillRouter, load_bundle
    from litellm_prefill_router.predictor import shared_predictor

    manifest = load_bundle(args.bundle).manifest
    base = {"bundle": args.bundle, "prediction_cache_size": 0}  # every request runs the encoder
    variants = {"no timeout": PrefillRouter(model_list=model_list(manifest, "shuffle"), routing_strategy="prefill",
                                            routing_strategy_args=base),
                f"decision_timeout_s={args.timeout:g}": PrefillRouter(
                    model_list=model_list(manifest, "shuffle"), routing_strategy="prefill",
                    routing_strategy_args={**base, "decision_timeout_s": args.timeout})}
    tok = shared_predictor(args.bundle).prompts.tokenizer
    prompts = [prompt_of_tokens(tok, 256, 5000 + i) for i in range(args.burst)]
    for router in variants.values():  # warm-up: first requests build litellm's clients
        await burst(router, prompts[:4])
    bursts: dict[str, list[tuple[float, str]]] = {k: [] for k in variants}
    makespans: dict[str, list[float]] = {k: [] for k in variants}
    steadies: dict[str, list[tuple[float, str]]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # alternate the variants so machine noise hits both alike
        for name, router in variants.items():
            res, span = await burst(router, prompts)
            bursts[name] += res
            makespans[name].append(span)
            await asyncio.sleep(2.0)  # let late encoder calls of a timed-out burst drain
            steadies[name] += await steady(router, prompts, args.steady_rps, args.steady_s)
            await asyncio.sleep(1.0)
    rows = []
    for name in variants:
        rows.append({"variant": name, "burst": {**summary(bursts[name]),
                                                 "makespan_ms_median": float(np.median(makespans[name]))},
                     "steady": summary(steadies[name])})
    print(f"burst of {args.burst} concurrent 256-token requests (x{args.rounds}); steady {args.steady_rps:g} req/s "
          f"for {args.steady_s:g} s (x{args.rounds}); {os.cpu_count()} CPUs")
    print("variant | burst p50 ms | burst p95 ms | burst max ms | burst predicted | last answer ms (median) | "
          "steady p50 ms | steady p95 ms | steady predicted")
    for r in rows:
        b, s = r["burst"], r["steady"]
        print(f"{r['variant']} | {b['p50_ms']:.0f} | {b['p95_ms']:.0f} | {b['max_ms']:.0f} | "
              f"{b['predicted_share']:.0%} | {b['makespan_ms_median']:.0f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
              f"{s['predicted_share']:.0%}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "burst.json").write_text(json.dumps({"bundle": args.bundle, "burst": args.burst, "timeout_s": args.timeout,
                                                "steady_rps": args.steady_rps, "steady_s": args.steady_s,
                                                "rounds": args.rounds, "cpu_count": os.cpu_count(), "rows": rows},
                                               indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data, title in ((axes[0], bursts, f"burst of {args.burst}"),
                            (axes[1], steadies, f"steady {args.steady_rps:g} req/s")):
        for name, res in data.items():
            ms = np.sort([r[0] for r in res])
            ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=name)
        ax.set_xlabel("request latency, ms (mock deployments: routing + litellm)")
        ax.set_ylabel("share of requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "burst.png", dpi=110)
    print(f"wrote {out / 'burst.json'} and {out / 'burst.png'}")


if __name__ == "__main__":
    asyncio.run(main())
