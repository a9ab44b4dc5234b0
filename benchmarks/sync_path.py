"""What prefill routing adds to litellm's sync path (``router.completion`` from a thread without an event loop, as a
sync application calls it) next to what it adds to the async path (``router.acompletion``), with the litellm
installed in this interpreter. Interleaved per request: a plain simple-shuffle Router and a prefill Router on the same
mock deployments, each called both ways; every prompt is new (no prediction-cache hits). With ``--concurrency C``
each round sends C requests at once per router and path (C sync callers on C threads, C async tasks) and times the
round: sync callers of every thread share one bridge loop, so this shows whether they wait on each other.

    python benchmarks/sync_path.py --bundle bundles/llmrouter [--n 300] [--concurrency 1] [--out FILE]
    python benchmarks/sync_path.py --plot FILE     # the runs in FILE per litellm release -> FILE.png

Prints a table and one JSON line (litellm and Python versions, the sync bridge of the code under test, n, concurrency,
p50 / p95 of each router and path's rounds, the p50 prefill adds on each path, requests per second at the p50 round)
and appends the JSON to --out if given.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib.metadata
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
from groups_dispatch_overhead import sync_bridge  # noqa: E402
from routing_latency import SEED_TEXT, model_list  # noqa: E402

from litellm_prefill_router import install  # noqa: E402
from litellm_prefill_router.bundle import load_bundle  # noqa: E402

PATHS = ("async", "sync")


async def measure(bundle: str, n: int, concurrency: int = 1) -> dict:
    install()
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(concurrency))
    deployments = model_list(load_bundle(bundle).manifest, "other")
    routers = {"plain": litellm.Router(model_list=deployments),
               "prefill": litellm.Router(model_list=json.loads(json.dumps(deployments)), routing_strategy="prefill",
                                         routing_strategy_args={"bundle": bundle})}

    async def call(router: litellm.Router, path: str, prompt: str) -> None:
        messages = [{"role": "user", "content": prompt}]
        if path == "sync":
            await asyncio.to_thread(router.completion, model="auto", messages=messages)
        else:
            await router.acompletion(model="auto", messages=messages)

    async def round_ms(router: litellm.Router, path: str, prompt: str) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(call(router, path, f"{k} {prompt}") for k in range(concurrency)))
        return (time.perf_counter() - t0) * 1000

    order = [(name, path) for name in routers for path in PATHS]
    ms: dict[tuple[str, str], list[float]] = {k: [] for k in order}
    for i in range(-5, n):  # 5 warm-up rounds, then n rounds in a rotating order
        for j in range(len(order)):
            name, path = order[(i + j) % len(order)]
            took = await round_ms(routers[name], path, f"Question {i}.{j}: {SEED_TEXT[: 80 + 7 * (i % 20)]}")
            if i >= 0:
                ms[(name, path)].append(took)
    row: dict[str, Any] = {"litellm": importlib.metadata.version("litellm"), "python": sys.version.split()[0],
                           "sync_bridge": sync_bridge(), "n": n, "concurrency": concurrency}
    for (name, path), xs in ms.items():
        row[f"{name}_{path}_p50_ms"] = round(statistics.median(xs), 2)
        row[f"{name}_{path}_p95_ms"] = round(float(np.percentile(xs, 95)), 2)
        row[f"{name}_{path}_rps"] = round(concurrency * 1000 / statistics.median(xs), 1)
    for path in PATHS:
        row[f"added_{path}_p50_ms"] = round(row[f"prefill_{path}_p50_ms"] - row[f"plain_{path}_p50_ms"], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=1, help="requests sent at once per round (default 1)")
    ap.add_argument("--out", help="JSONL file to append the result to")
    ap.add_argument("--plot", help="plot the runs of this JSONL file (p50 prefill adds per path, per litellm release) "
                                   "as a PNG beside it")
    a = ap.parse_args()
    if a.plot:
        plot(Path(a.plot))
        return
    row = asyncio.run(measure(a.bundle, a.n, a.concurrency))
    print(f"litellm {row['litellm']}, {row['n']} interleaved rounds of {row['concurrency']} mock request(s) at once "
          f"per router and path (sync bridge: {row['sync_bridge']})")
    print(f"{'router':<10}{'path':<7}{'p50 ms':>8}{'p95 ms':>8}{'req/s':>8}")
    for name in ("plain", "prefill"):
        for path in PATHS:
            print(f"{name:<10}{path:<7}{row[f'{name}_{path}_p50_ms']:>8}{row[f'{name}_{path}_p95_ms']:>8}"
                  f"{row[f'{name}_{path}_rps']:>8}")
    print(f"prefill adds p50 {row['added_async_p50_ms']} ms async, {row['added_sync_p50_ms']} ms sync")
    print(json.dumps(row))
    append_jsonl(a.out, row)


def plot(path: Path) -> None:
    """Per sync bridge and path: the p50 prefill adds (runs of single requests), or the prefill router's requests per
    second (runs of concurrent requests, ``--concurrency``)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    concurrent = any(r.get("concurrency", 1) > 1 for r in rows)
    if concurrent:
        key, ylabel = "prefill_{}_rps", "prefill router: requests / s (p50 round)"
        title = "{concurrency} mock requests at once: async tasks vs sync callers on threads"
    else:
        key, ylabel = "added_{}_p50_ms", "p50 prefill routing adds (ms)"
        title = "routed mock requests, sync vs async path"
    labelled: set[str] = set()

    def draw(ax: Any, i: int, runs: list[dict]) -> None:
        for k, (bridge, marker) in enumerate({"asyncio.run per call": "^", "process loop": "v"}.items()):
            for j, (path_, color) in enumerate(zip(PATHS, ("C0", "C1"))):
                ys = [r[key.format(path_)] for r in runs
                      if r["sync_bridge"] == bridge and (r.get("concurrency", 1) > 1) == concurrent]
                label = f"{path_} (sync bridge: {bridge})"
                ax.scatter([i - 0.2 + 0.25 * j + 0.1 * k] * len(ys), ys, color=color, marker=marker,
                           label=label if ys and label not in labelled else None)
                if ys:
                    labelled.add(label)

    per_release_plot(path, draw, ylabel, title)


if __name__ == "__main__":
    main()
