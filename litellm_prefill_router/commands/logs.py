"""`prefill-router` commands on decision logs: stats, replay, feedback, judge (tune and drift: ``learning``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import decision_records, feedback_scores, or_dash, pyplot, read_rubric, table, write_outputs, write_text


def cmd_stats(args: argparse.Namespace) -> int:

    from ..log_stats import LogStatsError, summarize

    records = decision_records(args.log, LogStatsError, args)
    st = {"log": args.log[0] if len(args.log) == 1 else args.log,
          **summarize(records, feedback_scores(args.feedback, records))}
    lat = st["routing_latency_ms"]
    only = f" ({st['decided_only']} decided only: served by the caller, no outcome logged)" \
        if st["decided_only"] else ""
    left = f", {st['abandoned']} abandoned (streams dropped before their end)" if st["abandoned"] else ""
    print(f"{st['calls']} routed calls{only}, {st['failures']} failed{left}; routing latency "
          + (f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else "not recorded"))
    print(table(["target", "calls", "share", "failed", "abandoned", "cost (USD)", "mean P(correct)",
                 "answer tokens (mean)", "estimated / actual cost"],
                [[t, v["calls"], f"{v['share']:.1%}", v["failures"], v["abandoned"], v["cost_usd"],
                  or_dash(v["mean_p_correct"]),
                  or_dash(v["mean_answer_tokens"], "{:.0f}"), or_dash(v["estimate_to_actual_cost"], "{:.2f}")]
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
              f"{nv['novel']} of {nv['calls']} ({nv['share']:.1%}) - `prefill-router drift` says whether that is "
              "a shift")
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
        write_text(args.json, json.dumps(st, indent=1))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:

    from ..predictor import PrefillPredictor
    from ..replay import ReplayError, policy_from_args, replay

    records = decision_records(args.log, ReplayError, args)
    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    scores = feedback_scores(args.feedback, records) or {}
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
        print(f"novel prompts (unlike the bundle's validation data): {or_dash(nv['before'], '{:.1%}')} as logged -> "
              f"{or_dash(nv['after'], '{:.1%}')} with this bundle")
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
    write_outputs(args, r, _plot_replay)
    return 0


def _plot_replay(r: dict, path: Path) -> None:
    plt = pyplot()
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
    from ..feedback import FeedbackError, feedback_rows, not_feedback_rows
    from ..jsonl import write_atomic
    from ..records import FEEDBACK_ID_MEANING

    if (kept := not_feedback_rows(args.out)) is not None:  # e.g. --out data/routing.jsonl: the base dataset
        raise FeedbackError(f"{args.out} exists and is not the output of an earlier feedback run ({kept}); writing "
                            "the training rows there would replace it. Name a new file, or remove it first.")
    rows, st = feedback_rows(args.log, args.feedback, benchmark=args.benchmark)
    print(f"{st.decisions} logged decisions: {st.rows} rows, {st.without_feedback} without feedback, "
          f"{st.failed_calls} failed calls, {st.abandoned_calls} abandoned streams (a partial answer), "
          f"{st.without_messages} without messages, {st.unmapped_answers} answered by "
          f"a deployment no target maps; "
          f"{len(st.unknown_feedback_ids)} feedback ids not in the log")
    if not rows:  # an empty --add file and a retrain command would only hide why
        if st.without_feedback == st.decisions:
            why = (f"no feedback id (e.g. {', '.join(st.unknown_feedback_ids[:3]) or 'none given'}) names a logged "
                   f"call: an id is {FEEDBACK_ID_MEANING}")
        elif st.without_messages:
            why = "the calls with feedback have no messages in the log: set decision_log_messages: true"
        else:
            why = "the calls with feedback failed, or were answered by a deployment that no bundle target maps"
        print(f"error: no training rows, nothing written to {args.out}: {why}", file=sys.stderr)
        return 1
    write_atomic(args.out, rows)
    print(f"wrote {len(rows)} rows to {args.out}; retrain with: prefill-router train --continue-from BUNDLE --data "
          f"BASE --add {args.out}")
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
    if not lines.answers and not judged:  # nothing was judged, nothing written: say why
        why = (f"its {lines.without_answer} successful calls were logged without their answers: set "
               "routing_strategy_args.decision_log_responses: true, and judge the calls logged after"
               if lines.without_answer else "it has no successful call with an answer")
        print(f"error: no answer to judge in {' '.join(args.log)}: {why}", file=sys.stderr)
        return 1
    print(f"scored {len(lines)} of {lines.answers} logged answers with {args.judge}{before}; "
          + (f"{lines.without_answer} calls logged without their answer; " if lines.without_answer else "")
          + f"{'wrote' if lines else 'nothing new for'} {out} (use it as --feedback for `prefill-router feedback`)")
    if lines.failed:
        print(f"the judge failed on {len(lines.failed)} answers (first: {next(iter(lines.failed.values()))}); "
              "run the command again to judge them", file=sys.stderr)
        return 4
    return 0


