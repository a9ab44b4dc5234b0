"""Levers tried to raise routing quality, each under the same 5-fold CV and bootstrap as benchmarks/quality.py.

    python benchmarks/quality_levers.py [--data DIR] [--folds 5] [--bootstrap 300]

Variants (SmolLM2-135M features, cached): SharedTrunkNet on one layer, on four concatenated layers, with a
larger seed ensemble, and post-hoc probability averages of the prefill trunk with the kNN-MiniLM baseline
(semantic + prefill). Writes quality_levers.{json,md,png} under benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness, reports
    from litellm_prefill_router.training.data import load_dataset

    ds = load_dataset(args.data)
    t0 = time.perf_counter()
    variants = [harness.PrefillVariant([5]), harness.PrefillVariant([17]), harness.PrefillVariant([5, 11, 17, 23]),
                harness.PrefillVariant([17], seeds=10, keep=5)]
    _, preds, es = harness.cross_validate(ds, folds=args.folds, variants=variants, baselines=("knn",),
                                          bootstrap=10)
    knn = preds["kNN MiniLM"]
    for name in ("prefill trunk L17 mean+last", "prefill trunk L5 mean+last"):
        preds[f"avg({name.split(' mean')[0]}, kNN MiniLM)"] = (preds[name] + knn) / 2
    fold = harness.stratified_folds(ds, args.folds)
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference="prefill trunk L5 mean+last")
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    (out / "quality_levers.json").write_text(json.dumps(report, indent=1, default=float))
    lines = ["| variant | mean AUC [95% CI] | AIQ [95% CI] | gap @ max-quality | gap @ paper-savings (savings) "
             "| curve: best gap at >= 74.31% savings | savings at best-single accuracy (curve) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in report["scorers"].items():
        ci, ops = s["ci95"], s["operating_points"]
        sv = s["curve_savings_at_best_single_accuracy"]
        lines.append(f"| {name} | {s['mean_auc']:.3f} [{ci['mean_auc'][0]:.3f}, {ci['mean_auc'][1]:.3f}] | "
                     f"{s['aiq']:.3f} [{ci['aiq'][0]:.3f}, {ci['aiq'][1]:.3f}] | "
                     f"{ops['max-quality']['gap_captured']:.3f} | {ops['paper-savings']['gap_captured']:.3f} "
                     f"({ops['paper-savings']['savings_vs_most_expensive']:.1%}) | "
                     f"{s['curve_best_gap_at_paper_savings']:.3f} | {'-' if sv is None else f'{sv:.1%}'} |")
    text = "\n".join(lines) + f"\n\n({args.folds}-fold CV, {report['seconds']} s)\n"
    (out / "quality_levers.md").write_text(text)
    reports.plot(report, out / "quality_levers.png")
    print(text)


if __name__ == "__main__":
    main()
