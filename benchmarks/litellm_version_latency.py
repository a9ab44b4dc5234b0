"""Added routing latency (prefill router minus a plain simple-shuffle router, interleaved per request) with the
litellm installed in this interpreter - run it from two environments, alternating, to compare litellm releases.

    python benchmarks/litellm_version_latency.py --bundle bundles/llmrouter [--n 30] [--tokens 256] [--out FILE]
    python benchmarks/litellm_version_latency.py --plot FILE     # the runs in FILE per litellm release -> FILE.png

Prints one JSON line (litellm and Python versions, n, added p50/p95, shuffle p50) and appends it to --out if given.
Every timed request runs the encoder (prediction_cache_size 0); deployments are mock_response ones.
"""

from __future__ import annotations

import argparse
import asyncio
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
from routing_latency import model_list, prompt_of_tokens  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from litellm_prefill_router import PrefillRouter  # noqa: E402
from litellm_prefill_router.bundle import load_bundle  # noqa: E402


async def measure(bundle: str, n: int, tokens: int) -> dict:
    manifest = load_bundle(bundle).manifest
    tokenizer = Tokenizer.from_file(str(Path(bundle) / "tokenizer.json"))
    prompts = [prompt_of_tokens(tokenizer, tokens, i) for i in range(n + 3)]
    deployments = model_list(manifest, "shuffled")
    prefill = PrefillRouter(model_list=[d for d in deployments if d["model_name"] == "auto"],
                            routing_strategy="prefill", routing_strategy_args={"bundle": bundle,
                                                                               "prediction_cache_size": 0})
    shuffle = litellm.Router(model_list=[d for d in deployments if d["model_name"] == "shuffled"])

    async def call(router: litellm.Router, model: str, prompt: str) -> float:
        t0 = time.perf_counter()
        await router.acompletion(model=model, messages=[{"role": "user", "content": prompt}])
        return (time.perf_counter() - t0) * 1000

    for p in prompts[:3]:  # warm-up
        await call(shuffle, "shuffled", p)
        await call(prefill, "auto", p)
    added, shuffled = [], []
    for p in prompts[3:]:
        base = await call(shuffle, "shuffled", p)
        added.append(await call(prefill, "auto", p) - base)
        shuffled.append(base)
    return {"litellm": importlib.metadata.version("litellm"), "python": sys.version.split()[0], "n": n,
            "tokens": tokens, "added_p50_ms": round(statistics.median(added), 1),
            "added_p95_ms": round(float(np.percentile(added, 95)), 1),
            "shuffle_p50_ms": round(statistics.median(shuffled), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--out", help="JSONL file to append the result to")
    ap.add_argument("--plot", help="plot the runs of this JSONL file (added p50 per litellm release) as a PNG "
                                   "beside it")
    a = ap.parse_args()
    if a.plot:
        plot(Path(a.plot))
        return
    row = asyncio.run(measure(a.bundle, a.n, a.tokens))
    print(json.dumps(row))
    append_jsonl(a.out, row)


def plot(path: Path) -> None:
    def draw(ax: Any, i: int, runs: list[dict]) -> None:
        ys = [r["added_p50_ms"] for r in runs]
        ax.scatter([i] * len(ys), ys, color="C0")
        ax.hlines(statistics.median(ys), i - 0.2, i + 0.2, color="C1", label="median of runs" if i == 0 else None)

    per_release_plot(path, draw, "added routing latency p50 (ms)",
                     "prefill vs simple-shuffle, {tokens}-token prompts")

if __name__ == "__main__":
    main()
