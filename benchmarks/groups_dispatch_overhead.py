"""What a prefill routing group costs the model groups it does not route, with the litellm installed in this
interpreter. On litellm 1.110+ the Router core takes one custom strategy per router, so a prefill ``routing_groups``
entry registers a dispatcher that every request goes through - also those of the other model groups, which it hands
to litellm's own strategy's pick; before 1.110 the group's strategy is litellm's own group selector and the other
groups are untouched. Interleaved per request: a plain Router with ``--strategy`` vs the same Router plus a prefill
group on another model group, both serving mock requests of a group the bundle does not route.

    python benchmarks/groups_dispatch_overhead.py --bundle bundles/llmrouter [--n 300] [--sync] [--out FILE]
    python benchmarks/groups_dispatch_overhead.py --plot FILE     # the runs in FILE per litellm release -> FILE.png

Prints a table and one JSON line (litellm and Python versions, n, p50 / p95 of each, the added p50 and the ratio)
and appends the JSON to --out if given.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import litellm  # noqa: E402
import numpy as np  # noqa: E402
from _serving import append_jsonl, per_release_plot  # noqa: E402
from routing_latency import model_list  # noqa: E402

from litellm_prefill_router import install  # noqa: E402
from litellm_prefill_router.bundle import load_bundle  # noqa: E402


async def measure(bundle: str, n: int, strategy: str, sync: bool = False) -> dict:
    install()
    deployments = model_list(load_bundle(bundle).manifest, "other")  # "auto": the bundle's group; "other": not
    group = {"group_name": "routed", "models": ["auto"], "routing_strategy": "prefill",
             "routing_strategy_args": {"bundle": bundle}}
    plain = litellm.Router(model_list=deployments, routing_strategy=strategy)
    grouped = litellm.Router(model_list=json.loads(json.dumps(deployments)), routing_strategy=strategy,
                             routing_groups=[group])

    async def call(router: litellm.Router, i: int) -> float:
        messages = [{"role": "user", "content": f"question {i}"}]
        t0 = time.perf_counter()
        if sync:  # litellm's sync path: called outside any event loop, as a sync application calls it
            await asyncio.to_thread(router.completion, model="other", messages=messages)
        else:
            await router.acompletion(model="other", messages=messages)
        return (time.perf_counter() - t0) * 1000

    for i in range(5):  # warm-up
        await call(plain, i)
        await call(grouped, i)
    plain_ms, grouped_ms = [], []
    for i in range(n):  # alternating which goes first
        first, second = (plain, grouped) if i % 2 == 0 else (grouped, plain)
        a, b = await call(first, i), await call(second, i)
        plain_ms.append(a if first is plain else b)
        grouped_ms.append(b if first is plain else a)
    added = [g - p for g, p in zip(grouped_ms, plain_ms)]
    bridge = {"sync_bridge": sync_bridge()} if sync else {}
    return {"litellm": importlib.metadata.version("litellm"), "python": sys.version.split()[0], "n": n,
            "strategy": strategy, "path": "sync" if sync else "async", **bridge,
            "plain_p50_ms": round(statistics.median(plain_ms), 2),
            "plain_p95_ms": round(float(np.percentile(plain_ms, 95)), 2),
            "with_prefill_group_p50_ms": round(statistics.median(grouped_ms), 2),
            "with_prefill_group_p95_ms": round(float(np.percentile(grouped_ms, 95)), 2),
            "added_p50_ms": round(statistics.median(added), 2),
            "ratio_p50": round(statistics.median(grouped_ms) / statistics.median(plain_ms), 3)}


def sync_bridge() -> str:
    """How the code under test runs async routing for a sync call (rows before session 28 have no such key: they
    ran each call in its own ``asyncio.run``)."""
    return "process loop" if importlib.util.find_spec("litellm_prefill_router.sync_bridge") else "asyncio.run per call"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--strategy", default="latency-based-routing",
                    help="the Router's own routing strategy (default: %(default)s)")
    ap.add_argument("--sync", action="store_true", help="time litellm's sync router.completion (default: acompletion)")
    ap.add_argument("--out", help="JSONL file to append the result to")
    ap.add_argument("--plot", help="plot the runs of this JSONL file (p50 with and without the prefill group, per "
                                   "litellm release) as a PNG beside it")
    a = ap.parse_args()
    if a.plot:
        plot(Path(a.plot))
        return
    row = asyncio.run(measure(a.bundle, a.n, a.strategy, a.sync))
    bridge = f" (sync bridge: {row['sync_bridge']})" if "sync_bridge" in row else ""
    print(f"litellm {row['litellm']}, {row['strategy']}, {row['n']} interleaved {row['path']} mock requests of a group "
          f"the bundle does not route{bridge}")
    print(f"{'router':<28}{'p50 ms':>8}{'p95 ms':>8}")
    print(f"{'plain':<28}{row['plain_p50_ms']:>8}{row['plain_p95_ms']:>8}")
    print(f"{'with a prefill group':<28}{row['with_prefill_group_p50_ms']:>8}{row['with_prefill_group_p95_ms']:>8}")
    print(f"added p50 {row['added_p50_ms']} ms (ratio of p50s {row['ratio_p50']})")
    print(json.dumps(row))
    append_jsonl(a.out, row)


def plot(path: Path) -> None:
    def draw(ax: Any, i: int, runs: list[dict]) -> None:
        for path, marker, shift in (("async", "o", 0.0), ("sync, asyncio.run per call", "^", 0.06),
                                    ("sync, process loop", "v", 0.12)):
            for offset, key, label, color in ((-0.15, "plain_p50_ms", "plain Router", "C0"),
                                              (0.15, "with_prefill_group_p50_ms", "with a prefill group", "C1")):
                ys = [r[key] for r in runs if run_path(r) == path]
                ax.scatter([i + offset + shift] * len(ys), ys, color=color, marker=marker,
                           label=f"{label} ({path})" if ys and path not in labelled else None)
            if any(run_path(r) == path for r in runs):
                labelled.add(path)

    def run_path(row: dict) -> str:
        if row.get("path", "async") == "async":
            return "async"
        return f"sync, {row.get('sync_bridge', 'asyncio.run per call')}"

    labelled: set[str] = set()

    per_release_plot(path, draw, "p50 per mock request (ms)",
                     "a model group the bundle does not route ({strategy})")

if __name__ == "__main__":
    main()
