"""One more lever under the same 5-fold CV as benchmarks/quality.py: the prefill features (SmolLM2 layer 5,
mean+last) concatenated with the semantic routers' signal (all-MiniLM-L6-v2 sentence embeddings) in one
SharedTrunkNet - the two signals fused inside the trunk, where quality_levers.py averaged the two routers' outputs
(no gain).

    python benchmarks/quality_levers_minilm_concat.py   # features cached by train/evaluate (MiniLM's: ~2 min if not)

Writes benchmarks/results/quality_levers_minilm_concat.{json,md,png}: mean AUC and AIQ with intervals, gap captured
at max-quality and at the paper's savings (cross-fitted), paired differences vs the prefill trunk alone.
"""

from __future__ import annotations

import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report


def main() -> None:
    args = lever_parser(__doc__).parse_args()

    from litellm_prefill_router.training import baselines as bl
    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds, opts, _, cache, scores, es, fold = cv_setup(args)
    prefill = cache.select([5], ["mean", "last"])
    minilm = bl.sentence_embeddings(ds, None, False)
    x = {"prefill trunk L5 mean+last": prefill, "trunk on MiniLM embeddings": minilm,
         "trunk on prefill L5 + MiniLM (concatenated)": np.concatenate([prefill, minilm], 1)}
    preds = {n: np.zeros(es.hard.shape) for n in x}
    for _, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
        for name, feats in x.items():
            preds[name][q] = fit_trunk(feats[fit], scores[fit], feats[val], scores[val], TrunkConfig()).predict(
                feats[q])
    names = list(x)
    report = ev.evaluate(harness._scorers_from_predictions(preds, es, fold, {}), es, bootstrap=args.bootstrap,
                         reference=names[0])
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_lever_report(report, args.out, "quality_levers_minilm_concat", names[0],
                       f"({args.folds}-fold CV, {args.bootstrap} resamples, {report['seconds']} s)")


if __name__ == "__main__":
    main()
