"""The report of ``prefill-router evaluate`` (and of the quality benchmarks): ``report.md`` (tables: every router's
AUC, AIQ and operating points, paired differences, per benchmark, single targets), ``curve.png`` (accuracy against
cost, every router, the single targets, the oracle and the paper's operating point), ``metrics.json`` and the
reference router's predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonl import write_predictions
from . import evaluation as ev


def _ci(v: Sequence[float] | None) -> str:
    return "" if not v or any(x != x for x in v) else f" [{v[0]:.3f}, {v[1]:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    mode = report["mode"]
    head = (f"{mode['folds']}-fold cross-validation over {mode['rows']} rows" if mode["kind"] == "cv"
            else f"split `{mode['split']}` ({mode['rows']} rows), bundle `{mode['bundle']}`")
    lines = [f"# Routing evaluation: {head}", "",
             f"Oracle accuracy {report['oracle_accuracy']:.3f}; best single {report['best_single']['target']} "
             f"{report['best_single']['accuracy']:.3f}; most expensive {report['most_expensive']}; cheapest "
             f"{report['cheapest']}. Zones: " + ", ".join(f"{k} {v}" for k, v in report["zones"].items()) +
             f". Operating points: {mode['operating_points']}. 95% intervals from {report['bootstrap']} bootstrap "
             "resamples of the rows (the same resamples for every router, so differences are paired).", "",
             "| router | mean AUC | Brier | AIQ | acc @ max-quality | gap @ max-quality | acc @ paper-savings "
             "| gap @ paper-savings | savings @ paper-savings | savings @ match-best-single "
             "| curve: best gap at >= 74.31% savings |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["scorers"].items():
        ops = s["operating_points"]
        ci = s.get("ci95", {})

        def op(o: str, key: str, pct: bool = False, with_ci: bool = False) -> str:
            if o not in ops:
                return "-"
            v = ops[o][key]
            txt = f"{v:.1%}" if pct else f"{v:.3f}"
            return txt + (_ci(ops[o]["ci95"].get(key)) if with_ci else "")

        first = "fixed" if "fixed" in ops else "max-quality"
        cb = s.get("curve_best_gap_at_paper_savings")
        at_best_single = "match-best-single" if "match-best-single" in ops else first
        lines.append(
            f"| {name} | {s['mean_auc']:.3f}{_ci(ci.get('mean_auc'))} | {s['mean_brier']:.3f} | "
            f"{s['aiq']:.3f}{_ci(ci.get('aiq'))} | " if "mean_auc" in s else f"| {name} | - | - | - | ")
        lines[-1] += (f"{op(first, 'accuracy', with_ci=True)} | {op(first, 'gap_captured', with_ci=True)} | "
                      f"{op('paper-savings', 'accuracy')} | {op('paper-savings', 'gap_captured', with_ci=True)} | "
                      f"{op('paper-savings', 'savings_vs_most_expensive', pct=True)} | "
                      f"{op(at_best_single, 'savings_vs_most_expensive', pct=True)} | "
                      f"{'-' if cb is None else f'{cb:.3f}'} |")
    lines += ["", f"AIQ of the single targets (random mixing of fixed models): {report['aiq_singles']:.3f}.", ""]
    if report["paired_vs_reference"]:
        lines += [f"## Paired differences: {report['reference']} minus each router", "",
                  "| router | metric | difference [95% CI] | share of resamples where the reference is not better |",
                  "|---|---|---|---|"]
        for name, diffs in report["paired_vs_reference"].items():
            for k, d in diffs.items():
                lines.append(f"| {name} | {k} | {d['difference']:+.3f}{_ci(d['ci95'])} | "
                             f"{d['p_reference_not_better']:.3f} |")
        lines.append("")
    pair = report["pair"]
    lines += [f"## RouteLLM metrics, strong {pair['strong']} vs weak {pair['weak']}", "",
              "| router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|"]
    for name, s in report["scorers"].items():
        if "pair" in s:
            pm = s["pair"]
            lines.append(f"| {name} | {pm['apgr']:.3f} | {pm['cpt50']:.1%} | {pm['cpt80']:.1%} |")
    ref = report["scorers"].get(report["reference"] or "", {})
    if ref:
        lines += ["", f"## Agreement zones and routing of {report['reference']}", "",
                  "| operating point | " + " | ".join(f"acc ({z})" for z in ev.ZONES) + " | routing |",
                  "|---|---|---|---|---|"]
        for o, m in ref["operating_points"].items():
            routing = ", ".join(f"{t} {c}" for t, c in m["routing"].items() if c)
            lines.append(f"| {o} | " + " | ".join(f"{m['zones'][z]['accuracy']:.3f}" for z in ev.ZONES) +
                         f" | {routing} |")
    for o, rows in report.get("per_benchmark", {}).items():
        lines += ["", f"## Per benchmark, {report['reference']} at {o}", "",
                  "| benchmark | n | router acc | best single acc (which) | oracle | mean AUC |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['benchmark']} | {r['n']} | {r['router_accuracy']:.3f} | "
                         f"{r['best_single_accuracy']:.3f} ({r['best_single']}) | {r['oracle_accuracy']:.3f} | "
                         f"{r['mean_auc']:.3f} |")
    lines += ["", "## Single targets", "", "| target | accuracy | normalised cost |", "|---|---|---|"]
    lines += [f"| {s['target']} | {s['accuracy']:.3f} | {s['normalised_cost']:.3f} |" for s in report["singles"]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, s in report["scorers"].items():
        if "curve" in s:
            tol = [c for c in s["curve"] if c["kind"] == "tolerance"]
            ax.plot([c["normalised_cost"] for c in tol], [c["accuracy"] for c in tol], "-", lw=1.6,
                    label=f"{name} (AIQ {s['aiq']:.3f})")
        elif "fixed" in s["operating_points"]:
            m = s["operating_points"]["fixed"]
            ax.scatter(m["normalised_cost"], m["accuracy"], marker="D", s=40, zorder=5, label=name)
    for t in report["singles"]:
        ax.scatter(t["normalised_cost"], t["accuracy"], marker="s", color="gray", s=18)
        ax.annotate(t["target"], (t["normalised_cost"], t["accuracy"]), fontsize=6, color="gray")
    best, oracle = report["best_single"]["accuracy"], report["oracle_accuracy"]
    ax.scatter(1 - ev.PAPER_SAVINGS, best + ev.PAPER_GAP * (oracle - best), marker="*", s=160, color="k", zorder=6,
               label="paper's operating point (45.6% gap, 74.3% savings)")
    ax.axhline(oracle, ls=":", color="g", lw=1, label=f"oracle {oracle:.3f}")
    ax.set_xlabel("cost / cost of the most expensive target")
    ax.set_ylabel("accuracy")
    mode = report["mode"]
    ax.set_title(f"{mode['folds']}-fold CV, {mode['rows']} rows" if mode["kind"] == "cv"
                 else f"split {mode['split']}, {mode['rows']} rows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], preds: dict[str, np.ndarray], es: ev.EvalSet, out: str | Path) -> Path:
    """metrics.json, report.md, curve.png and the reference router's predictions (oof_preds.jsonl in CV mode)."""
    from .pipeline import _json_default

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(report, indent=1, default=_json_default))
    (d / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(report, d / "curve.png")
    ref = report["reference"]
    if ref in preds:
        write_predictions(d / ("oof_preds.jsonl" if report["mode"]["kind"] == "cv" else "preds.jsonl"), es.ids,
                          es.targets, preds[ref], es.cost)
    return d
