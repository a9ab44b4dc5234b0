"""Two more levers under the same 5-fold CV as benchmarks/quality.py (SmolLM2 features cached):

* item neighbours in prefill space - kNN over the layer-5 prefill features (standardised, PCA-128 fitted on the
  training rows, cosine), alone and averaged with the trunk: does a prompt's nearest training prompts' outcome
  add what the parametric trunk smooths away?
* per-target heads - one independent trunk (its own scaler, PCA and ensemble) per target instead of the
  SharedTrunkNet's shared projection and hidden layers: does sharing across targets help or hurt?

    python benchmarks/quality_levers_neighbours.py [--data DIR] [--folds 5] [--bootstrap 200] [--out benchmarks/results]

Writes quality_levers_neighbours.{json,md,png}; the same resamples for every row, so differences are paired.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pca_embed(x_fit: np.ndarray, x_all: np.ndarray, dim: int = 128) -> np.ndarray:
    """The trunk's projection (standardise, top principal directions of the fit rows), L2-normalised for cosine
    kNN."""
    from litellm_prefill_router.training.trunk import fit_projection

    mean, scale, comps = fit_projection(x_fit, dim)
    z = ((x_all - mean) / scale) @ comps.T
    return z / np.clip(np.linalg.norm(z, axis=1, keepdims=True), 1e-9, None)


def main() -> None:
    ap = lever_parser(__doc__)
    ap.add_argument("--layer", type=int, default=5)
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from litellm_prefill_router.training import baselines as bl
    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds, opts, _, cache, scores, es, fold = cv_setup(args)
    hard = es.hard
    x = cache.select([args.layer], ["mean", "last"])
    emb = bl.sentence_embeddings(ds, None, False)
    L = f"L{args.layer}"
    names = [f"prefill trunk {L} mean+last", f"kNN prefill {L} (PCA-128, cosine)",
             f"avg(trunk {L}, kNN prefill {L})", f"per-target trunks {L} (9 independent)", "kNN MiniLM",
             f"avg(trunk {L}, per-target trunks {L})"]
    preds = {n: np.zeros(hard.shape) for n in names}
    ks: dict[str, list[int]] = {"prefill": [], "minilm": []}
    seconds = {n: 0.0 for n in names}
    with tqdm(total=args.folds, desc="folds") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            both = np.r_[fit, val]
            t = time.perf_counter()
            preds[names[0]][q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], TrunkConfig()).predict(x[q])
            seconds[names[0]] += time.perf_counter() - t
            t = time.perf_counter()
            z = pca_embed(x[fit], x)
            k = bl.fit_knn(z[fit], scores[fit], z[val], scores[val])
            ks["prefill"].append(k)
            preds[names[1]][q] = bl.knn_predict(z[both], scores[both], z[q], k)
            seconds[names[1]] += time.perf_counter() - t
            t = time.perf_counter()
            for j in range(len(ds.targets)):
                y = scores[:, [j]]
                preds[names[3]][q, j] = fit_trunk(x[fit], y[fit], x[val], y[val], TrunkConfig()).predict(x[q])[:, 0]
            seconds[names[3]] += time.perf_counter() - t
            k = bl.fit_knn(emb[fit], scores[fit], emb[val], scores[val])
            ks["minilm"].append(k)
            preds[names[4]][q] = bl.knn_predict(emb[both], scores[both], emb[q], k)
            bar.update()
    preds[names[2]] = (preds[names[0]] + preds[names[1]]) / 2
    preds[names[5]] = (preds[names[0]] + preds[names[3]]) / 2
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference=names[0])
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["k_chosen"] = ks
    report["fit_seconds"] = {n: round(s, 1) for n, s in seconds.items() if s}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_lever_report(report, args.out, "quality_levers_neighbours", names[0],
                       f"({args.folds}-fold CV, {args.bootstrap} resamples, {report['seconds']} s; "
                       f"k chosen on validation: prefill {ks['prefill']}, MiniLM {ks['minilm']})")


if __name__ == "__main__":
    main()
