"""Two more levers under the same 5-fold CV as benchmarks/quality.py (features of both encoders cached):
SmolLM2 layer 17 + Gemma 3 270M layer 18 features concatenated, and a 256-dim PCA projection in the trunk.

    python benchmarks/quality_levers_extra.py   # needs the smollm2 and gemma3-270m feature caches (train/evaluate)
    python benchmarks/quality_levers_extra.py --isotonic   # calibrates quality.py's out-of-fold predictions

Prints mean AUC [95% CI], AIQ, gap captured at max-quality and at the paper's savings (cross-fitted).
"""

from __future__ import annotations

import os

import numpy as np

from litellm_prefill_router.costs import cost_matrix
from litellm_prefill_router.training import evaluation as ev
from litellm_prefill_router.training import harness
from litellm_prefill_router.training.data import load_dataset
from litellm_prefill_router.training.pipeline import (
    TrainOptions,
    compute_features,
    split_validation,
)
from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk


def main() -> None:
    ds = load_dataset(
        os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter")
    )
    _, c1 = compute_features(ds, TrainOptions(progress=False))
    _, c2 = compute_features(ds, TrainOptions(encoder="gemma3-270m", progress=False))
    scores = ds.scores()
    hard = ev.binarize(scores)
    cost = cost_matrix(
        [ds.prices[t] for t in ds.targets],
        c1.n_tokens.astype(float),
        [256.0] * len(ds.targets),
    )
    es = harness._eval_set(ds, hard, cost)
    fold = harness.stratified_folds(ds, 5)
    X = {
        "smollm2 L17": c1.select([17], ["mean", "last"]),
        "smollm2 L17 + gemma3 L18": np.concatenate(
            [c1.select([17], ["mean", "last"]), c2.select([18], ["mean", "last"])], 1
        ),
        "smollm2 L17 proj 256": c1.select([17], ["mean", "last"]),
    }
    preds = {}
    for name, x in X.items():
        cfg = TrunkConfig(proj_dim=256) if "proj 256" in name else TrunkConfig()
        p = np.zeros(hard.shape)
        for f in range(5):
            q, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            fit, val = split_validation(ds, tr, 0.15)
            p[q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], cfg).predict(
                x[q]
            )
        preds[name] = p
    sc = harness._scorers_from_predictions(preds, es, fold, {})
    r = ev.evaluate(sc, es, bootstrap=200)
    for n, s in r["scorers"].items():
        o = s["operating_points"]
        print(
            n,
            round(s["mean_auc"], 4),
            s["ci95"]["mean_auc"],
            round(s["aiq"], 4),
            round(o["max-quality"]["gap_captured"], 3),
            round(o["paper-savings"]["gap_captured"], 3),
        )




def isotonic_calibration(oof_path: str = "benchmarks/results/quality_cv/oof_preds.jsonl") -> None:
    """Cross-fitted per-target isotonic calibration of the quality.py out-of-fold predictions (`--isotonic`)."""
    import json

    from sklearn.isotonic import IsotonicRegression

    ds = load_dataset(os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    targets = ds.targets
    rows = {d["id"]: d for d in map(json.loads, open(oof_path, encoding="utf-8"))}
    p = np.array([[rows[r.id]["p_correct"][t] for t in targets] for r in ds.rows])
    cost = np.array([[rows[r.id]["cost"][t] for t in targets] for r in ds.rows])
    hard = ev.binarize(ds.scores())
    es = harness._eval_set(ds, hard, cost)
    fold = harness.stratified_folds(ds, 5)
    pc = np.zeros_like(p)
    for f in range(5):
        q, ref = fold == f, fold != f
        for j in range(len(targets)):
            ok = ref & ~np.isnan(hard[:, j])
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p[ok, j], hard[ok, j])
            pc[q, j] = iso.predict(p[q, j])
    sc = harness._scorers_from_predictions({"oof": p, "oof + isotonic (cross-fitted)": pc}, es, fold, {})
    r = ev.evaluate(sc, es, bootstrap=200)
    for n, s in r["scorers"].items():
        o = s["operating_points"]
        print(n, round(s["mean_auc"], 4), round(s["mean_brier"], 4), round(s["aiq"], 4),
              round(o["max-quality"]["gap_captured"], 3), round(o["paper-savings"]["gap_captured"], 3))


if __name__ == "__main__":
    import sys

    isotonic_calibration() if "--isotonic" in sys.argv else main()
