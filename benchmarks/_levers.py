"""Shared by the lever benchmarks: their common arguments and data, the Markdown table of a report, its outputs,
and the benchmark-classifier prior (bar_diagnosis.py, quality_levers_stack.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


def lever_parser(doc: str | None) -> argparse.ArgumentParser:
    """--data, --folds, --bootstrap and --out, as every lever benchmark takes them."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results")
    return ap


class CvData(NamedTuple):
    ds: Any  # RoutingDataset
    opts: Any  # TrainOptions (defaults: the shipped recipe)
    handle: Any  # EncoderHandle of the default encoder
    cache: Any  # its FeatureCache for every row (cached on disk)
    scores: np.ndarray
    es: Any  # EvalSet of every row
    fold: np.ndarray


def cv_setup(args: argparse.Namespace) -> CvData:
    """The dataset, the default encoder's cached features and the same stratified folds as benchmarks/quality.py."""
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.pipeline import TrainOptions, compute_features

    ds = load_dataset(args.data)
    opts = TrainOptions(progress=False)
    handle, cache = compute_features(ds, opts)
    es, fold = harness.cv_rows(ds, cache.n_tokens, args.folds)
    return CvData(ds, opts, handle, cache, ds.scores(), es, fold)


def benchmark_classifier_prior(x: np.ndarray, bench: np.ndarray, n_bench: int, table: np.ndarray, tr: np.ndarray,
                               q: np.ndarray) -> tuple[np.ndarray, float]:
    """P(correct) of the held-out rows ``q`` as the benchmark accuracy ``table`` (benchmarks x targets) weighted by a
    logistic regression on PCA-128 of ``x`` that predicts each row's benchmark index ``bench``, fitted on ``tr``;
    and that classifier's accuracy on ``q``."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[tr])
    pca = PCA(128, random_state=0).fit(scaler.transform(x[tr]))
    clf = LogisticRegression(max_iter=2000).fit(pca.transform(scaler.transform(x[tr])), bench[tr])
    pb = np.zeros((len(q), n_bench))
    pb[:, clf.classes_] = clf.predict_proba(pca.transform(scaler.transform(x[q])))
    return pb @ table, float((pb.argmax(1) == bench[q]).mean())


def lever_table(report: dict[str, Any], reference: str) -> str:
    """One row per scorer: mean AUC and AIQ with intervals, gap captured at max-quality and at the paper's
    savings, and the paired differences (variant minus ``reference``) of mean AUC and AIQ."""
    lines = ["| variant | mean AUC [95% CI] | AIQ [95% CI] | gap @ max-quality | gap @ paper-savings (savings) "
             f"| paired mean AUC diff vs {reference} [95% CI] | paired AIQ diff [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for name, s in report["scorers"].items():
        ci, ops = s["ci95"], s["operating_points"]
        paired = report["paired_vs_reference"].get(name, {})

        def diff(key: str, paired: dict = paired) -> str:  # the report holds reference - variant
            v = paired.get(key)
            return "-" if not v else f"{-v['difference']:+.3f} [{-v['ci95'][1]:+.3f}, {-v['ci95'][0]:+.3f}]"

        lines.append(f"| {name} | {s['mean_auc']:.3f} [{ci['mean_auc'][0]:.3f}, {ci['mean_auc'][1]:.3f}] | "
                     f"{s['aiq']:.3f} [{ci['aiq'][0]:.3f}, {ci['aiq'][1]:.3f}] | "
                     f"{ops['max-quality']['gap_captured']:.3f} | {ops['paper-savings']['gap_captured']:.3f} "
                     f"({ops['paper-savings']['savings_vs_most_expensive']:.1%}) | {diff('mean_auc')} | "
                     f"{diff('aiq')} |")
    return "\n".join(lines)


def write_lever_report(report: dict[str, Any], out: str | Path, stem: str, reference: str, footer: str) -> str:
    """``stem``.json (the whole report), .md (the table and ``footer``) and .png (the accuracy-cost curves)."""
    from litellm_prefill_router.training import reports

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float))
    text = f"{lever_table(report, reference)}\n\n{footer}\n"
    (out / f"{stem}.md").write_text(text)
    reports.plot(report, out / f"{stem}.png")
    print(text)
    return text
