"""Lever: a routing-shaped loss. Routing picks *among targets for one prompt*, while the trunk's per-target
binary cross-entropy scores each target across prompts. This adds a listwise term over each prompt's targets -
softmax cross-entropy towards the prompt's right answers (q = y / sum(y) over its labelled targets; prompts where
all or none are right carry no ranking and are skipped) - weighted by alpha, to the training loss of the same
SharedTrunkNet (same PCA, seeds, early stopping on the validation BCE). alpha = 0 is the shipped trunk.

    python benchmarks/quality_levers_listwise.py [--data DIR] [--alphas 0 0.3 1] [--layer 5] [--bootstrap 200]

Writes quality_levers_listwise.{json,md,png}; paired differences are against alpha = 0. Also reports how often the
router's pick among the six 7-9B targets is right (where the paper's operating point must be won).
"""

from __future__ import annotations

import os
import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = lever_parser(__doc__)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    args = ap.parse_args()

    import torch
    from tqdm.auto import tqdm

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness, trunk

    bce = trunk._masked_bce
    alpha = {"value": 0.0}

    def routing_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = bce(logits, y, mask)
        if alpha["value"] == 0 or not torch.is_grad_enabled():  # validation (early stopping) stays plain BCE
            return loss
        right = y * mask
        n_right, n = right.sum(1), mask.sum(1)
        rows = (n_right > 0) & (n_right < n)
        if not rows.any():
            return loss
        logp = torch.log_softmax(logits[rows].masked_fill(mask[rows] == 0, -1e9), dim=1)
        q = right[rows] / n_right[rows, None]
        return loss + alpha["value"] * -(q * logp).sum(1).mean()

    trunk._masked_bce = routing_loss
    t0 = time.perf_counter()
    ds, opts, _, cache, scores, es, fold = cv_setup(args)
    x = cache.select([args.layer], ["mean", "last"])
    names = {a: f"trunk L{args.layer}, listwise alpha {a:g}" for a in args.alphas}
    preds = {n: np.zeros(es.hard.shape) for n in names.values()}
    with tqdm(total=args.folds * len(names), desc="cross-validation") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            for a, name in names.items():
                alpha["value"] = a
                preds[name][q] = trunk.fit_trunk(x[fit], scores[fit], x[val], scores[val]).predict(x[q])
                bar.update()
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference=names[args.alphas[0]])
    totals = es.cost.mean(0)
    cheap = np.flatnonzero(totals <= np.sort(totals)[5])  # the six cheapest targets
    filled = es.filled
    report["cheap_targets"] = [es.targets[j] for j in cheap]
    report["cheap_pick_accuracy"] = {n: float(filled[np.arange(len(p)), cheap[p[:, cheap].argmax(1)]].mean())
                                     for n, p in preds.items()}
    report["cheap_oracle"] = float(filled[:, cheap].max(1).mean())
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    picks = ", ".join(f"{n}: {v:.3f}" for n, v in report["cheap_pick_accuracy"].items())
    write_lever_report(report, args.out, "quality_levers_listwise", names[args.alphas[0]],
                       "Accuracy of the most likely of the six cheapest targets "
                       f"({', '.join(report['cheap_targets'])}; "
                       f"their oracle {report['cheap_oracle']:.3f}): {picks}.\n\n({args.folds}-fold CV, "
                       f"{args.bootstrap} resamples, {report['seconds']} s)")


if __name__ == "__main__":
    main()
