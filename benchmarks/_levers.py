"""Shared by the lever benchmarks: the rows every variant is scored on, and the Markdown table of a report."""

from __future__ import annotations

from typing import Any


def lever_table(report: dict[str, Any], reference: str) -> str:
    """One row per scorer: mean AUC and AIQ with intervals, gap captured at max-quality and at the paper's
    savings, and the paired differences (variant minus ``reference``) of mean AUC and AIQ."""
    lines = ["| variant | mean AUC [95% CI] | AIQ [95% CI] | gap @ max-quality | gap @ paper-savings (savings) "
             f"| paired mean AUC diff vs {reference} [95% CI] | paired AIQ diff [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for name, s in report["scorers"].items():
        ci, ops = s["ci95"], s["operating_points"]
        paired = report["paired_vs_reference"].get(name, {})

        def diff(key: str, paired: dict = paired) -> str:  # the report holds reference - variant
            v = paired.get(key)
            return "-" if not v else f"{-v['difference']:+.3f} [{-v['ci95'][1]:+.3f}, {-v['ci95'][0]:+.3f}]"

        lines.append(f"| {name} | {s['mean_auc']:.3f} [{ci['mean_auc'][0]:.3f}, {ci['mean_auc'][1]:.3f}] | "
                     f"{s['aiq']:.3f} [{ci['aiq'][0]:.3f}, {ci['aiq'][1]:.3f}] | "
                     f"{ops['max-quality']['gap_captured']:.3f} | {ops['paper-savings']['gap_captured']:.3f} "
                     f"({ops['paper-savings']['savings_vs_most_expensive']:.1%}) | {diff('mean_auc')} | {diff('aiq')} |")
    return "\n".join(lines)
