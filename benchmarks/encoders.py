"""Which offline encoder should be the default? Probe AUC vs depth and forward time, same prompts.

    python benchmarks/encoders.py --data ../shared/datasets/llmrouter [--n 1200]
        [--encoders smollm2,gemma3-270m,minilm-l6]

A deterministic subsample stratified by benchmark (n prompts, max 256 tokens), every layer's
mean+last pooled features, 5-fold CV logistic AUC per target (the probe of `training/probes.py`),
and the torch forward time of one 256-token prompt at each encoder's best layer. Writes JSON + PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--encoders", default="smollm2,gemma3-270m,minilm-l6")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.encoders import cache_root, load_encoder
    from litellm_prefill_router.training.export import time_depths
    from litellm_prefill_router.training.features import extract_features, prompt_encoder
    from litellm_prefill_router.training.probes import run_probes

    ds = load_dataset(args.data)
    frac = args.n / len(ds)
    keep = sorted(range(len(ds)), key=lambda i: hashlib.sha256(ds.rows[i].id.encode()).hexdigest())
    by_bench: dict[str, list[int]] = {}
    for i in keep:
        by_bench.setdefault(ds.rows[i].benchmark, []).append(i)
    rows = sorted(i for idx in by_bench.values() for i in idx[: max(5, int(round(len(idx) * frac)))])
    sub = ds.subset(rows)
    scores = sub.scores()
    results = []
    for name in args.encoders.split(","):
        t0 = time.perf_counter()
        h = load_encoder(name)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache = extract_features(h, sub.prompts(), dataset_hash=sub.content_hash(), cache_dir=cache_root() / "features",
                                 max_tokens=256)
        t_feat = time.perf_counter() - t0
        res = run_probes(cache, scores, sub.targets, np.arange(len(sub)), poolings=[("mean", "last")], folds=5)
        best = max(res.summary, key=lambda r: r["auc"])
        ids = prompt_encoder(h, 256).encode(sub.rows[0].prompt).ids
        ids = torch.tensor([(ids * 256)[:256]])
        ms = time_depths(h.model, h.num_hidden_layers, ids, torch.ones_like(ids), depths=[best["layer"]], repeats=3)
        params = sum(p.numel() for p in h.model.parameters()) / 1e6
        results.append({"encoder": name, "id": h.id, "layers": h.num_hidden_layers, "params_m": params,
                        "chat_template": h.chat_template is not None, "best_layer": best["layer"],
                        "best_auc": best["auc"], "forward_ms_256tok_at_best": ms[best["layer"]],
                        "feature_seconds": t_feat, "load_seconds": t_load,
                        "auc_by_layer": {r["layer"]: r["auc"] for r in res.summary}})
        print(f"{name}: best layer {best['layer']}/{h.num_hidden_layers} AUC {best['auc']:.4f}, "
              f"{ms[best['layer']]:.0f} ms at 256 tokens, features {t_feat:.0f}s", flush=True)
        del h
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoders.json").write_text(json.dumps({"n_prompts": len(sub), "results": results}, indent=1))
    print("\n| encoder | params (M) | chat template | best layer | 5-fold probe AUC "
          "| forward ms (256 tok, cut at best) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['encoder']} | {r['params_m']:.0f} | {'yes' if r['chat_template'] else 'no'} | "
              f"{r['best_layer']}/{r['layers']} | {r['best_auc']:.3f} | {r['forward_ms_256tok_at_best']:.0f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ls = sorted(r["auc_by_layer"])
        ax.plot([l / r["layers"] for l in ls], [r["auc_by_layer"][l] for l in ls], "-o", ms=3, label=r["encoder"])
    ax.set_xlabel("relative depth (layer / number of layers)")
    ax.set_ylabel("5-fold CV probe AUC (mean over targets)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "encoders.png", dpi=110)


if __name__ == "__main__":
    main()
