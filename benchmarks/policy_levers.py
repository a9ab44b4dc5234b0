"""Policy families on the same predictions: tolerance, lambda (costs normalised per request) and value_usd (expected
value minus cost, in USD: the Lagrangian optimum of a total budget).

    python benchmarks/policy_levers.py [--data ../shared/datasets/llmrouter]
        [--oof benchmarks/results/quality_cv/oof_preds.jsonl]

Reads the out-of-fold predictions of the 5-fold cross-validation (`prefill-router evaluate --cv 5`, written by
benchmarks/quality.py: the default L5 trunk) and sweeps each family over them, on the dataset's costs (256 output
tokens a call, so a call's cost varies with its prompt only a little) and on input-only costs (price x prompt tokens:
traffic whose cost is mostly its prompt, e.g. long contexts). Per family: the best accuracy among its settings that
save at least the paper's 74.31% against the most expensive target (and the gap captured there), its top accuracy, and
AIQ (see the evaluation module); the paired difference value_usd - lambda at the paper's savings with a 95% interval
from 300 bootstrap resamples. Writes policy_levers.{json,md,png} under benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("tolerance", "lambda", "value_usd")


def family_choices(p: np.ndarray, cost: np.ndarray, kind: str) -> np.ndarray:
    from litellm_prefill_router.policy import choose_batch
    from litellm_prefill_router.training import evaluation as ev

    if kind == "value_usd":  # values spanning these calls' costs: 1/100 of the cheapest to 1,000 x the dearest
        values = np.geomspace(cost.min() / 100, cost.max() * 1000, 300)
    else:
        values = np.array(ev.TOLERANCES if kind == "tolerance" else ev.LAMBDAS)
    return np.stack([choose_batch(p, cost, kind, float(v)) for v in values])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--oof", default="benchmarks/results/quality_cv/oof_preds.jsonl")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--bootstrap", type=int, default=300)
    args = ap.parse_args()

    from litellm_prefill_router.training import evaluation as ev
    from litellm_prefill_router.training.data import load_dataset

    ds = load_dataset(args.data)
    oof = {r["id"]: r for r in map(json.loads, Path(args.oof).read_text().splitlines())}
    targets = list(ds.targets)
    p = np.array([[oof[r.id]["p_correct"][t] for t in targets] for r in ds.rows])
    dataset_cost = np.array([[oof[r.id]["cost"][t] for t in targets] for r in ds.rows])
    price_in = np.array([ds.prices[t][0] for t in targets])
    prompt_tokens = (dataset_cost[:, 0] - ds.prices[targets[0]][1] * 256) / price_in[0]
    filled = np.nan_to_num(ev.binarize(ds.scores()))
    n = len(p)
    rows = np.arange(n)
    weights = ev.bootstrap_weights(n, args.bootstrap)
    results: dict[str, dict] = {}
    for scenario, cost in (("dataset costs (prompt + 256 answer tokens)", dataset_cost),
                           ("input-only costs (price x prompt tokens)", price_in[None, :] * prompt_tokens[:, None])):
        totals = cost.sum(0)
        x0 = totals.min() / totals.max()
        accs = filled.mean(0)
        best, oracle = accs.max(), filled.max(1).mean()
        out: dict[str, dict] = {"cost_cv": float(cost[:, 0].std() / cost[:, 0].mean())}
        at_paper: dict[str, np.ndarray] = {}
        for kind in FAMILIES:
            ch = family_choices(p, cost, kind)
            acc = filled[rows, ch].mean(-1)
            x = cost[rows, ch].sum(-1) / totals.max()
            ok = 1 - x >= ev.PAPER_SAVINGS
            a = float(acc[ok].max())
            # bootstrap: the best accuracy at >= the paper's savings on each resample
            b_acc = weights @ filled[rows, ch].T / n
            b_x = (weights @ cost[rows, ch].T) / (weights @ cost).max(1, keepdims=True)
            at_paper[kind] = np.where(1 - b_x >= ev.PAPER_SAVINGS, b_acc, -np.inf).max(1)
            out[kind] = {"accuracy_at_paper_savings": a, "gap_at_paper_savings": (a - best) / (oracle - best),
                         "max_accuracy": float(acc.max()), "max_gap": float((acc.max() - best) / (oracle - best)),
                         "aiq": ev.frontier_area(np.r_[x, x0], np.r_[acc, accs[np.argmin(totals)]], x0),
                         "curve": {"x": x.tolist(), "accuracy": acc.tolist()}}
        diff = at_paper["value_usd"] - at_paper["lambda"]
        out["value_minus_lambda_at_paper_savings"] = {
            "accuracy": float(out["value_usd"]["accuracy_at_paper_savings"]
                              - out["lambda"]["accuracy_at_paper_savings"]),
            "ci95": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]}
        results[scenario] = out
        print(f"{scenario} (cost CV across prompts {out['cost_cv']:.2f})")
        for kind in FAMILIES:
            r = out[kind]
            print(f"  {kind:<10} at >=74.31% savings: accuracy {r['accuracy_at_paper_savings']:.4f} gap "
                  f"{r['gap_at_paper_savings']:.3f} | top accuracy {r['max_accuracy']:.4f} | AIQ {r['aiq']:.4f}")
        d = out["value_minus_lambda_at_paper_savings"]
        print(f"  value_usd - lambda at the paper's savings: {d['accuracy']:+.4f} [{d['ci95'][0]:+.4f}, "
              f"{d['ci95'][1]:+.4f}]")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "policy_levers.json").write_text(json.dumps(results, indent=1))
    lines = ["| costs | policy | accuracy @ >= 74.31% savings | gap @ paper savings | top accuracy | AIQ |",
             "|---|---|---|---|---|---|"]
    for scenario, out in results.items():
        for kind in FAMILIES:
            r = out[kind]
            lines.append(f"| {scenario} | {kind} | {r['accuracy_at_paper_savings']:.4f} | "
                         f"{r['gap_at_paper_savings']:.3f} | {r['max_accuracy']:.4f} | {r['aiq']:.4f} |")
    (out_dir / "policy_levers.md").write_text("\n".join(lines) + "\n")
    plot(results, out_dir / "policy_levers.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(12, 4.5), sharey=True)
    for ax, (scenario, out) in zip(axes, results.items()):
        for kind in FAMILIES:
            c = out[kind]["curve"]
            order = np.argsort(c["x"])
            ax.plot(np.array(c["x"])[order], np.array(c["accuracy"])[order], ".", ms=3,
                    label=f"{kind} (AIQ {out[kind]['aiq']:.4f})")
        ax.axvline(1 - 0.7431, color="grey", ls="--", lw=0.8)
        ax.set_title(scenario, fontsize=9)
        ax.set_xlabel("cost / cost of the most expensive target")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("accuracy (5-fold out-of-fold predictions)")
    fig.suptitle("policy families on the same predictions (dashed: the paper's 74.31% savings)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
