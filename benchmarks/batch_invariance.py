"""Do routes depend on which requests share a batch? Encoder batching modes compared in one run.

    python benchmarks/batch_invariance.py --bundle bundles/llmrouter --data ../shared/datasets/llmrouter \
        [--fp32-bundle /tmp/b32] [--split test] [--out benchmarks/results]

For each mode, every prompt of the split is predicted alone (one prompt per call: the reference) and in the
runtime's batched path (`predict_many`, chunks of 64, encoder calls grouped by length). It reports how far
the batched probabilities move from the solo ones (mean, p99, max |dp|, share of prompts whose argmax target
changes), the batched throughput, 64 concurrent `predict_one` calls (the split's first 64 prompts) per second, and the
mean test AUC.
Modes: the int8 bundle with one prompt per encoder call (the default for int8 bundles), the same bundle with
16 prompts per call (the behaviour before), and optionally an fp32 bundle of the same training run batched 16.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def concurrent_rps(pred, prompts: list[str]) -> float:
    out: list[object] = []
    threads = [threading.Thread(target=lambda p=p: out.append(pred.predict_one(p))) for p in prompts]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(out) == len(prompts)
    return len(prompts) / (time.perf_counter() - t0)


def measure(name: str, pred, prompts: list, scores: np.ndarray, targets: list[str]) -> dict:
    from tqdm.auto import tqdm

    from litellm_prefill_router.training.calibrate import auc_per_target

    enc = pred.encode(prompts)
    t0 = time.perf_counter()
    solo = np.stack([pred.probabilities_for_ids([e.ids])[0] for e in tqdm(enc, desc=f"{name}: solo")])
    solo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched, _ = pred.predict_many(prompts)
    batched_s = time.perf_counter() - t0
    d = np.abs(batched - solo)
    return {
        "mode": name, "max_encoder_batch_size": pred.max_encoder_batch_size, "prompts": len(prompts),
        "dp_mean": float(d.mean()), "dp_p99": float(np.percentile(d, 99)), "dp_max": float(d.max()),
        "argmax_changed": float((batched.argmax(1) != solo.argmax(1)).mean()),
        "solo_routes_per_s": len(prompts) / solo_s, "batched_routes_per_s": len(prompts) / batched_s,
        "concurrent_64_per_s": concurrent_rps(pred, list(prompts[:64])),
        "concurrent_64_mean_tokens": float(np.mean([len(e.ids) for e in enc[:64]])),
        "auc_batched": float(np.nanmean(list(auc_per_target(batched, scores, targets).values()))),
        "auc_solo": float(np.nanmean(list(auc_per_target(solo, scores, targets).values()))),
        "solo_p": solo,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--fp32-bundle", default=None, help="an fp32 bundle (train --no-quantize) to compare with")
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training.data import load_dataset

    ds = load_dataset(args.data)
    modes = [("int8, 1 prompt/encoder call (default)", args.bundle, None),
             ("int8, 16 prompts/encoder call (before)", args.bundle, 16)]
    if args.fp32_bundle:
        modes.append(("fp32, 16 prompts/encoder call", args.fp32_bundle, None))
    rows = []
    for name, bundle, enc_batch in modes:
        pred = PrefillPredictor(bundle, max_batch_size=16, max_encoder_batch_size=enc_batch)
        pred.predict(["warm-up"])
        idx = ds.indices(args.split)
        rows.append(measure(name, pred, [ds.rows[i].prompt for i in idx], ds.scores(pred.targets)[idx],
                            pred.targets))
    ref = rows[0].pop("solo_p")
    for r in rows[1:]:
        p = r.pop("solo_p")
        r["solo_vs_default_dp_mean"] = float(np.abs(p - ref).mean())
        r["solo_vs_default_argmax_changed"] = float((p.argmax(1) != ref.argmax(1)).mean())
    hdr = ["mode", "mean |dp|", "p99 |dp|", "max |dp|", "argmax changed", "batched routes/s",
           "64 concurrent/s", "solo routes/s", "test AUC"]
    print(" | ".join(hdr))
    for r in rows:
        print(f"{r['mode']} | {r['dp_mean']:.4f} | {r['dp_p99']:.4f} | {r['dp_max']:.4f} | {r['argmax_changed']:.1%} | "
              f"{r['batched_routes_per_s']:.1f} | {r['concurrent_64_per_s']:.1f} | {r['solo_routes_per_s']:.1f} | "
              f"{r['auc_batched']:.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_invariance.json").write_text(json.dumps({"bundle": args.bundle, "fp32_bundle": args.fp32_bundle,
                                                           "split": args.split, "rows": rows}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["mode"].replace(", ", "\n").replace(" (", "\n(") for r in rows]
    a1.bar(names, [100 * r["argmax_changed"] for r in rows], color="tab:red")
    a1.set_ylabel("% prompts whose top target depends on the batch")
    xs = np.arange(len(rows))
    a2.bar(xs - 0.2, [r["batched_routes_per_s"] for r in rows], 0.4, label="batched (predict_many)")
    a2.bar(xs + 0.2, [r["concurrent_64_per_s"] for r in rows], 0.4, label="64 concurrent predict_one")
    a2.set_xticks(xs, names)
    a2.set_ylabel("routes / s")
    a2.legend()
    for a in (a1, a2):
        a.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"batch dependence and throughput, {args.split} split ({rows[0]['prompts']} prompts)")
    fig.tight_layout()
    fig.savefig(out / "batch_invariance.png", dpi=120)
    print(f"wrote {out / 'batch_invariance.json'} and .png")


if __name__ == "__main__":
    main()
