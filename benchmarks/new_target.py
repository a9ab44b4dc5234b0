"""Adding a model to the fleet: how good is a new target learned by `train --continue-from` from N labels?

    python benchmarks/new_target.py [--data DIR] [--target qwen2.5-7b-instruct] [--n 250 1000 all]
        [--out benchmarks/results]

1. trains a base bundle on the dataset without ``--target`` (`prefill-router train --targets ...`);
2. for each N and each of ``--draws`` random draws, writes N of the target's training-split labels as `--add` rows
   (as `prefill-router collect` would, with a `<rows>.models.json` price beside them) and runs
   `train --continue-from BASE --add ROWS`;
3. scores every bundle on the test split (served ONNX): the new target's AUC, the old targets' mean AUC, and
   the same numbers for a bundle trained with all targets from the start (`--full-bundle`, default
   bundles/llmrouter).

Writes new_target.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--target", default="qwen2.5-7b-instruct")
    ap.add_argument("--n", nargs="+", default=["250", "1000", "all"])
    ap.add_argument("--draws", type=int, default=3, help="random label subsets per N (one for 'all')")
    ap.add_argument("--full-bundle", default="bundles/llmrouter")
    ap.add_argument("--work", default="/tmp/prefill-new-target")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from litellm_prefill_router.cli import main as cli
    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training.calibrate import auc_per_target
    from litellm_prefill_router.training.data import load_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    if args.target not in ds.targets:
        raise SystemExit(f"--target {args.target!r} is not in the data: {ds.targets}")
    old = [t for t in ds.targets if t != args.target]
    base = work / "base"
    if not (base / "manifest.json").exists():
        assert cli(["train", "--data", args.data, "--out", str(base), "--targets", *old]) == 0
    base_s = sum(json.loads((base / "report.json").read_text())["stage_seconds"].values())
    train_rows = [r for r in ds.rows if r.split == "train" and args.target in r.scores]
    test_rows = [r for r in ds.rows if r.split == "test"]
    y_test = ds.scores(ds.targets)[[ds.rows.index(r) for r in test_rows]]
    price = ds.prices[args.target]

    def score(bundle: Path) -> dict:
        pred = PrefillPredictor(bundle)
        p, _ = pred.predict_many([r.prompt for r in test_rows])
        cols = [ds.targets.index(t) for t in pred.targets]
        auc = auc_per_target(p, y_test[:, cols], pred.targets)
        return {"new_target_auc": auc.get(args.target),
                "old_targets_mean_auc": float(np.nanmean([auc[t] for t in old]))}

    results = []
    for n_arg, draw in [(n, d) for n in args.n for d in range(1 if n == "all" else args.draws)]:
        n = len(train_rows) if n_arg == "all" else int(n_arg)
        order = np.random.default_rng(draw).permutation(len(train_rows))
        rows_path = work / f"add-{n}-{draw}.jsonl"
        with rows_path.open("w") as f:
            for i in order[:n]:
                r = train_rows[i]
                f.write(json.dumps({"id": f"added-{r.id}", "prompt": r.prompt, "benchmark": r.benchmark,
                                    "split": "train", "scores": {args.target: r.scores[args.target]}}) + "\n")
        rows_path.with_suffix(".models.json").write_text(json.dumps(
            {args.target: {"input_cost_per_token": price[0], "output_cost_per_token": price[1]}}))
        out = work / f"bundle-{n}-{draw}"
        t = time.perf_counter()
        assert cli(["train", "--data", args.data, "--targets", *old, "--add", str(rows_path),
                    "--continue-from", str(base), "--out", str(out)]) == 0
        results.append({"labels": n, "draw": draw, "continue_seconds": round(time.perf_counter() - t, 1),
                        **score(out)})
        print(results[-1])
    full = {"labels": "all (trained from the start)", **score(Path(args.full_bundle))}
    base_scores = score(base)
    report = {"target": args.target, "old_targets": old, "test_rows": len(test_rows),
              "base_train_seconds": round(base_s, 1), "base": base_scores, "continued": results, "full": full}
    out_dir = Path(args.out)
    (out_dir / "new_target.json").write_text(json.dumps(report, indent=1))
    lines = [f"| bundle | {args.target} labels | {args.target} test AUC | other 8 targets: mean test AUC | "
             "continue-from s |", "|---|---|---|---|---|",
             f"| base (trained without it) | 0 | - | {base_scores['old_targets_mean_auc']:.3f} | |"]
    for n in dict.fromkeys(r["labels"] for r in results):
        rs = [r for r in results if r["labels"] == n]
        auc = [r["new_target_auc"] for r in rs]
        spread = f" ({min(auc):.3f}-{max(auc):.3f}, {len(rs)} draws)" if len(rs) > 1 else ""
        lines.append(f"| base + `--continue-from` | {n} | {np.mean(auc):.3f}{spread} | "
                     f"{np.mean([r['old_targets_mean_auc'] for r in rs]):.3f} | "
                     f"{', '.join(str(r['continue_seconds']) for r in rs)} |")
    lines.append(f"| trained with all targets ({args.full_bundle}) | all | {full['new_target_auc']:.3f} | "
                 f"{full['old_targets_mean_auc']:.3f} | |")
    text = "\n".join(lines) + "\n"
    (out_dir / "new_target.md").write_text(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["labels"] for r in results], [r["new_target_auc"] for r in results], "o",
            label="continue-from (each draw)")
    ax.axhline(full["new_target_auc"], color="gray", ls="--", label="trained with all targets")
    ax.set_xscale("log")
    ax.set_xlabel(f"{args.target} training labels added")
    ax.set_ylabel("test AUC of the new target")
    ax.set_title("A model added to the fleet with train --continue-from")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "new_target.png", dpi=120)
    print(text)


if __name__ == "__main__":
    main()
