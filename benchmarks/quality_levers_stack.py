"""Do the small levers add up? The best-measured ones stacked, under the same 5-fold CV as benchmarks/quality.py.

Components (all cached features, fitted on each fold's training rows only):
* T4: SharedTrunkNet on SmolLM2 layers 5+11+17+23 mean+last, 10 seeds keep 5 (the two best single levers);
* T4G: the same plus Gemma 3 270M layer 18 mean+last (the encoder concatenation lever);
* B: the benchmark-classifier prior (logistic regression on PCA-128 of SmolLM2 L5 -> each benchmark's accuracy
  table, from benchmarks/bar_diagnosis.py);
* K: kNN over SmolLM2 L17 prefill features (PCA-128, cosine, k chosen on validation).
Blends use weights fixed before looking at the held-out folds (equal shares), so no weight is tuned on the rows
that score it.

    python benchmarks/quality_levers_stack.py [--data DIR] [--bootstrap 200] [--out benchmarks/results]

Writes quality_levers_stack.{json,md,png}; paired differences against the shipped trunk (L5, 5 seeds keep 3).
"""

from __future__ import annotations

import os
import time

import numpy as np
from _levers import benchmark_classifier_prior, cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = lever_parser(__doc__)
    args = ap.parse_args()

    from quality_levers_neighbours import pca_embed
    from tqdm.auto import tqdm

    from litellm_prefill_router.training import baselines as bl
    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.pipeline import TrainOptions, compute_features
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds, opts, _, smol, scores, es, fold = cv_setup(args)
    _, gemma = compute_features(ds, TrainOptions(encoder="gemma3-270m", progress=False))
    hard = es.hard
    pool = ["mean", "last"]
    x5, x17 = smol.select([5], pool), smol.select([17], pool)
    x4 = smol.select([5, 11, 17, 23], pool)
    x4g = np.concatenate([x4, gemma.select([18], pool)], 1)
    benches = sorted({r.benchmark for r in ds.rows})
    b = np.array([benches.index(r.benchmark) for r in ds.rows])
    P = {k: np.zeros(hard.shape) for k in ("shipped", "T4", "T4G", "B", "K")}
    big = TrunkConfig(seeds=10, keep=5)
    with tqdm(total=args.folds, desc="folds") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            tr = np.flatnonzero(fold != f)
            P["shipped"][q] = fit_trunk(x5[fit], scores[fit], x5[val], scores[val]).predict(x5[q])
            P["T4"][q] = fit_trunk(x4[fit], scores[fit], x4[val], scores[val], big).predict(x4[q])
            P["T4G"][q] = fit_trunk(x4g[fit], scores[fit], x4g[val], scores[val], big).predict(x4g[q])
            table = bl.benchmark_prior_predict([benches[i] for i in b[tr]], hard[tr], benches)
            P["B"][q], _ = benchmark_classifier_prior(x5, b, len(benches), table, tr, q)
            z = pca_embed(x17[fit], x17)
            k = bl.fit_knn(z[fit], scores[fit], z[val], scores[val])
            both = np.r_[fit, val]
            P["K"][q] = bl.knn_predict(z[both], scores[both], z[q], k)
            bar.update()
    preds = {
        "prefill trunk L5 mean+last (shipped)": P["shipped"],
        "T4: trunk L5+11+17+23, 10 seeds keep 5": P["T4"],
        "T4G: T4 + Gemma L18": P["T4G"],
        "(T4G + B) / 2": (P["T4G"] + P["B"]) / 2,
        "(T4G + K) / 2": (P["T4G"] + P["K"]) / 2,
        "(2 T4G + B + K) / 4": (2 * P["T4G"] + P["B"] + P["K"]) / 4,
    }
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference=next(iter(preds)))
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_lever_report(report, args.out, "quality_levers_stack", "shipped trunk",
                       f"({args.folds}-fold CV, {args.bootstrap} resamples, {report['seconds']} s)")


if __name__ == "__main__":
    main()
