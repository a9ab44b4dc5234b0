"""Lever: how surprising the prompt is to the encoder (its per-token surprisal under the encoder's own LM head).

The bar diagnosis found the pooled hidden states tell *which benchmark* a prompt is from much better than *which
model answers this item*. Work on LLM knowledge (e.g. entity popularity vs QA accuracy) suggests a prompt's
familiarity to a language model tracks how likely models are to answer it; the mean and tail of the prompt's token
surprisal are not in the mean + last pooled states directly. SmolLM2 ties its LM head to the token embeddings, so
the logits are the final (normed) hidden states times the embedding table - one full forward per prompt.

Statistics per prompt (over the request's own tokens as the features see them, the chat template's fixed tokens
left out): mean, std, max and 90th percentile of
token surprisal (nats), mean surprisal of the last 16 tokens, share of tokens above 8 nats, and log token count.
Compared in the same 5-fold CV as benchmarks/quality.py: the shipped L5 trunk, the trunk on L5 + the statistics
(standardised, weighted so the trunk's PCA keeps them), the statistics alone (a trunk on 7 inputs), and log token
count alone added to L5 (is length all there is?).

    python benchmarks/quality_levers_surprisal.py [--data DIR] [--folds 5] [--bootstrap 200] [--out benchmarks/results]

Writes quality_levers_surprisal.{json,md,png}; paired differences are against the L5 trunk.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _levers import cv_setup, lever_parser, write_lever_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STATS = ["mean", "std", "max", "p90", "last16_mean", "share_above_8", "log_tokens"]


def surprisal_stats(handle, prompts, max_tokens: int, cache: "os.PathLike[str]") -> np.ndarray:  # type: ignore[no-untyped-def]
    """(n, 7) statistics of each prompt's token surprisal, cached in ``cache`` (resumable)."""
    import torch
    from tqdm.auto import tqdm

    from litellm_prefill_router.training.features import length_batches, padded_batch, prompt_encoder

    path = os.fspath(cache)
    n = len(prompts)
    out = np.load(path) if os.path.exists(path) else np.full((n, len(STATS)), np.nan, dtype=np.float32)
    todo = np.flatnonzero(np.isnan(out).any(1))
    if len(todo) == 0:
        return out
    penc = prompt_encoder(handle, max_tokens)
    encoded = penc.encode_batch([prompts[int(i)] for i in todo])
    # the chat template's fixed tokens (system prompt, role markers, generation prompt) are left out: only the tokens
    # of the request itself count (a template prefix's first tokens are the most surprising of every prompt)
    a, b = (e.ids for e in penc.encode_batch([[{"role": "user", "content": "Apples are red."}],
                                                [{"role": "user", "content": "Zebras run fast today?"}]]))
    head = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    tail = next(i for i, (x, y) in enumerate(zip(a[::-1], b[::-1])) if x != y)
    lengths = np.array([len(e.ids) for e in encoded])
    model = handle.model
    table = model.get_input_embeddings().weight  # tied LM head
    with torch.inference_mode(), tqdm(total=len(todo), desc="prompt surprisal", unit="prompt") as bar:
        for k, batch in enumerate(length_batches(lengths, 4096, 16)):
            ids, mask = padded_batch([encoded[j].ids for j in batch], handle.pad_token_id)
            hidden = model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            for r, j in enumerate(batch):
                m = int(lengths[j])
                logp = torch.log_softmax(hidden[r, : m - 1] @ table.T, dim=-1)
                s = -logp.gather(1, ids[r, 1:m, None])[:, 0].numpy()  # surprisal of tokens 1..m-1
                s = s[max(0, head - 1): len(s) - tail] if len(s) > head + tail else s
                out[todo[j]] = [s.mean(), s.std(), s.max(), np.percentile(s, 90), s[-16:].mean(),
                                (s > 8).mean(), np.log(encoded[j].n_tokens)]
            bar.update(len(batch))
            if k % 20 == 0:
                np.save(path, out)
    np.save(path, out)
    return out


def main() -> None:
    ap = lever_parser(__doc__)
    ap.add_argument("--weight", type=float, default=10.0,
                    help="scale of the standardised statistics beside the standardised hidden features (PCA keeps "
                         "high-variance inputs)")
    args = ap.parse_args()

    import hashlib

    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training import harness
    from litellm_prefill_router.training.encoders import cache_root
    from litellm_prefill_router.training.trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    ds, opts, handle, plain, scores, es, fold = cv_setup(args)
    key = hashlib.sha256((ds.content_hash() + handle.id + str(opts.max_tokens)).encode()).hexdigest()[:16]
    cache = cache_root() / "features" / f"surprisal-{key}.npy"
    cache.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    stats = surprisal_stats(handle, ds.prompts(), opts.max_tokens, cache)
    extract_s = time.perf_counter() - t

    hard = es.hard
    l5 = plain.select([5], ["mean", "last"])
    X = {"prefill trunk L5 mean+last": l5}
    preds = {n: np.zeros(hard.shape) for n in (*X, "L5 + surprisal", "surprisal alone", "L5 + log tokens")}
    with tqdm(total=args.folds * len(preds), desc="cross-validation") as bar:
        for f, q, fit, val in harness.cv_splits(ds, fold, opts.val_fraction):
            mu, sd = stats[fit].mean(0), stats[fit].std(0) + 1e-6
            z = (stats - mu) / sd * args.weight  # standardised on the fitting rows only
            feats = {"prefill trunk L5 mean+last": l5, "L5 + surprisal": np.concatenate([l5, z], 1),
                     "surprisal alone": z, "L5 + log tokens": np.concatenate([l5, z[:, -1:]], 1)}
            for n, x in feats.items():
                cfg = TrunkConfig(proj_dim=min(128, x.shape[1]))
                preds[n][q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], cfg).predict(x[q])
                bar.update()
    scorers = harness._scorers_from_predictions(preds, es, fold, {})
    report = ev.evaluate(scorers, es, bootstrap=args.bootstrap, reference="prefill trunk L5 mean+last")
    report["mode"] = {"kind": "cv", "folds": args.folds, "rows": len(ds), "operating_points": "cross-fitted"}
    # how much each statistic alone ranks each target (AUC over all rows; 0.5 = nothing, <0.5 = inverse)
    labels = scores >= 0.5
    report["statistic_auc"] = {s: {t: round(float(roc_auc_score(labels[:, k], -stats[:, i])), 3)
                                   for k, t in enumerate(ds.targets) if 0 < labels[:, k].mean() < 1}
                               for i, s in enumerate(STATS)}
    report["weight"] = args.weight
    report["extract_seconds"] = round(extract_s, 1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    per_stat = "; ".join(f"{s} {np.mean(list(v.values())):.3f}" for s, v in report["statistic_auc"].items())
    write_lever_report(report, args.out, "quality_levers_surprisal", "prefill trunk L5 mean+last",
                       f"({args.folds}-fold CV, {args.bootstrap} resamples; surprisal of all prompts in "
                       f"{report['extract_seconds']} s, total {report['seconds']} s.) Target-mean AUC of each "
                       f"statistic alone (lower surprisal = more likely right): {per_stat}")


if __name__ == "__main__":
    main()
