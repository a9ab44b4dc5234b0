"""`prefill-router` commands on decision logs: stats, replay, tune, drift, feedback, judge."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import read_rubric, table


def cmd_stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..log_stats import summarize_log

    st = summarize_log(args.log, args.feedback, since=args.since, until=args.until)
    lat = st["routing_latency_ms"]
    only = f" ({st['decided_only']} decided only: served by the caller, no outcome logged)" \
        if st["decided_only"] else ""
    print(f"{st['calls']} routed calls{only}, {st['failures']} failed; routing latency "
          + (f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else "not recorded"))
    print(table(["target", "calls", "share", "failed", "cost (USD)", "mean P(correct)", "answer tokens (mean)",
                 "estimated / actual cost"],
                [[t, v["calls"], f"{v['share']:.1%}", v["failures"], v["cost_usd"], _or_dash(v["mean_p_correct"]),
                  _or_dash(v["mean_answer_tokens"], "{:.0f}"), _or_dash(v["estimate_to_actual_cost"], "{:.2f}")]
                 for t, v in st["targets"].items()]))
    ratio = st["estimate_to_actual_cost"]
    if ratio is not None and not 0.8 <= ratio <= 1.25:
        print(f"the decisions' cost estimates are {ratio:.2f} x what the calls cost (answer lengths unlike the "
              "training data's, or prices): routing_strategy_args learn_output_tokens: true estimates each target's "
              "answer length from its latest answers")
    print("reasons: " + ", ".join(f"{k} {v}" for k, v in st["reasons"].items()))
    print("policies: " + ", ".join(f"{k} {v}" for k, v in st["policies"].items()))
    for group, runs in (st["autotune"] or {}).items():
        shown = runs[-10:]  # the latest; proxy workers tune apart, so their interleaved lines may alternate
        last = f" (the last 10 of {len(runs)})" if len(runs) > 10 else ""
        print(f"autotune in {group!r}, in logged order{last}: "
              + ", ".join(f"{r['policy'].removesuffix(' (autotuned)')} from {r['first_ts'] or '?'} "
                          f"({r['calls']} calls)" for r in shown))
    if st["limits"]["calls"]:
        n = st["limits"]["calls"]
        print(f"limits (max_cost_usd / min_p_correct): {n} call{'' if n == 1 else 's'}, "
              f"{st['limits']['excluded_a_target']} of them excluded a target")
    if st["novel"]:
        nv = st["novel"]
        print(f"novel prompts (unlike any the bundle was validated on; about 5% on traffic like its training data): "
              f"{nv['novel']} of {nv['calls']} ({nv['share']:.1%}) - `prefill-router drift` says whether that is a shift")
    if st["savings_fraction"] is not None:
        print(f"cost {st['cost_usd']:.6g} USD; sending each call to its dearest candidate would have cost "
              f"{st['baseline_cost_usd']:.6g} USD: saved {st['savings_usd']:.6g} USD ({st['savings_fraction']:.1%}, "
              f"over the {st['calls_with_savings']} calls with a known cost)")
    sh = st["shadow"]
    if sh:
        print(f"shadow mode: {sh['calls']} calls served as before by " +
              ", ".join(f"{k} {v}" for k, v in sh["served"].items()) +
              f"; the routes above would have cost an estimated {sh['estimated_cost_routed_usd']:.6g} USD against "
              f"{sh['estimated_cost_served_usd']:.6g} USD for what was served (the decisions' own estimates)")
        if ea := sh.get("expected_accuracy"):
            print(f"  expected accuracy (the bundle's mean P(correct), {ea['calls']} calls): the routes "
                  f"{ea['routed']:.3f}, what was served {ea['served']:.3f} - feedback or a judge measures it")
    if mv := st.get("moved_by_litellm"):
        print(f"served from another tier by litellm's complexity router: {mv['calls']} calls (" +
              "; ".join(f"{cause}: " + ", ".join(f"{t} {n}" for t, n in by.items())
                        for cause, by in mv["by_cause"].items()) + ") - outcomes and feedback count for who answered")
    fb = st["feedback"]
    if fb:
        print(f"feedback: {fb['scored']} calls scored, mean {fb['mean_score']:.3f}; by the target that answered: "
              + ", ".join(f"{t} {v['mean_score']:.3f} ({v['scored']})" for t, v in fb["by_served_target"].items()))
    if st["arms"]:
        print("rollout arms (router: served by the router's choice; control: served as before):")
        print(table(["arm", "calls", "failed", "failure rate", "cost (USD)", "cost per call (USD)", "scored",
                      "mean score"],
                     [[name, a["calls"], a["failures"], f"{a['failure_rate']:.1%}", a["cost_usd"],
                       float("nan") if a["cost_per_call_usd"] is None else a["cost_per_call_usd"], a["scored"],
                       float("nan") if a["mean_score"] is None else a["mean_score"]]
                      for name, a in st["arms"].items()]))
    if st["bundles"] and len(st["bundles"]) > 1:
        print("by bundle version (in the order they first decided a call):")
        print(table(["version", "bundle", "calls", "failed", "first call", "saved", "mean P(correct)", "scored",
                      "mean score", "top target"],
                     [[v, b["bundle"], b["calls"], b["failures"], b["first_ts"] or "-",
                       "-" if b["savings_fraction"] is None else f"{b['savings_fraction']:.1%}",
                       float("nan") if b["mean_p_correct"] is None else b["mean_p_correct"], b["scored"],
                       float("nan") if b["mean_score"] is None else b["mean_score"],
                       next(iter(b["targets"]), "-")] for v, b in st["bundles"].items()]))
    if args.json:
        Path(args.json).write_text(json.dumps(st, indent=1))
    return 0


def _or_dash(x: float | None, fmt: str = "{:.3f}") -> str:
    """``x`` formatted, or "-" where there is none."""
    return "-" if x is None else fmt.format(x)


def _decision_records(paths: Sequence[str], error: type[Exception], args: argparse.Namespace | None = None) -> list[dict]:
    """Every record of the decision logs at ``paths`` (within ``args.since`` / ``args.until`` when given); a missing
    file is ``error`` saying how to get one."""
    from ..jsonl import read_logs

    window = {"since": getattr(args, "since", None), "until": getattr(args, "until", None)}
    try:
        return [rec for _, _, rec in read_logs(paths, "decision log", **window)]
    except FileNotFoundError as err:
        raise error(f"{err}; set routing_strategy_args.decision_log to write one") from err


def _feedback_scores(files: Sequence[str] | None) -> dict[str, float] | None:
    """Feedback / judge scores by call id from ``files`` (None: no files given)."""
    if not files:
        return None
    from ..feedback import load_feedback

    scores: dict[str, float] = {}
    for f in files:
        scores.update(load_feedback(f))
    return scores


def cmd_replay(args: argparse.Namespace) -> int:

    from ..predictor import PrefillPredictor
    from ..replay import ReplayError, policy_from_args, replay

    records = _decision_records(args.log, ReplayError, args)
    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    scores = _feedback_scores(args.feedback) or {}
    policy = policy_from_args(args.preset, args.tolerance, args.lambda_, pred, args.value_usd)
    r = replay(records, pred, policy=policy,
               scores=scores or None, progress=not args.quiet)
    print(f"replayed {r['calls']} logged calls with {r['bundle']} (version {r['bundle_version']}), policy "
          f"{r['policy']}" + (f"; {r['pinned']} pinned calls left as they were" if r["pinned"] else "")
          + (f"; skipped {sum(r['skipped'].values())}: {r['skipped']}" if r["skipped"] else ""))
    print(f"same route for {r['kept']} ({r['agreement']:.1%}), another for {r['moved']}; estimated cost "
          f"{r['estimated_cost_before_usd']:.6g} -> {r['estimated_cost_after_usd']:.6g} USD; mean P(correct) under "
          f"the new bundle: new route {r['mean_p_correct_new_route']:.3f}, old route "
          + ("-" if r["mean_p_correct_old_route"] is None else f"{r['mean_p_correct_old_route']:.3f}"))
    nv = r["novel_share"]
    if nv["before"] is not None or nv["after"] is not None:
        print(f"novel prompts (unlike the bundle's validation data): {_or_dash(nv['before'], '{:.1%}')} as logged -> "
              f"{_or_dash(nv['after'], '{:.1%}')} with this bundle")
    print(table(["target", "calls before", "calls after"],
                 [[t, v["before"], v["after"]] for t, v in r["routes"].items()]))
    if r["top_moves"]:
        print("top moves: " + ", ".join(f"{m['from']} -> {m['to']} {m['calls']}" for m in r["top_moves"]))
    fb = r["feedback"]
    if fb:
        def mean(v: dict) -> str:
            return "-" if v["mean_score"] is None else f"{v['mean_score']:.3f}"
        print(f"feedback: calls kept {mean(fb['kept'])} ({fb['kept']['scored']} scored), calls it would move "
              f"{mean(fb['moved'])} ({fb['moved']['scored']} scored)")
    _write_outputs(args, r, _plot_replay)
    return 0


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, for ``--plot``; without matplotlib, an error naming the fix."""
    from ..replay import ReplayError

    try:
        import matplotlib
    except ImportError as err:
        raise ReplayError(f"--plot needs matplotlib, which the serving install leaves out: pip install matplotlib "
                          f"(or litellm-prefill-router[train]) ({err})") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_outputs(args: argparse.Namespace, result: dict, plot: Callable[[dict, Path], None]) -> None:
    """``--json`` and ``--plot`` of a command's result."""
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, Path(args.plot))


def _plot_replay(r: dict, path: Path) -> None:
    plt = _pyplot()
    names = list(r["routes"])
    y = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.6))
    ax.barh([i - 0.2 for i in y], [r["routes"][t]["before"] for t in names], height=0.4, label="logged")
    ax.barh([i + 0.2 for i in y], [r["routes"][t]["after"] for t in names], height=0.4, label="replayed")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("calls")
    ax.set_title(f"replay with {r['bundle_version']}: {r['agreement']:.0%} same route, est. cost "
                 f"{r['estimated_cost_before_usd']:.3g} -> {r['estimated_cost_after_usd']:.3g} USD")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_feedback(args: argparse.Namespace) -> int:
    from ..feedback import feedback_rows
    from ..jsonl import write_atomic

    rows, st = feedback_rows(args.log, args.feedback, benchmark=args.benchmark)
    write_atomic(args.out, rows)
    print(f"{st.decisions} logged decisions: {st.rows} rows written, {st.without_feedback} without feedback, "
          f"{st.failed_calls} failed calls, {st.without_messages} without messages, {st.unmapped_answers} answered by "
          f"a deployment no target maps; "
          f"{len(st.unknown_feedback_ids)} feedback ids not in the log")
    print(f"wrote {args.out}; retrain with: prefill-router train --continue-from BUNDLE --data BASE --add {args.out}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Score logged production answers later -> feedback lines for `prefill-router feedback`."""
    import asyncio
    from pathlib import Path

    from ..errors import PrefillRouterError
    from ..feedback import JudgedLines, judge_log
    from ..jsonl import append_line, read_log
    from ..judges import Completer, parse_judge

    judge = parse_judge(args.judge, read_rubric(args.rubric), args.judge_max_tokens)
    complete: Completer | None = None
    client = None
    if judge.kind == "llm":
        from ..collect import load_router_config
        from ..collection_client import CollectionClient
        from ..retrying import RetryPolicy, retried

        if not args.config:
            raise PrefillRouterError(f"judge {args.judge!r} needs --config with the judge's model group")
        client = CollectionClient(load_router_config(args.config))
        if judge.arg not in client.groups():
            raise PrefillRouterError(f"judge {args.judge!r}: model group {judge.arg!r} is not in {args.config} "
                                     f"(its groups: {client.groups()})")
        llm = client

        async def complete(group: str, messages: list[dict[str, str]], max_tokens: int) -> str:
            return await retried(lambda: llm.complete_text(group, messages, max_tokens), llm.retry_after,
                                 RetryPolicy(), f"judge {group}")

    # each score is appended to --out as soon as it is known, so an interrupted run (Ctrl-C, a crash) keeps what it
    # scored; an earlier run's lines are kept, and the answers this judge scored there are not judged again
    out = Path(args.out)
    earlier = [rec for _, rec in read_log(out)] if out.is_file() else []
    judged = {str(r.get("id")) for r in earlier if r.get("judge") == judge.spec}
    if out.is_file() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        append_line(out, "")  # an earlier run cut off mid-line: start on a fresh line

    async def run() -> JudgedLines:
        try:
            return await judge_log(args.log, judge, complete, skip=judged, concurrency=args.concurrency,
                                   on_line=lambda line: append_line(out, json.dumps(line)), progress=not args.quiet)
        finally:
            if client is not None:
                await client.aclose()

    lines = asyncio.run(run())
    before = f" ({len(judged)} scored by an earlier run)" if judged else ""
    print(f"scored {len(lines)} logged answers with {args.judge}{before}; wrote {out} "
          "(use it as --feedback for `prefill-router feedback`)")
    if lines.failed:
        print(f"the judge failed on {len(lines.failed)} answers (first: {next(iter(lines.failed.values()))}); "
              "run the command again to judge them", file=sys.stderr)
        return 4
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from ..tuning import TuneError, tune

    records = _decision_records(args.log, TuneError, args)
    scores = _feedback_scores(args.feedback)
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
        print(f"calibration on {cal['scored_calls']} scored calls: the bundle's mean P(correct) of the answering target "
              f"{cal['mean_p_correct_served']:.3f}, mean feedback score {cal['mean_score']:.3f} - read expected "
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
    _write_outputs(args, r, _plot_tune)
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
    plt = _pyplot()
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

    records = _decision_records(args.log, DriftError, args)
    options = {"model_group": args.model_group, "scores": _feedback_scores(args.feedback), "min_calls": args.min_calls}
    if args.bundle:
        r = drift_from_bundle(records, args.bundle, **options)
    else:
        r = drift(records, _decision_records(args.reference_log, DriftError),
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
              f"{nov['z']:.1f}) - {nov['verdict']}" + (f"; furthest: {', '.join(str(c['id']) for c in r['novel_calls'][:3])}"
                                                     if r["novel_calls"] else ""))
    if args.novel_out:
        _write_novel(r["novel_calls"], Path(args.novel_out))
    if r["targets_not_in_reference"]:
        print(f"targets the reference does not know (no verdict): {r['targets_not_in_reference']}")
    for t, c in (r["calibration"] or {}).items():
        print(f"feedback, answered by {t}: mean P(correct) {c['mean_p_correct']:.3f}, mean score {c['mean_score']:.3f} "
              f"({c['scored']} scored)")
    print(f"\nverdict: {r['verdict']} - {r['advice']}")
    _write_outputs(args, r, _plot_drift)
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

    plt = _pyplot()
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
