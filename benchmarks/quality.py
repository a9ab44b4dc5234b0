"""Routing quality of the prefill router vs every baseline, on ../shared/datasets/llmrouter, one run.

    python benchmarks/quality.py [--data DIR] [--bundle bundles/llmrouter] [--folds 5] [--bootstrap 1000]
                                 [--variants 5 17 5,17] [--out benchmarks/results]

1. 5-fold cross-validation over all 5,610 prompts (stratified by benchmark; cross-fitted operating points):
   prefill variants (SmolLM2 layers, SharedTrunkNet head, plus the issue's per-target logistic probe at
   layer 18) against kNN / logistic / MLP / matrix factorisation over MiniLM embeddings, and random,
   cheapest, best single and oracle.
2. The deployed bundle (ONNX, int8) on the 450-prompt test split with the same baselines.

Writes quality_cv/ and quality_test/ (metrics.json, report.md, curve.png, predictions) and quality.md,
the table the README shows. Features are cached by `prefill-router train`; the first run computes them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--variants", nargs="*", default=["5", "17", "5,17"],
                    help="comma-separated SmolLM2 layers per SharedTrunkNet variant (the first is the reference)")
    ap.add_argument("--logreg-layer", type=int, default=18, help="layer of the issue's logistic-probe reference")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from litellm_prefill_router.training import harness, reports
    from litellm_prefill_router.training.data import load_dataset

    out = Path(args.out)
    ds = load_dataset(args.data)
    variants = [harness.PrefillVariant([int(x) for x in v.split(",")]) for v in args.variants]
    if args.logreg_layer:
        variants.append(harness.PrefillVariant([args.logreg_layer], head="logreg"))
    t0 = time.perf_counter()
    cv, preds, es = harness.cross_validate(ds, folds=args.folds, variants=variants, bootstrap=args.bootstrap)
    cv["seconds"] = round(time.perf_counter() - t0, 1)
    reports.write_report(cv, preds, es, out / "quality_cv")
    sections = [reports.markdown(cv).split("\n\n## ")[0], f"(CV run: {cv['seconds']} s)"]
    if Path(args.bundle).exists():
        t0 = time.perf_counter()
        te, preds, es = harness.evaluate_bundle(ds, args.bundle, baselines=tuple(harness.BASELINE_NAMES),
                                                bootstrap=args.bootstrap)
        te["seconds"] = round(time.perf_counter() - t0, 1)
        reports.write_report(te, preds, es, out / "quality_test")
        sections.append(reports.markdown(te).split("\n\n## ")[0])
    text = "\n\n".join(sections) + "\n"
    (out / "quality.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out / 'quality.md'}, {out / 'quality_cv'}, {out / 'quality_test'}")


if __name__ == "__main__":
    main()
