"""Routing metrics on labelled rows: one harness for the prefill router and every baseline.

A *scorer* is either a P(correct) matrix (n, K) that a policy turns into choices (the prefill router,
kNN / logistic / MLP / matrix-factorisation baselines), or a fixed choice per row (random, cheapest, best
single, oracle). All metrics use the dataset's convention: a score >= 0.5 counts as correct.

Definitions (also in the README):

* **oracle accuracy**: mean over prompts of the best score of any target.
* **gap captured**: (router accuracy - best single accuracy) / (oracle - best single accuracy).
* **cost savings**: 1 - router cost / cost of sending everything to the most expensive target (and to the best
  single target).
* **normalised cost** x: total cost / total cost of the most expensive target, in [0, 1].
* **AIQ** (accuracy-cost area): the achievable accuracy-vs-x frontier of a router - the upper concave hull of its
  operating points (tolerance and lambda sweeps) plus the cheapest single target (any router can fall back to
  it; randomly mixing two operating points realises every point on a hull segment), made non-decreasing - averaged
  over x in [x_cheapest, 1]. ``aiq_singles`` is the same construction over the single targets alone (what random
  mixing of fixed models reaches); ``aiq_gain`` = AIQ - aiq_singles is the accuracy a router adds at equal cost,
  averaged over the cost range (P-AUCCC style).
* **APGR / CPT** (RouteLLM): for a strong/weak pair, route to the strong target when p_strong - p_weak exceeds a
  threshold; PGR(c) = (acc - acc_weak) / (acc_strong - acc_weak) at a share c of calls to the strong target.
  APGR = area under PGR over c in [0, 1]; CPT(q) = the smallest share c with PGR >= q.
* **agreement zones**: prompts that every target answers right / that the targets disagree on / that every
  target gets wrong. Routing only matters in the middle zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import PrefillRouterError
from ..policy import choose_batch

TOLERANCES = tuple(float(x) for x in np.round(np.linspace(0.0, 0.5, 51), 3))
LAMBDAS = (0.0,) + tuple(float(x) for x in np.round(np.geomspace(0.01, 20.0, 40), 4))
PAPER_SAVINGS = 0.7431  # arXiv 2603.20895: 45.58% gap captured at 74.31% savings vs the most expensive model
PAPER_GAP = 0.4558
ZONES = ("all right", "disagree", "all wrong")


@dataclass
class Scorer:
    """A router under evaluation: ``p`` (n, K) for policy-driven routers, or ``choice`` (n,) for fixed ones.

    ``operating_points`` maps a name to the choice per row at that setting (computed by the caller, e.g.
    cross-fitted presets); for ``p`` scorers the curve metrics come from the policy sweeps.
    """

    name: str
    p: np.ndarray | None = None
    choice: np.ndarray | None = None
    operating_points: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSet:
    targets: list[str]
    hard: np.ndarray  # (n, K) 0/1 with NaN for missing labels
    cost: np.ndarray  # (n, K) USD
    benchmarks: np.ndarray  # (n,) str
    ids: list[str]

    def __post_init__(self) -> None:
        n, k = self.hard.shape
        if self.cost.shape != (n, k) or len(self.benchmarks) != n or len(self.ids) != n or k != len(self.targets):
            raise ValueError(f"inconsistent shapes: hard {self.hard.shape}, cost {self.cost.shape}, "
                             f"{len(self.benchmarks)} benchmarks, {len(self.ids)} ids, {len(self.targets)} targets")

    def subset(self, rows: np.ndarray) -> EvalSet:
        """The rows selected by a boolean mask or an index array."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows
        return EvalSet(self.targets, self.hard[idx], self.cost[idx], self.benchmarks[idx], [self.ids[i] for i in idx])

    @cached_property
    def filled(self) -> np.ndarray:
        return np.nan_to_num(self.hard, nan=0.0)

    @cached_property
    def totals(self) -> np.ndarray:
        return self.cost.sum(0)

    def zones(self) -> np.ndarray:
        known = ~np.isnan(self.hard)
        right = (np.nan_to_num(self.hard) >= 0.5) & known
        allr = right.sum(1) == known.sum(1)
        allw = right.sum(1) == 0
        return np.where(allr, 0, np.where(allw, 2, 1))


def binarize(scores: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(scores), np.nan, (scores >= 0.5).astype(np.float64))


def sweep_choices(p: np.ndarray, cost: np.ndarray) -> tuple[list[tuple[str, float]], np.ndarray]:
    """Choices (S, n) for every tolerance and lambda setting."""
    settings = [("tolerance", t) for t in TOLERANCES] + [("lambda", lam) for lam in LAMBDAS]
    return settings, np.stack([choose_batch(p, cost, k, v) for k, v in settings])


def _points(choices: np.ndarray, es: EvalSet, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and total cost of each choice row; ``weights`` (B, n) gives bootstrap replicates (B, S)."""
    rows = np.arange(choices.shape[-1])
    s = es.filled[rows, choices]  # (S, n)
    c = es.cost[rows, choices]
    if weights is None:
        return s.mean(-1), c.sum(-1)
    n = choices.shape[-1]
    return weights @ s.T / n, weights @ c.T


def frontier_area(x: np.ndarray, y: np.ndarray, x0: float, x1: float = 1.0) -> float:
    """Mean over [x0, x1] of the non-decreasing upper concave hull of the points (x, y).

    Flat beyond the last point; below the cheapest point the cheapest point's accuracy (callers include the
    cheapest single target, whose normalised cost is x0, so this only guards rounding).
    """
    order = np.lexsort((-y, x))
    hull: list[tuple[float, float]] = []
    for px, py in zip(x[order], y[order]):
        if hull and px == hull[-1][0]:
            continue  # same cost, lower accuracy
        while len(hull) >= 2:
            (ax, ay), (bx, by) = hull[-2], hull[-1]
            if (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0:  # b lies on or below the chord a -> p
                hull.pop()
            else:
                break
        hull.append((float(px), float(py)))
    hx = np.array([h[0] for h in hull])
    hy = np.maximum.accumulate(np.array([h[1] for h in hull]))
    grid = np.linspace(x0, x1, 401)
    return float(np.interp(grid, hx, hy, left=hy[0], right=hy[-1]).mean())


def roc_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted Mann-Whitney AUC (ties count one half); ``w`` are bootstrap multiplicities. NaN for one class."""
    w = np.ones_like(p, dtype=np.float64) if w is None else w
    order = np.argsort(p, kind="mergesort")
    p, y, w = p[order], y[order], w[order]
    pos, neg = (w * y).sum(), (w * (1 - y)).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    _, start = np.unique(p, return_index=True)
    ends = np.r_[start[1:], len(p)]
    neg_cum = np.r_[0.0, np.cumsum(w * (1 - y))]
    below, tied = neg_cum[start], neg_cum[ends] - neg_cum[start]
    credit = np.repeat(below + tied / 2.0, ends - start)
    return float((w * y * credit).sum() / (pos * neg))


def auc_brier(p: np.ndarray, es: EvalSet, w: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    auc, brier = {}, {}
    for j, t in enumerate(es.targets):
        ok = ~np.isnan(es.hard[:, j])
        ww = None if w is None else w[ok]
        auc[t] = roc_auc(es.hard[ok, j], p[ok, j], ww)
        err = (p[ok, j] - es.hard[ok, j]) ** 2
        brier[t] = float(err.mean() if ww is None else (err * ww).sum() / max(ww.sum(), 1e-12))
    return auc, brier


def pair_metrics(p: np.ndarray, es: EvalSet, strong: int, weak: int) -> dict[str, Any]:
    """RouteLLM's APGR and CPT(50%/80%) for routing between two targets by p_strong - p_weak."""
    d = p[:, strong] - p[:, weak]
    order = np.argsort(-d, kind="mergesort")  # the first m rows go to the strong target
    s_strong, s_weak = es.filled[:, strong], es.filled[:, weak]
    n = len(d)
    gain = np.r_[0.0, np.cumsum((s_strong - s_weak)[order])]
    acc = (s_weak.sum() + gain) / n  # accuracy when m = 0..n calls go to the strong target
    a_w, a_s = s_weak.mean(), s_strong.mean()
    share = np.arange(n + 1) / n
    if a_s - a_w <= 1e-12:
        return {"strong": es.targets[strong], "weak": es.targets[weak], "note": "strong is not better than weak",
                "apgr": float("nan"), "cpt50": float("nan"), "cpt80": float("nan")}
    pgr = (acc - a_w) / (a_s - a_w)

    def cpt(q: float) -> float:
        hit = np.flatnonzero(pgr >= q)
        return float(share[hit[0]]) if len(hit) else float("nan")

    return {"strong": es.targets[strong], "weak": es.targets[weak], "strong_accuracy": float(a_s),
            "weak_accuracy": float(a_w), "apgr": float(np.trapezoid(pgr, share)), "cpt50": cpt(0.5),
            "cpt80": cpt(0.8)}


def point_metrics(choice: np.ndarray, es: EvalSet) -> dict[str, Any]:
    rows = np.arange(len(choice))
    acc = float(es.filled[rows, choice].mean())
    cost = float(es.cost[rows, choice].sum())
    oracle = float(es.filled.max(1).mean())
    accs = np.nanmean(es.hard, 0)
    best = int(np.argmax(accs))
    totals = es.totals
    zones = es.zones()
    by_zone = {}
    for z, name in enumerate(ZONES):
        m = zones == z
        by_zone[name] = {"n": int(m.sum()),
                         "accuracy": float(es.filled[rows[m], choice[m]].mean()) if m.any() else float("nan"),
                         "cost_share": float(es.cost[rows[m], choice[m]].sum() / max(cost, 1e-300))}
    return {"accuracy": acc, "cost": cost, "normalised_cost": cost / totals.max(),
            "gap_captured": (acc - accs[best]) / max(oracle - accs[best], 1e-12),
            "savings_vs_most_expensive": 1 - cost / totals.max(), "savings_vs_best_single": 1 - cost / totals[best],
            "routing": {t: int(c) for t, c in zip(es.targets, np.bincount(choice, minlength=len(es.targets)))},
            "zones": by_zone}


def _quantiles(v: np.ndarray) -> list[float]:
    v = v[np.isfinite(v)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [float("nan")] * 2


def bootstrap_weights(n: int, b: int, seed: int = 0) -> np.ndarray:
    """(b, n) resample multiplicities: the same matrix for every scorer makes the intervals paired."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)


@dataclass
class ScorerResult:
    metrics: dict[str, Any]
    replicates: dict[str, np.ndarray]  # metric name -> (B,) bootstrap values, for paired differences


def evaluate_scorer(sc: Scorer, es: EvalSet, weights: np.ndarray, pair: tuple[int, int] | None = None,
                    auc_replicates: int = 200) -> ScorerResult:
    totals = es.totals
    x_max = totals.max()
    cheapest = int(np.argmin(totals))
    n = len(es.ids)
    oracle_b = weights @ es.filled.max(1) / n
    accs = np.nanmean(es.hard, 0)
    best = int(np.argmax(accs))
    best_b = weights @ es.filled[:, best] / n
    out: dict[str, Any] = {"name": sc.name, "settings": sc.settings}
    reps: dict[str, np.ndarray] = {}
    ops = dict(sc.operating_points)
    if sc.choice is not None:
        ops = {"fixed": sc.choice, **ops}
    if sc.p is not None:
        settings, ch = sweep_choices(sc.p, es.cost)
        acc, cst = _points(ch, es)
        out["curve"] = [{"kind": k, "value": v, "accuracy": float(a), "cost": float(c),
                         "normalised_cost": float(c / x_max)} for (k, v), a, c in zip(settings, acc, cst)]
        x = np.r_[cst, totals[cheapest]] / x_max
        y = np.r_[acc, accs[cheapest]]
        x0 = totals.min() / x_max
        out["aiq"] = frontier_area(x, y, x0)
        acc_b, cst_b = _points(ch, es, weights)
        cheap_b = weights @ es.filled[:, cheapest] / n
        reps["aiq"] = np.array([frontier_area(np.r_[cst_b[i], totals[cheapest]] / x_max, np.r_[acc_b[i], cheap_b[i]],
                                              x0) for i in range(len(weights))])
        # best accuracy on the curve at >= the paper's savings (read off this curve: an upper bound)
        ok = cst / x_max <= 1 - PAPER_SAVINGS
        gap_den = es.filled.max(1).mean() - accs[best]
        out["curve_best_gap"] = float((acc.max() - accs[best]) / gap_den)
        ok_acc = acc >= accs[best] - 1e-12
        out["curve_savings_at_best_single_accuracy"] = float(1 - cst[ok_acc].min() / x_max) if ok_acc.any() else None
        out["curve_best_gap_at_paper_savings"] = (
            float((acc[ok].max() - accs[best]) / (es.filled.max(1).mean() - accs[best])) if ok.any() else None)
        auc, brier = auc_brier(sc.p, es)
        out["auc"], out["brier"] = auc, brier
        out["mean_auc"] = float(np.nanmean(list(auc.values())))
        out["mean_brier"] = float(np.nanmean(list(brier.values())))
        reps["mean_auc"] = np.array([np.nanmean(list(auc_brier(sc.p, es, weights[i])[0].values()))
                                     for i in range(min(auc_replicates, len(weights)))])
        if pair is not None:
            out["pair"] = pair_metrics(sc.p, es, *pair)
    out["operating_points"] = {}
    for name, choice in ops.items():
        m = point_metrics(choice, es)
        a_b, c_b = _points(choice[None, :], es, weights)
        a_b, c_b = a_b[:, 0], c_b[:, 0]
        gap_b = (a_b - best_b) / np.maximum(oracle_b - best_b, 1e-12)
        reps[f"{name}/accuracy"], reps[f"{name}/gap_captured"] = a_b, gap_b
        m["ci95"] = {"accuracy": _quantiles(a_b), "gap_captured": _quantiles(gap_b),
                     "savings_vs_most_expensive": _quantiles(1 - c_b / (weights @ es.cost[:, int(np.argmax(totals))]))}
        out["operating_points"][name] = m
    for k, v in reps.items():
        if k in ("aiq", "mean_auc"):
            out.setdefault("ci95", {})[k] = _quantiles(v)
    return ScorerResult(out, reps)


def singles_table(es: EvalSet) -> list[dict[str, Any]]:
    totals = es.totals
    return [{"target": t, "accuracy": float(np.nanmean(es.hard[:, j])), "cost": float(totals[j]),
             "normalised_cost": float(totals[j] / totals.max())} for j, t in enumerate(es.targets)]


def evaluate(scorers: Sequence[Scorer], es: EvalSet, *, bootstrap: int = 1000, pair: tuple[str, str] | None = None,
             reference: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Metrics for every scorer on the same rows and the same bootstrap resamples.

    ``pair`` = (strong, weak) target names for APGR/CPT (default: the most accurate and the cheapest target).
    ``reference`` names the scorer that paired differences are computed against (default: the first p scorer).
    """
    totals = es.totals
    accs = np.nanmean(es.hard, 0)
    if pair is None:
        strong, weak = int(np.argmax(accs)), int(np.argmin(totals))
    else:
        missing = [t for t in pair if t not in es.targets]
        if missing:
            raise PrefillRouterError(f"--pair names unknown targets {missing}; targets are {es.targets}")
        strong, weak = es.targets.index(pair[0]), es.targets.index(pair[1])
    weights = bootstrap_weights(len(es.ids), bootstrap, seed)
    results = {sc.name: evaluate_scorer(sc, es, weights, (strong, weak)) for sc in scorers}
    x_s = totals / totals.max()
    ref = reference or next((s.name for s in scorers if s.p is not None), None)
    paired: dict[str, dict[str, Any]] = {}
    if ref is not None:
        for name, r in results.items():
            if name == ref:
                continue
            diffs = {}
            for k, v in r.replicates.items():
                rv = results[ref].replicates.get(k)
                if rv is not None and len(rv) == len(v):
                    d = rv - v
                    diffs[k] = {"difference": float(np.nanmean(d)), "ci95": _quantiles(d),
                                "p_reference_not_better": float(np.mean(d <= 0))}
            if diffs:
                paired[name] = diffs
    zones = es.zones()
    return {
        "n": len(es.ids), "targets": es.targets, "singles": singles_table(es),
        "oracle_accuracy": float(es.filled.max(1).mean()),
        "best_single": {"target": es.targets[int(np.argmax(accs))], "accuracy": float(accs.max())},
        "most_expensive": es.targets[int(np.argmax(totals))], "cheapest": es.targets[int(np.argmin(totals))],
        "aiq_singles": frontier_area(x_s, accs, float(x_s.min())),
        "zones": {name: int((zones == z).sum()) for z, name in enumerate(ZONES)},
        "benchmarks": {b: int(c) for b, c in zip(*np.unique(es.benchmarks, return_counts=True))},
        "bootstrap": bootstrap, "pair": {"strong": es.targets[strong], "weak": es.targets[weak]},
        "paper": {"gap_captured": PAPER_GAP, "savings_vs_most_expensive": PAPER_SAVINGS},
        "reference": ref, "paired_vs_reference": paired,
        "scorers": {k: v.metrics for k, v in results.items()},
    }


def per_benchmark(p: np.ndarray, choice: np.ndarray, es: EvalSet) -> list[dict[str, Any]]:
    """Where the router wins or loses: per benchmark accuracy, oracle, best single and mean AUC."""
    out = []
    rows = np.arange(len(choice))
    for b in sorted(set(es.benchmarks.tolist())):
        m = es.benchmarks == b
        sub = es.subset(m)
        auc, _ = auc_brier(p[m], sub)
        accs = np.nanmean(sub.hard, 0)
        out.append({"benchmark": b, "n": int(m.sum()), "router_accuracy": float(es.filled[rows[m], choice[m]].mean()),
                    "best_single_accuracy": float(np.nanmax(accs)), "best_single": es.targets[int(np.nanargmax(accs))],
                    "oracle_accuracy": float(sub.filled.max(1).mean()),
                    "mean_auc": float(np.nanmean(list(auc.values()))) if np.isfinite(list(auc.values())).any()
                    else float("nan")})
    return out


def choose_on_reference(p_ref: np.ndarray, es_ref: EvalSet, p_eval: np.ndarray, cost_eval: np.ndarray,
                        best_single_accuracy: float | None = None) -> dict[str, np.ndarray]:
    """Operating points picked on reference rows (other folds / validation) and applied to the evaluation rows.

    * ``max-quality``: tolerance 0.
    * ``match-best-single``: the cheapest sweep setting whose reference accuracy >= the best single target's.
    * ``paper-savings``: the most accurate setting whose reference savings vs the most expensive target are
      >= the paper's 74.31%.
    * ``balanced``: the setting maximising normalised accuracy minus normalised cost on the reference rows.
    """
    settings, ch = sweep_choices(p_ref, es_ref.cost)
    acc, cst = _points(ch, es_ref)
    sav = 1 - cst / es_ref.totals.max()
    best = float(np.nanmax(np.nanmean(es_ref.hard, 0))) if best_single_accuracy is None else best_single_accuracy
    picks: dict[str, int] = {"max-quality": 0}
    ok = np.flatnonzero(acc >= best - 1e-12)
    picks["match-best-single"] = int(ok[np.argmin(cst[ok])]) if len(ok) else 0
    ok = np.flatnonzero(sav >= PAPER_SAVINGS)
    picks["paper-savings"] = int(ok[np.argmax(acc[ok])]) if len(ok) else int(np.argmin(cst))
    span_a, span_c = max(np.ptp(acc), 1e-12), max(np.ptp(cst), 1e-12)
    picks["balanced"] = int(np.argmax((acc - acc.min()) / span_a - (cst - cst.min()) / span_c))
    return {name: choose_batch(p_eval, cost_eval, *settings[i]) for name, i in picks.items()}


def fixed_baselines(es: EvalSet, best: np.ndarray, chosen_on: str, seed: int = 0) -> list[Scorer]:
    """random / cheapest / best single (``best``: the target per row, picked on other rows - ``chosen_on`` says
    which) / oracle (cheapest correct target)."""
    n, k = es.hard.shape
    cheapest = es.cost.argmin(1)
    right = es.filled >= 0.5
    oracle = np.where(right.any(1), np.where(right, es.cost, np.inf).argmin(1), cheapest)
    return [Scorer("random", choice=np.asarray(np.random.default_rng(seed).integers(0, k, n))),
            Scorer("cheapest", choice=cheapest),
            Scorer("best single", choice=best, settings={"chosen_on": chosen_on}),
            Scorer("oracle", choice=oracle)]
