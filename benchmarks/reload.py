"""Serving through a bundle reload: request latency and failures before, during and after the swap.

    python benchmarks/reload.py --bundle bundles/llmrouter [--concurrency 8] [--seconds 12] [--out benchmarks/results]

A copy of the bundle is served by `PrefillRouter(routing_strategy="prefill", reload_interval_s=0.2)` with mock
deployments; `--concurrency` clients send requests back to back. A few seconds in, a "retrained" bundle (the same
files, its max-quality preset changed so every prompt goes to the cheapest target) is written over the copy the way
`prefill-router train` writes it. Every request is checked: it must be answered, and by which bundle is read from its
route. Prints a table, writes reload.json and reload.png (latency over time, the rewrite and the swap marked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?",
    "Who wrote the novel 'One Hundred Years of Solitude'?",
    "Write a python function to find the first repeated character in a given string.",
    "Which of these is a renewable resource?\nA. coal\nB. natural gas\nC. wind\nD. oil",
]


def rewrite(directory: Path) -> None:
    """A new bundle over ``directory``: the same files, max-quality turned into 'always the cheapest'."""
    from litellm_prefill_router.bundle import MANIFEST_NAME, write_bundle

    src = Path(tempfile.mkdtemp(prefix="reload-src-"))
    shutil.copytree(directory, src, dirs_exist_ok=True)
    fields = json.loads((src / MANIFEST_NAME).read_text())
    files = {name: src / name for name in fields.pop("files")}
    fields.pop("schema_version")
    fields["presets"]["max-quality"]["value"] = 1.0
    write_bundle(directory, files, fields)
    shutil.rmtree(src)


def phase_stats(rows: list[dict], lo: float, hi: float) -> dict:
    ms = [r["ms"] for r in rows if lo <= r["start"] < hi]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(max(ms))}


async def run(bundle: Path, concurrency: int, seconds: float, rewrite_at: float) -> dict:
    from litellm_prefill_router import PrefillRouter, load_bundle

    manifest = load_bundle(bundle).manifest
    cheapest = min(manifest.targets, key=lambda t: (t.input_cost_per_token or 0) + (t.output_cost_per_token or 0))
    model_list = [{"model_name": "auto",
                   "litellm_params": {"model": f"openai/{t.name}", "api_key": "sk-mock", "mock_response": t.name},
                   "model_info": {"prefill_target": t.name, "input_cost_per_token": t.input_cost_per_token,
                                  "output_cost_per_token": t.output_cost_per_token}} for t in manifest.targets]
    router = PrefillRouter(model_list=model_list, routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle), "preset": "max-quality",
                                                  "reload_interval_s": 0.2})
    strategy = router.prefill_strategy
    first_predictor = strategy.predictor
    rows: list[dict] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    marks: dict[str, float] = {}

    async def client(i: int) -> None:
        k = i
        while time.perf_counter() - t0 < seconds:
            prompt = PROMPTS[k % len(PROMPTS)]
            k += 1
            start = time.perf_counter() - t0
            try:
                resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": prompt}])
                d = resp._hidden_params["prefill_routing"]
                rows.append({"start": start, "ms": (time.perf_counter() - t0 - start) * 1000, "target": d["target"],
                             "new": strategy.predictor is not first_predictor})
            except Exception as err:  # noqa: BLE001 - counted, the benchmark's point
                failures.append(f"{type(err).__name__}: {err}")

    async def rewriter() -> None:
        await asyncio.sleep(rewrite_at)
        marks["rewrite_start"] = time.perf_counter() - t0
        await asyncio.to_thread(rewrite, bundle)
        marks["rewrite_done"] = time.perf_counter() - t0
        while strategy.predictor is first_predictor and time.perf_counter() - t0 < seconds:
            await asyncio.sleep(0.01)
        marks["swapped"] = time.perf_counter() - t0

    await asyncio.gather(rewriter(), *(client(i) for i in range(concurrency)))
    swapped = marks.get("swapped", seconds)
    after = [r for r in rows if r["start"] > swapped + 0.5]
    return {
        "concurrency": concurrency, "seconds": seconds, "requests": len(rows), "failures": len(failures),
        "failure_examples": failures[:3], "marks_s": marks,
        "reload_s": swapped - marks.get("rewrite_done", swapped),
        "before": phase_stats(rows, 0.5, marks.get("rewrite_start", seconds)),
        "during": phase_stats(rows, marks.get("rewrite_done", seconds), swapped),
        "after": phase_stats(rows, swapped + 0.5, seconds),
        "after_all_cheapest": bool(after) and all(r["target"] == cheapest.name for r in after),
        "cheapest_target": cheapest.name,
        "timeline": [[round(r["start"], 4), round(r["ms"], 2)] for r in rows],
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array(res["timeline"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(t[:, 0], t[:, 1], s=4, label="request latency")
    for name, color in (("rewrite_done", "tab:orange"), ("swapped", "tab:green")):
        if name in res["marks_s"]:
            ax.axvline(res["marks_s"][name], color=color, ls="--", label=name.replace("_", " "))
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("ms (routing + mock call)")
    ax.set_yscale("log")
    ax.set_title(f"bundle reload under load: {res['requests']} requests, {res['failures']} failed, "
                 f"concurrency {res['concurrency']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rewrite-at", type=float, default=3.0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reload-bench-")) / "bundle"
    shutil.copytree(args.bundle, work)
    try:
        res = asyncio.run(run(work, args.concurrency, args.seconds, args.rewrite_at))
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reload.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "reload.png")
    print(f"{res['requests']} requests, {res['failures']} failed; swap {res['reload_s']:.2f} s after the rewrite; "
          f"after it every route is the new bundle's ({res['cheapest_target']}): {res['after_all_cheapest']}")
    print(f"{'phase':<8} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("before", "during", "after"):
        s = res[phase]
        if s["n"]:
            print(f"{phase:<8} {s['n']:>6} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}")
    return 0 if res["failures"] == 0 and res["after_all_cheapest"] else 1


if __name__ == "__main__":
    sys.exit(main())
