"""Start-up cost of a bundle served from the Hugging Face Hub vs from a directory.

    python benchmarks/hub_load.py --bundle bundles/llmrouter [--runs 3] [--out benchmarks/results]

The bundle is pushed (`push_bundle`) to the stand-in Hub of the tests (tests/fake_hub.py, 127.0.0.1: no network
latency, so "cold" is the client's own work: lookups, the download through huggingface_hub, the cache layout) with a
tag. Each variant then builds a LiteLLM router in a fresh process, as a proxy worker starts, and times
`PrefillRouter(...)` (fetch or find the files, verify every sha256, open the ONNX sessions, the warm-up prediction):
a directory; hf://...@tag with an empty cache (cold); the same with the cache filled (warm: one revision lookup);
@<commit> warm (no lookup); @tag with HF_HUB_OFFLINE=1. Variants alternate within each run; medians are reported.
Prints a table, writes hub_load.json and hub_load.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import json, os, sys, time
from litellm_prefill_router import PrefillRouter, load_bundle
bundle = sys.argv[1]
t0 = time.perf_counter()
manifest = load_bundle(bundle).manifest
t1 = time.perf_counter()
deps = [{"model_name": "auto", "litellm_params": {"model": f"openai/{t.name}", "api_key": "x", "mock_response": "ok"},
         "model_info": {"prefill_target": t.name, "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}}
        for t in manifest.targets]
t2 = time.perf_counter()
PrefillRouter(model_list=deps, routing_strategy="prefill", routing_strategy_args={"bundle": bundle})
t3 = time.perf_counter()
print(json.dumps({"load_bundle_s": t1 - t0, "router_s": t3 - t2}))
"""


def child(bundle: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, bundle], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"child failed for {bundle}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from fake_hub import FakeHub

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-load-"))
    results: dict[str, list[dict]] = {}
    with FakeHub() as hub:
        base = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_bench",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT / "tests")}
        push = subprocess.run([sys.executable, "-c", "import sys, json, time; "
                               "from litellm_prefill_router.publish import push_bundle; t = time.perf_counter(); "
                               "r = push_bundle(sys.argv[1], 'bench/router', tag='v1', licence='apache-2.0'); "
                               "print(json.dumps({'commit': r.commit, 'push_s': time.perf_counter() - t}))",
                               str(ROOT / args.bundle)], env={**base, "HF_HOME": str(work / "push")},
                              capture_output=True, text=True, timeout=600)
        if push.returncode != 0:
            raise SystemExit(push.stderr[-3000:])
        pushed = json.loads(push.stdout.strip().splitlines()[-1])
        commit = pushed["commit"]
        warm = {**base, "HF_HOME": str(work / "warm")}
        child("hf://bench/router@v1", warm)  # fill the warm cache
        for run in range(args.runs):
            cold_home = work / f"cold-{run}"
            variants = {
                "directory": (str(ROOT / args.bundle), base),
                "hf @tag, empty cache (cold)": ("hf://bench/router@v1", {**base, "HF_HOME": str(cold_home)}),
                "hf @tag, cached (1 lookup)": ("hf://bench/router@v1", warm),
                "hf @commit, cached (no lookup)": (f"hf://bench/router@{commit}", warm),
                "hf @tag, HF_HUB_OFFLINE=1": ("hf://bench/router@v1", {**warm, "HF_HUB_OFFLINE": "1"}),
            }
            for name, (ref, env) in variants.items():
                before = len(hub.requests)
                row = child(ref, env)
                row["hub_requests"] = len(hub.requests) - before
                results.setdefault(name, []).append(row)
                print(f"run {run + 1}: {name}: {row}", flush=True)
            shutil.rmtree(cold_home, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    summary = {name: {"router_s_median": float(np.median([r["router_s"] for r in rows])),
                      "load_bundle_s_median": float(np.median([r["load_bundle_s"] for r in rows])),
                      "hub_requests": rows[-1]["hub_requests"], "runs": rows}
               for name, rows in results.items()}
    size_mb = sum(p.stat().st_size for p in (ROOT / args.bundle).iterdir()) / 1e6
    print(f"\nbundle {args.bundle} ({size_mb:.0f} MB), push {pushed['push_s']:.2f} s, medians of {args.runs} runs:")
    print(f"{'variant':34} {'load_bundle s':>13} {'PrefillRouter s':>15} {'Hub requests':>12}")
    for name, s in summary.items():
        print(f"{name:34} {s['load_bundle_s_median']:13.2f} {s['router_s_median']:15.2f} {s['hub_requests']:12d}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hub_load.json").write_text(json.dumps({"bundle": args.bundle, "size_mb": size_mb,
                                                   "push_s": pushed["push_s"], "runs": args.runs,
                                                   "variants": summary}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = np.arange(len(names))
    ax.barh(y, [summary[n]["router_s_median"] for n in names], color="#4c72b0", label="PrefillRouter(...)")
    ax.barh(y, [summary[n]["load_bundle_s_median"] for n in names], color="#dd8452", label="of which load_bundle")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds (median of {args.runs} fresh processes)")
    ax.set_title(f"Router start-up: a {size_mb:.0f} MB bundle from a directory vs hf:// (stand-in Hub on 127.0.0.1)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "hub_load.png", dpi=120)
    print(f"wrote {out / 'hub_load.json'} and {out / 'hub_load.png'}")


if __name__ == "__main__":
    main()
