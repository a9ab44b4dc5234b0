"""Policy calibration and routing metrics on labelled rows.

Presets (stored in the manifest), computed on validation rows from the tolerance sweep:

* ``max-quality``: tau = 0 (the most likely target; the cheapest among exact ties).
* ``match-best-single``: the cheapest tau whose accuracy is at least the best single target's.
* ``balanced``: the tau maximising normalised accuracy minus normalised cost over the sweep.
* ``min-cost``: the cheapest tau whose accuracy is at least the cheapest single target's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..policy import choose_batch

TOLERANCES = tuple(float(x) for x in np.round(np.linspace(0.0, 0.5, 51), 3))


def fill_unlabelled(scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``scores`` with each missing cell (NaN: that target was not run on that prompt, e.g. a model added to the
    fleet and labelled on a few prompts only) replaced by the model's predicted P(correct) for it - the expected
    score of sending the prompt there. Counting such cells as wrong would bias the presets against sparsely
    labelled targets; leaving them out would compare targets on different prompts."""
    return np.where(np.isnan(scores), p, scores)


def routed(p: np.ndarray, cost: np.ndarray, scores: np.ndarray, kind: str, value: float) -> dict[str, Any]:
    choice = choose_batch(p, cost, kind, value)
    rows = np.arange(len(choice))
    s = np.nan_to_num(scores[rows, choice], nan=0.0)
    return {"kind": kind, "value": value, "accuracy": float(s.mean()), "cost": float(cost[rows, choice].sum()),
            "choice_counts": np.bincount(choice, minlength=p.shape[1]).tolist()}


def singles(cost: np.ndarray, scores: np.ndarray, targets: Sequence[str]) -> list[dict[str, Any]]:
    return [{"target": t, "accuracy": float(np.nanmean(scores[:, j])), "cost": float(cost[:, j].sum())}
            for j, t in enumerate(targets)]


def sweep(p: np.ndarray, cost: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    return [routed(p, cost, scores, "tolerance", t) for t in TOLERANCES]


def presets_from_sweep(curve: list[dict[str, Any]], single: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    best_single = max(single, key=lambda s: s["accuracy"])
    cheapest = min(single, key=lambda s: s["cost"])
    acc = np.array([c["accuracy"] for c in curve])
    cst = np.array([c["cost"] for c in curve])

    def cheapest_with(min_acc: float) -> dict[str, Any]:
        ok = [c for c in curve if c["accuracy"] >= min_acc - 1e-12]
        return min(ok, key=lambda c: (c["cost"], -c["accuracy"])) if ok else curve[0]

    span_a = max(acc.max() - acc.min(), 1e-12)
    span_c = max(cst.max() - cst.min(), 1e-12)
    knee = curve[int(np.argmax((acc - acc.min()) / span_a - (cst - cst.min()) / span_c))]
    out = {
        "max-quality": (curve[0], "the most likely target (tau = 0)"),
        "balanced": (knee, "best normalised accuracy minus normalised cost on validation"),
        "match-best-single": (cheapest_with(best_single["accuracy"]),
                              f"cheapest setting with validation accuracy >= best single ({best_single['target']})"),
        "min-cost": (cheapest_with(cheapest["accuracy"]),
                     f"cheapest setting with validation accuracy >= the cheapest target ({cheapest['target']})"),
    }
    return {name: {"kind": c["kind"], "value": c["value"], "description": d,
                   "validation_accuracy": c["accuracy"], "validation_cost": c["cost"]}
            for name, (c, d) in out.items()}


def gap_metrics(router_acc: float, router_cost: float, scores: np.ndarray, cost: np.ndarray) -> dict[str, float]:
    """Gap captured (router - best single)/(oracle - best single) and cost savings."""
    oracle = float(np.nanmax(np.nan_to_num(scores, nan=0.0), axis=1).mean())
    accs = np.nanmean(scores, axis=0)
    best = int(np.argmax(accs))
    totals = cost.sum(0)
    gap = (router_acc - accs[best]) / max(oracle - accs[best], 1e-12)
    return {"oracle_accuracy": oracle, "best_single_accuracy": float(accs[best]), "router_accuracy": router_acc,
            "gap_captured": float(gap), "savings_vs_most_expensive": float(1 - router_cost / totals.max()),
            "savings_vs_best_single": float(1 - router_cost / totals[best])}


def auc_per_target(p: np.ndarray, scores: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {}
    for j, t in enumerate(targets):
        ok = ~np.isnan(scores[:, j])
        y = (scores[ok, j] >= 0.5).astype(int)
        out[t] = float(roc_auc_score(y, p[ok, j])) if 0 < y.sum() < len(y) else float("nan")
    return out


def plot_curve(curve: list[dict[str, Any]], single: list[dict[str, Any]], oracle: float, path: str,
               presets: dict[str, dict[str, Any]] | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot([c["cost"] for c in curve], [c["accuracy"] for c in curve], "-o", ms=3, label="prefill router (tau sweep)")
    for s in single:
        ax.scatter(s["cost"], s["accuracy"], marker="s")
        ax.annotate(s["target"], (s["cost"], s["accuracy"]), fontsize=7)
    ax.axhline(oracle, color="g", ls=":", label=f"oracle {oracle:.3f}")
    for name, pr in (presets or {}).items():
        c = next((c for c in curve if c["value"] == pr["value"]), None)
        if c:
            ax.scatter(c["cost"], c["accuracy"], marker="*", s=120, zorder=5)
            ax.annotate(name, (c["cost"], c["accuracy"]), fontsize=8, xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("total cost (USD)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
