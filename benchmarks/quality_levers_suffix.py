"""Lever: a difficulty-eliciting suffix appended to each prompt before the encoder reads it.

The pooled features (mean + last token) of a plain prompt describe *what* is asked; appending a question about
how hard the request is makes the last tokens attend over the prompt with that question in view - the "ask the
model about itself" trick of P(IK)-style probes, applied to the 135M encoder. Features of the suffixed prompts are
extracted for all 5,610 prompts (cached under their own key), then the same 5-fold CV as benchmarks/quality.py
compares, at layers 5 and 17: plain prompts, suffixed prompts, and both concatenated.

    python benchmarks/quality_levers_suffix.py [--data DIR] [--folds 5] [--bootstrap 200] [--out benchmarks/results]

Writes quality_levers_suffix.{json,md,png}; paired differences are against the plain-prompt trunk at layer 5.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SUFFIX = ("\n\n(Before answering: how difficult is this request for a small language model, and what knowledge "
          "or reasoning does it need?)")


def with_suffix(prompt: object, suffix: str = SUFFIX) -> object:
    """The prompt with ``suffix`` appended to its last user message (a plain string prompt: to the string)."""
    if isinstance(prompt, str):
        return prompt + suffix
    msgs = copy.deepcopy(prompt)
    for m in reversed(msgs):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            m["content"] += suffix
            return msgs
    return msgs + [{"role": "user", "content": suffix.strip()}]


def main() -> None:
    ap = lever_parser(__doc__)
    args = ap.parse_args()

    import hashlib

    from tqdm.auto import tqdm

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.encoders import cache_root
    from litellm_prefill_router.training.features import extract_features
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    # costs are those of the plain prompts: the suffix is the router's, not billed
    ds, opts, handle, plain, scores, es, fold = cv_setup(args)
    key = hashlib.sha256((ds.content_hash() + SUFFIX).encode()).hexdigest()[:16]
    t = time.perf_counter()
    suffixed = extract_features(handle, [with_suffix(p) for p in ds.prompts()], dataset_hash=f"suffix-{key}",
                                cache_dir=cache_root() / "features", max_tokens=opts.max_tokens, progress=True)
    extract_s = time.perf_counter() - t
    hard = es.hard
    X = {}
    for layer in (5, 17):
        a, b = plain.select([layer], ["mean", "last"]), suffixed.select([layer], ["mean", "last"])
        X[f"plain L{layer}"], X[f"suffixed L{layer}"], X[f"plain + suffixed L{layer}"] = a, b, np.concatenate([a, b], 1)
    preds = {n: np.zeros(hard.shape) for n in X}
    with tqdm(total=args.folds * len(X), desc="cross-validation") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            for n, x in X.items():
                preds[n][q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], TrunkConfig()).predict(x[q])
                bar.update()
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference="plain L5")
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    report["suffix"] = SUFFIX
    report["extract_seconds"] = round(extract_s, 1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_lever_report(report, args.out, "quality_levers_suffix", "plain L5",
                       f"({args.folds}-fold CV, {args.bootstrap} resamples; suffix features "
                       f"extracted in {report['extract_seconds']} s, total {report['seconds']} s)")


if __name__ == "__main__":
    main()
