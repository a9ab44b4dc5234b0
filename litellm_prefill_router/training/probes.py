"""Layer probes: Fisher separability J, effective dimensionality d_eff, cross-validated AUC.

Definitions (per layer x pooling x target, on the training rows that have a label):

* Features are standardised (z-scored per dimension), then projected on their top
  ``k`` principal components (k = 32 by default).
* **Fisher separability** J = dmu^T S_w^-1 dmu, the two-class Fisher criterion in that
  PCA subspace, where dmu is the difference of the class means (label >= 0.5 vs < 0.5)
  and S_w the pooled within-class covariance with shrinkage
  S_w <- (1 - a) S_w + a * tr(S_w)/k * I, a = 0.1.
* **d_eff** = (sum lambda_i)^2 / sum lambda_i^2, the participation ratio of the spectrum
  of the standardised features' covariance (per layer x pooling; it does not depend on the target).
* **AUC**: ``folds``-fold stratified cross-validated logistic regression (C = 1) on the
  PCA features, ROC AUC of the out-of-fold scores.

Selection rule: each (layer, pooling) is scored by its AUC averaged over targets;
the chosen one is the *shallowest* layer whose mean AUC is within ``max_auc_loss``
of the best (ties: the better AUC), since depth costs latency at serving time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import FeatureCache

logger = logging.getLogger(__name__)

POOLING_CHOICES: tuple[tuple[str, ...], ...] = (("mean",), ("last",), ("mean", "last"))


def standardise(x: np.ndarray) -> np.ndarray:
    mu = x.mean(0)
    sd = x.std(0)
    return (x - mu) / np.where(sd < 1e-6, 1.0, sd)


def pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(projected x, eigenvalues of the full covariance) for centred x."""
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s**2 / max(len(x) - 1, 1)
    k = min(k, vt.shape[0])
    return xc @ vt[:k].T, eig


def participation_ratio(eig: np.ndarray) -> float:
    eig = np.clip(eig, 0, None)
    return float(eig.sum() ** 2 / max((eig**2).sum(), 1e-30))


def fisher_j(z: np.ndarray, y: np.ndarray, shrinkage: float = 0.1) -> float:
    pos, neg = z[y >= 0.5], z[y < 0.5]
    if len(pos) < 2 or len(neg) < 2:
        return float("nan")
    dmu = pos.mean(0) - neg.mean(0)
    sw = (np.cov(pos, rowvar=False) * (len(pos) - 1) + np.cov(neg, rowvar=False) * (len(neg) - 1)) / (len(z) - 2)
    sw = np.atleast_2d(sw)
    k = sw.shape[0]
    sw = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / k * np.eye(k)
    return float(dmu @ np.linalg.solve(sw, dmu))


def cv_auc(z: np.ndarray, y: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    yb = (y >= 0.5).astype(int)
    if yb.min() == yb.max() or min(yb.sum(), len(yb) - yb.sum()) < folds:
        return float("nan")
    oof = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(z, yb):
        clf = LogisticRegression(C=1.0, max_iter=500)
        clf.fit(z[tr], yb[tr])
        oof[te] = clf.decision_function(z[te])
    return float(roc_auc_score(yb, oof))


@dataclass
class ProbeResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per layer x pooling x target
    summary: list[dict[str, Any]] = field(default_factory=list)  # one per layer x pooling
    forward_ms_by_depth: dict[int, float] = field(default_factory=dict)
    selected: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "summary": self.summary, "forward_ms_by_depth": self.forward_ms_by_depth,
                "selected": self.selected}


def run_probes(
    cache: FeatureCache,
    scores: np.ndarray,
    targets: Sequence[str],
    rows: np.ndarray,
    *,
    layers: Sequence[int] | None = None,
    poolings: Sequence[tuple[str, ...]] = POOLING_CHOICES,
    k: int = 32,
    folds: int = 3,
    max_rows: int = 4000,
    progress: bool = True,
) -> ProbeResult:
    from tqdm.auto import tqdm

    rng = np.random.default_rng(0)
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, max_rows, replace=False))
    layers = list(layers or range(1, cache.num_layers + 1))
    res = ProbeResult()
    bar = tqdm(total=len(layers) * len(poolings), desc="layer probes", unit="probe", disable=not progress)
    for layer in layers:
        for pool in poolings:
            x = standardise(cache.select([layer], pool, rows))
            z, eig = pca(x, k)
            d_eff = participation_ratio(eig)
            aucs, js = [], []
            for t_i, t in enumerate(targets):
                y = scores[rows, t_i]
                ok = ~np.isnan(y)
                j = fisher_j(z[ok], y[ok])
                auc = cv_auc(z[ok], y[ok], folds)
                js.append(j)
                aucs.append(auc)
                res.rows.append({"layer": layer, "pooling": "+".join(pool), "target": t, "fisher_j": j,
                                 "d_eff": d_eff, "auc": auc})
            res.summary.append({"layer": layer, "pooling": "+".join(pool), "d_eff": d_eff,
                                "fisher_j": float(np.nanmean(js)), "auc": float(np.nanmean(aucs))})
            bar.update(1)
    bar.close()
    return res


def select_layer(res: ProbeResult, max_auc_loss: float = 0.005) -> dict[str, Any]:
    """Apply the selection rule (see module doc) and report J-vs-AUC agreement."""
    best = max(res.summary, key=lambda r: r["auc"])
    ok = [r for r in res.summary if r["auc"] >= best["auc"] - max_auc_loss]
    chosen = min(ok, key=lambda r: (r["layer"], -r["auc"]))
    # per target: does the layer with the best J match the layer with the best AUC?
    matches, total = 0, 0
    for t in sorted({r["target"] for r in res.rows}):
        for pool in sorted({r["pooling"] for r in res.rows}):
            rs = [r for r in res.rows if r["target"] == t and r["pooling"] == pool and not np.isnan(r["auc"])]
            if not rs:
                continue
            total += 1
            bj = max(rs, key=lambda r: r["fisher_j"])["layer"]
            ba = max(rs, key=lambda r: r["auc"])["layer"]
            matches += int(abs(bj - ba) <= 1)
    j_best = max(res.summary, key=lambda r: r["fisher_j"])
    sel = {
        "layer": chosen["layer"], "pooling": chosen["pooling"].split("+"), "auc": chosen["auc"],
        "best_auc_layer": best["layer"], "best_auc_pooling": best["pooling"], "best_auc": best["auc"],
        "best_j_layer": j_best["layer"], "max_auc_loss": max_auc_loss,
        "j_matches_auc_within_one_layer": f"{matches}/{total}",
        "rule": "shallowest layer whose target-mean CV AUC is within max_auc_loss of the best",
    }
    res.selected = sel
    return sel


def plot_probes(res: ProbeResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for pool in sorted({r["pooling"] for r in res.summary}):
        rs = sorted([r for r in res.summary if r["pooling"] == pool], key=lambda r: r["layer"])
        xs = [r["layer"] for r in rs]
        for ax, key in zip(axes, ("fisher_j", "d_eff", "auc")):
            ax.plot(xs, [r[key] for r in rs], marker="o", ms=3, label=pool)
    for ax, title in zip(axes, ("Fisher separability J (mean over targets)", "effective dimensionality d_eff",
                                "CV logistic AUC (mean over targets)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer (depth)")
        ax.grid(alpha=0.3)
    if res.selected:
        axes[2].axvline(res.selected["layer"], color="k", ls="--", lw=1, label=f"selected L{res.selected['layer']}")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
