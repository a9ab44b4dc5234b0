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
from _levers import lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = lever_parser(__doc__)
    args = ap.parse_args()

    from quality_levers_neighbours import pca_embed
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from tqdm.auto import tqdm

    from litellm_prefill_router.training import baselines as bl
    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.pipeline import TrainOptions, compute_features, split_validation
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    opts = TrainOptions(progress=False)
    _, smol = compute_features(ds, opts)
    _, gemma = compute_features(ds, TrainOptions(encoder="gemma3-270m", progress=False))
    scores = ds.scores()
    es, fold = harness.cv_rows(ds, smol.n_tokens, args.folds)
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
        for f in range(args.folds):
            q, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            fit, val = split_validation(ds, tr, opts.val_fraction)
            P["shipped"][q] = fit_trunk(x5[fit], scores[fit], x5[val], scores[val]).predict(x5[q])
            P["T4"][q] = fit_trunk(x4[fit], scores[fit], x4[val], scores[val], big).predict(x4[q])
            P["T4G"][q] = fit_trunk(x4g[fit], scores[fit], x4g[val], scores[val], big).predict(x4g[q])
            table = bl.benchmark_prior_predict([benches[i] for i in b[tr]], hard[tr], benches)
            scaler = StandardScaler().fit(x5[tr])
            pca = PCA(128, random_state=0).fit(scaler.transform(x5[tr]))
            clf = LogisticRegression(max_iter=2000).fit(pca.transform(scaler.transform(x5[tr])), b[tr])
            pb = np.zeros((len(q), len(benches)))
            pb[:, clf.classes_] = clf.predict_proba(pca.transform(scaler.transform(x5[q])))
            P["B"][q] = pb @ table
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
