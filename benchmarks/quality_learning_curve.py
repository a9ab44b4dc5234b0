"""Learning curve: is the router short of labelled prompts or of encoder signal?

The shipped L5 trunk is refitted in the same 5-fold CV as benchmarks/quality.py on a random share (25%, 50%, 75%,
100%; one draw per fold, the same rows for every target) of each fold's training rows and scored on the same held-out
rows. If mean AUC still climbs steeply at 100%, collecting labels (`prefill-router collect`, feedback) is the lever;
if it is flat, more data of this kind will not reach the paper's operating point (mean AUC ~0.863, see
bar_diagnosis.py). A least-squares line of mean AUC against log2(training rows) over the measured shares gives a
rough extrapolation of the rows that AUC would need (an extrapolation far past the data: read it as an order of
magnitude at best).

    python benchmarks/quality_learning_curve.py [--data DIR] [--folds 5] [--bootstrap 200] [--out benchmarks/results]

Writes quality_learning_curve.{json,md,png} and quality_learning_curve_auc.png (AUC against rows); paired
differences are against the trunk on 100% of the rows.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARES = (0.25, 0.5, 0.75, 1.0)
TARGET_AUC = 0.863  # where the paper's 45.58% of the gap falls on this dataset (bar_diagnosis.py)


def name_of(share: float) -> str:
    return f"trunk L5, {share:.0%} of the training rows"


def main() -> None:
    args = lever_parser(__doc__).parse_args()

    from tqdm.auto import tqdm

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds, opts, handle, cache, scores, es, fold = cv_setup(args)
    x = cache.select([5], ["mean", "last"])
    preds = {name_of(s): np.zeros(es.hard.shape) for s in SHARES}
    rows_used: dict[str, list[int]] = {name_of(s): [] for s in SHARES}
    rng = np.random.default_rng(0)
    with tqdm(total=args.folds * len(SHARES), desc="learning curve") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            order = rng.permutation(len(fit))
            for share in SHARES:
                sub = np.sort(fit[order[: max(50, int(round(share * len(fit))))]])
                model = fit_trunk(x[sub], scores[sub], x[val], scores[val], TrunkConfig())
                preds[name_of(share)][q] = model.predict(x[q])
                rows_used[name_of(share)].append(len(sub))
                bar.update()
    reference = name_of(1.0)
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference=reference)
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    n = np.array([float(np.mean(rows_used[name_of(s)])) for s in SHARES])
    auc = np.array([report["scorers"][name_of(s)]["mean_auc"] for s in SHARES])
    slope, intercept = np.polyfit(np.log2(n), auc, 1)
    needed = 2 ** ((TARGET_AUC - intercept) / slope) if slope > 0 else float("inf")
    report["learning_curve"] = {"training_rows_per_fold": n.tolist(), "mean_auc": auc.tolist(),
                                "auc_per_doubling": float(slope), "target_auc": TARGET_AUC,
                                "rows_for_target_extrapolated": float(needed)}
    report["seconds"] = time.perf_counter() - t0
    points = ", ".join(f"{int(a)}: {b:.4f}" for a, b in zip(n, auc))
    footer = (f"Mean AUC gains {slope:+.4f} per doubling of the training rows ({points}); a straight line in "
              f"log2(rows) reaches {TARGET_AUC} at ~{needed:,.0f} training rows "
              f"(x{needed / n[-1]:,.0f} the {int(n[-1])} used per fold) - an extrapolation far past the data. "
              f"{report['seconds']:.0f} s.")
    print(write_lever_report(report, args.out, "quality_learning_curve", reference, footer))
    _plot(n, auc, slope, intercept, needed, args.out)


def _plot(n: np.ndarray, auc: np.ndarray, slope: float, intercept: float, needed: float, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(n, auc, "o-", label="trunk L5, 5-fold CV (mean per-target AUC)")
    far = max(needed, n[-1] * 2) if np.isfinite(needed) else n[-1] * 8
    grid = np.geomspace(n[0], min(far, n[-1] * 1e4), 50)
    ax.plot(grid, intercept + slope * np.log2(grid), "--", color="grey", label="log-linear fit (extrapolated)")
    ax.axhline(TARGET_AUC, color="red", lw=0.8, label=f"AUC the paper's operating point needs (~{TARGET_AUC})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training rows per fold")
    ax.set_ylabel("mean per-target AUC")
    ax.set_title("Learning curve of the prefill router on ../shared/datasets/llmrouter")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "quality_learning_curve_auc.png"), dpi=120)


if __name__ == "__main__":
    main()
