"""Why the paper's operating point is out of reach on this dataset, under the same 5-fold CV as benchmarks/quality.py.

    python benchmarks/bar_diagnosis.py [--bootstrap 200]

1. Benchmark-level routing vs the prefill trunk:
   * "per-benchmark static routing": P(target right) = the training folds' accuracy of the target on the prompt's
     benchmark, using the *true* benchmark of each test prompt (what a deployment with task tags could do);
   * "benchmark classifier L5 -> accuracy table": the same table weighted by P(benchmark | prompt) from a logistic
     regression on the SmolLM2 layer-5 features (a real router: it needs no tag);
   * the prefill trunk L5 and a 50/50 average of the trunk and the classifier's prior.
2. How much AUC the paper's point needs: the trunk's out-of-fold probabilities, each label revealed (p -> (p + y) / 2)
   with probability s, for s = 0 .. 0.6; mean AUC vs gap captured at the paper's savings.

Prints both tables, writes benchmarks/results/bar_diagnosis.json and bar_diagnosis.png.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from _levers import benchmark_classifier_prior

from litellm_prefill_router.costs import cost_matrix
from litellm_prefill_router.training import evaluation as ev
from litellm_prefill_router.training import harness
from litellm_prefill_router.training.baselines import benchmark_prior_predict
from litellm_prefill_router.training.data import load_dataset
from litellm_prefill_router.training.pipeline import TrainOptions, compute_features, split_validation
from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

RESULTS = Path(__file__).parent / "results"


def _rows(r: dict) -> dict[str, dict]:
    out = {}
    for name, s in r["scorers"].items():
        o = s["operating_points"]
        out[name] = {"mean_auc": s["mean_auc"], "ci95_auc": s["ci95"]["mean_auc"], "aiq": s["aiq"],
                     "ci95_aiq": s["ci95"].get("aiq"), "gap_max_quality": o["max-quality"]["gap_captured"],
                     "gap_paper_savings": o["paper-savings"]["gap_captured"],
                     "savings_paper_savings": o["paper-savings"]["savings_vs_most_expensive"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    ds = load_dataset(os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    scores = ds.scores()
    hard = ev.binarize(scores)
    fold = harness.stratified_folds(ds, 5)
    benches = sorted({r.benchmark for r in ds.rows})
    b = np.array([benches.index(r.benchmark) for r in ds.rows])
    _, cache = compute_features(ds, TrainOptions(progress=False))
    x = cache.select([5], ["mean", "last"])
    k = hard.shape[1]
    p_trunk, p_bench, p_clf = np.zeros(hard.shape), np.zeros(hard.shape), np.zeros(hard.shape)
    clf_acc = []
    for f in range(5):
        q, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        fit, val = split_validation(ds, tr, 0.15)
        p_trunk[q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], TrunkConfig()).predict(x[q])
        table = benchmark_prior_predict([benches[i] for i in b[tr]], hard[tr], benches)  # (benchmarks, targets)
        p_bench[q] = table[b[q]]
        p_clf[q], acc = benchmark_classifier_prior(x, b, len(benches), table, tr, q)
        clf_acc.append(acc)
    print(f"benchmark classifier accuracy per fold: {np.round(clf_acc, 3).tolist()}")
    cost = cost_matrix([ds.prices[t] for t in ds.targets], cache.n_tokens.astype(float), [256.0] * k)
    es = harness._eval_set(ds, hard, cost)
    preds = {"prefill trunk L5 mean+last": p_trunk, "per-benchmark static routing (true benchmark)": p_bench,
             "benchmark classifier L5 -> accuracy table": p_clf,
             "0.5 trunk L5 + 0.5 benchmark classifier prior": 0.5 * p_trunk + 0.5 * p_clf}
    routing = _rows(ev.evaluate(harness._scorers_from_predictions(preds, es, fold, {}), es,
                                bootstrap=args.bootstrap))
    print("| predictor | mean AUC [95% CI] | AIQ [95% CI] | gap @ max-quality | gap @ paper-savings (savings) |")
    print("|---|---|---|---|---|")
    for name, row in routing.items():
        ci, cj = row["ci95_auc"], row["ci95_aiq"]
        print(f"| {name} | {row['mean_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {row['aiq']:.3f} "
              f"[{cj[0]:.3f}, {cj[1]:.3f}] | {row['gap_max_quality']:.3f} | {row['gap_paper_savings']:.3f} "
              f"({row['savings_paper_savings']:.1%}) |")

    rng = np.random.default_rng(0)
    y = np.nan_to_num(hard, nan=0.5)
    sweep_preds = {}
    for s in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        seen = rng.random(hard.shape) < s
        sweep_preds[f"labels revealed {s:.1f}"] = np.where(seen, 0.5 * p_trunk + 0.5 * y, p_trunk)
    sweep = _rows(ev.evaluate(harness._scorers_from_predictions(sweep_preds, es, fold, {}), es, bootstrap=20))
    print("\n| trunk L5, labels revealed | mean AUC | AIQ | gap @ max-quality | gap @ paper-savings (savings) |")
    print("|---|---|---|---|---|")
    for name, row in sweep.items():
        print(f"| {name.split()[-1]} | {row['mean_auc']:.3f} | {row['aiq']:.3f} | {row['gap_max_quality']:.3f} | "
              f"{row['gap_paper_savings']:.3f} ({row['savings_paper_savings']:.1%}) |")
    aucs = np.array([r["mean_auc"] for r in sweep.values()])
    gaps = np.array([r["gap_paper_savings"] for r in sweep.values()])
    needed = float(np.interp(ev.PAPER_GAP, gaps, aucs)) if np.all(np.diff(gaps) > 0) else None
    print(f"\nmean AUC at which the sweep reaches the paper's gap {ev.PAPER_GAP:.4f}: {needed}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bar_diagnosis.json").write_text(json.dumps(
        {"benchmark_classifier_accuracy": clf_acc, "routing": routing, "sweep": sweep,
         "auc_needed_for_paper_gap": needed}, indent=2, default=float))
    _plot(routing, sweep, RESULTS / "bar_diagnosis.png")


def _plot(routing: dict, sweep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["mean_auc"] for r in sweep.values()], [r["gap_paper_savings"] for r in sweep.values()], "o-",
            color="grey", label="trunk L5 with a share of labels revealed")
    for name, r in routing.items():
        ax.scatter(r["mean_auc"], r["gap_paper_savings"], s=50, label=name, zorder=3)
    ax.scatter(0.856, ev.PAPER_GAP, marker="*", s=200, color="red", label="paper (AUC 0.856, its own data)", zorder=3)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("mean per-target AUC (5-fold CV)")
    ax.set_ylabel("gap captured at the paper's savings (~75%)")
    ax.set_title("llmrouter dataset: gap captured at ~75% savings vs AUC")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
