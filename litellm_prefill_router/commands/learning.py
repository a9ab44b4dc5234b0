"""`prefill-router` commands that learn from decision logs: tune (a policy setting for a goal, or autotune
simulated) and drift (is today's traffic still like the bundle's training data)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import decision_records, feedback_scores, pyplot, table, write_outputs


def cmd_tune(args: argparse.Namespace) -> int:
    from ..tuning import TuneError, tune

    if not args.simulate_autotune and (given := [f"--{n.replace('_', '-')}" for n in ("window", "every", "min_calls")
                                              if getattr(args, n) is not None]):
        raise TuneError(f"{', '.join(given)} set the simulated autotune: add --simulate-autotune (or leave them out)")
    records = decision_records(args.log, TuneError, args)
    scores = feedback_scores(args.feedback, records)
    r = tune(records, budget_usd_per_1k=args.budget_usd_per_1k, savings=args.savings,
             min_expected_accuracy=args.min_expected_accuracy, scores=scores, model_group=args.model_group,
             recalibrate=args.recalibrate)
    if r["model_group"] is None and len(r["model_groups"]) > 1:
        print(f"note: the log spans model groups {r['model_groups']}, tuned together here; --model-group NAME tunes "
              "one (each has its own prices and targets)", file=sys.stderr)
    print(f"{r['calls']} logged calls decided by a policy" + (f" ({r['calls_with_limits']} with their own limits, kept)"
                                                             if r["calls_with_limits"] else "")
          + (f"; left out {sum(r['skipped'].values())}: {r['skipped']}" if r["skipped"] else "")
          + f"; always the dearest candidate: {r['dearest_cost_per_1k_usd']:.6g} USD per 1k requests")
    def observed(q: dict) -> list[str]:
        o = q.get("observed_kept")
        return [] if o is None else ["-" if o["mean_score"] is None else f"{o['mean_score']:.3f} ({o['calls']})"]

    print(table(["setting", "USD per 1k requests", "saved vs dearest", "expected accuracy"]
                + (["observed score, calls kept (n)"] if scores is not None else []) + ["routes"],
                [[f"{q['kind']}={q['value']:g}", q["cost_per_1k_usd"],
                  f"{1 - q['cost_per_1k_usd'] / r['dearest_cost_per_1k_usd']:.1%}"
                  if r["dearest_cost_per_1k_usd"] > 0 else "-", q["expected_accuracy"], *observed(q),
                  ", ".join(f"{t} {v:.0%}" for t, v in sorted(q["routes"].items(), key=lambda kv: -kv[1])[:2])]
                 for q in r["frontier"]]))
    cal = r.get("calibration")
    if cal and cal["scored_calls"]:
        print(f"calibration on {cal['scored_calls']} scored calls: the bundle's mean P(correct) of the answering "
              f"target {cal['mean_p_correct_served']:.3f}, mean feedback score {cal['mean_score']:.3f} - read expected "
              "accuracies with that offset")
    rc = r.get("recalibration")
    if rc:
        print(f"expected accuracies recalibrated to the feedback ({rc['scored_calls']} scored calls): P'(correct) = "
              f"sigmoid({rc['a']:.3g} * logit(P) + {rc['b']:.3g}); on the scored calls the answering targets' mean "
              f"P(correct) {rc['mean_p_correct_served']:.3f} -> {rc['mean_recalibrated_served']:.3f}, mean score "
              f"{rc['mean_score']:.3f}")
    c = r["chosen"]
    print(f"\nfor {r['goal']}: {c['kind']} {c['value']:g} - {c['cost_per_1k_usd']:.6g} USD per 1k requests, "
          f"expected accuracy {c['expected_accuracy']:.4f} ("
          + ("recalibrated P(correct)" if rc else "the bundle's P(correct)") + " of the routes it picks)")
    print(f"  routing_strategy_args: {{{c['kind']}: {c['value']:g}}}    # or per request: "
          f"metadata={{\"prefill\": {{\"{c['kind']}\": {c['value']:g}}}}}")
    goal = ", ".join(f"{k}: {v:g}" for k, v in _autotune_goal(args).items())
    print(f"  or let the router keep tuning it on its latest calls: routing_strategy_args: {{autotune: {{{goal}}}}}")
    if args.simulate_autotune:
        r["autotune_simulation"] = _simulate_autotune(args, records)
    write_outputs(args, r, _plot_tune)
    return 0


def _autotune_goal(args: argparse.Namespace) -> dict[str, float]:
    """`tune`'s goal as autotune settings (the one of the three given)."""
    return {k: v for k, v in (("budget_usd_per_1k", args.budget_usd_per_1k), ("savings", args.savings),
                              ("min_expected_accuracy", args.min_expected_accuracy)) if v is not None}


def _simulate_autotune(args: argparse.Namespace, records: list[dict]) -> dict:
    """``tune --simulate-autotune``: what autotune with this goal would have done on the log, printed."""
    from ..autotune import simulate

    settings = {**_autotune_goal(args), **{k: v for k, v in (("window", args.window), ("every", args.every),
                                                            ("min_calls", args.min_calls)) if v is not None}}
    sim = simulate(records, settings, args.model_group)
    st = sim["settings"]
    print(f"\nautotune (window {st['window']}, every {st['every']}, from {st['min_calls']}) over the {sim['calls']} "
          f"logged calls, in order: first tune after call {sim['first_tune_after_call']}, "
          f"{len(sim['changes'])} setting change(s): "
          + ", ".join(f"{c['setting']} after call {c['after_call']}" + ("" if c["goal_met"] else " (goal not met)")
                      for c in sim["changes"][:8]) + (" ..." if len(sim["changes"]) > 8 else ""))
    rows = [("all calls (logged routes until the first tune)", sim["overall"])]
    if sim["after_first_tune"]:
        rows.append(("after the first tune", sim["after_first_tune"]))
    rows += [(f"tenth {k + 1}", t) for k, t in enumerate(sim["by_tenth"])]
    print(table(["calls", "n", "USD per 1k requests", "saved vs dearest", "expected accuracy"],
                [[name, v["calls"], v["cost_per_1k_usd"], f"{v['savings']:.1%}", v["expected_accuracy"]]
                 for name, v in rows]))
    return sim


def _plot_tune(r: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("tolerance", "-"), ("lambda", "--"), ("value_usd", ":")):
        pts = sorted((q for q in r["points"] if q["kind"] == kind), key=lambda q: q["cost_per_1k_usd"])
        ax.plot([q["cost_per_1k_usd"] for q in pts], [q["expected_accuracy"] for q in pts], style, label=kind)
    c = r["chosen"]
    ax.plot([c["cost_per_1k_usd"]], [c["expected_accuracy"]], "o", color="k",
            label=f"chosen: {c['kind']} {c['value']:g}")
    ax.set_xlabel("estimated USD per 1,000 requests (this traffic)")
    ax.set_ylabel("expected accuracy (mean P(correct) of the route)")
    ax.set_title(r["goal"])
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_drift(args: argparse.Namespace) -> int:
    from ..drift import DriftError, drift, drift_from_bundle

    records = decision_records(args.log, DriftError, args)
    options = {"model_group": args.model_group, "scores": feedback_scores(args.feedback, records),
               "min_calls": args.min_calls}
    if args.bundle:
        r = drift_from_bundle(records, args.bundle, **options)
    else:
        r = drift(records, decision_records(args.reference_log, DriftError),
                  reference_name=" ".join(args.reference_log), **options)
    ref = r["reference"]
    print(f"{r['calls']} logged calls against {ref['source']} ({ref['n']} rows"
          + (f", bundle version {ref['bundle_version']}" if ref["bundle_version"] else "") + ")"
          + (f"; left out {sum(r['skipped'].values())}: {r['skipped']}" if r["skipped"] else ""))

    def row(name: str, v: dict, logged: str, reference: str) -> list[object]:
        if not v["calls"]:
            return [name, 0, "-", "-", "-", "-", "-", v["verdict"]]
        return [name, v["calls"], v["psi"], v["noise"], v["bound_99"], logged, reference, v["verdict"]]

    rows = [row(t, v, f"{v['mean_p_correct']:.3f}" if v["calls"] else "-",
                f"{v['reference_mean_p_correct']:.3f}" if v["calls"] else "-") for t, v in r["targets"].items()]
    tok = r["input_tokens"]
    if tok:
        rows.append(row("(prompt tokens)", tok, f"median {tok['median']:g}", f"median {tok['reference_median']:g}"))
    print(table(["P(correct) of", "calls", "PSI", "noise", "99% bound", "logged mean", "reference", "verdict"], rows))
    if tok and tok["reference_truncated_share"] is not None:
        print(f"prompts cut to the encoder's window: {tok['truncated_share']:.1%} (reference "
              f"{tok['reference_truncated_share']:.1%})")
    nov = r["novelty"]
    if nov:
        print(f"novel calls (further from every reference row than 95% of the reference rows are from theirs): "
              f"{nov['novel']} of {nov['calls']} ({nov['share']:.1%}; about 5% on traffic like the reference, z "
              f"{nov['z']:.1f}) - {nov['verdict']}"
              + (f"; furthest: {', '.join(str(c['id']) for c in r['novel_calls'][:3])}" if r["novel_calls"] else ""))
    if args.novel_out:
        _write_novel(r["novel_calls"], Path(args.novel_out))
    if r["targets_not_in_reference"]:
        print(f"targets the reference does not know (no verdict): {r['targets_not_in_reference']}")
    for t, c in (r["calibration"] or {}).items():
        print(f"feedback, answered by {t}: mean P(correct) {c['mean_p_correct']:.3f}, mean score {c['mean_score']:.3f} "
              f"({c['scored']} scored)")
    print(f"\nverdict: {r['verdict']} - {r['advice']}")
    write_outputs(args, r, _plot_drift)
    if args.fail_on and r["verdict"] in (("moderate shift", "major shift") if args.fail_on == "moderate"
                                         else ("major shift",)):
        return 3
    return 0


def _write_novel(calls: list[dict], path: Path) -> None:
    """The novel calls, furthest first, as `collect` prompt lines (``{"id", "prompt": messages, "benchmark"}``): label
    them and train with them. Calls logged without messages (``decision_log_messages: false``) cannot be written."""
    from ..jsonl import write_atomic

    rows = [{"id": c["id"] or f"novel-{i}", "prompt": c["messages"], "benchmark": "drift-novel"}
            for i, c in enumerate(calls) if c["messages"]]
    write_atomic(path, rows)
    missing = len(calls) - len(rows)
    print(f"wrote {len(rows)} novel calls to {path} as collect prompts (then: prefill-router collect --prompts {path} "
          "--config ...)" + (f"; {missing} logged without messages left out (decision_log_messages: true keeps them)"
                             if missing else ""))


def _plot_drift(r: dict, path: Path) -> None:
    from ..drift import MAJOR, MODERATE

    plt = pyplot()
    items = [(t, v) for t, v in r["targets"].items() if v["calls"]]
    if r["input_tokens"]:
        items.append(("(prompt tokens)", r["input_tokens"]))
    names = [t for t, _ in items]
    y = list(range(len(names)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.42 * len(names) + 1.8), sharey=True)
    left.barh(y, [max(v["psi"] - v["noise"], 0.0) for _, v in items],
              color=["tab:red" if v["verdict"] == "major shift" else "tab:orange" if v["verdict"] == "moderate shift"
                     else "tab:green" if v["verdict"] == "stable" else "tab:gray" for _, v in items])
    for x, style in ((MODERATE, ":"), (MAJOR, "--")):
        left.axvline(x, color="k", linestyle=style, linewidth=1)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("PSI above its noise level (0.1 moderate, 0.25 major)")
    targets = [(i, v) for i, (_, v) in enumerate(items) if "mean_p_correct" in v]
    right.plot([v["reference_mean_p_correct"] for _, v in targets], [i for i, _ in targets], "o", label="reference")
    right.plot([v["mean_p_correct"] for _, v in targets], [i for i, _ in targets], "x", label="logged")
    right.set_xlabel("mean P(correct)")
    right.legend()
    fig.suptitle(f"drift: {r['verdict']} ({r['calls']} calls vs {r['reference']['source']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
