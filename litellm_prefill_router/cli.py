"""``prefill-router``: train, probe, route, info, predict, evaluate, collect, feedback, stats, replay, judge,
check, push, pull, migrate. Every ``--bundle`` takes a directory or ``hf://owner/name[@revision][/path]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DATA_ENV = "PREFILL_ROUTER_DATA"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[("-" if c != c else f"{c:.4g}") if isinstance(c, float) else str(c)
                                             for c in r] for r in rows]  # NaN (c != c): no labels to measure on
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    print(f"bundle     {b.source}")
    if b.source != str(b.directory):
        print(f"files      {b.directory}")
    print(f"encoder    {m.encoder.id} @ {m.encoder.revision} ({m.encoder.kind}), layers {list(m.encoder.layers)}, "
          f"pooling {list(m.encoder.pooling)}, max {m.encoder.max_prefill_tokens} tokens, "
          f"{'int8' if m.encoder.quantized else 'fp32'}")
    enc_files = sorted(n for n in m.files if n == "encoder.onnx" or n.startswith("encoder.onnx."))
    print(f"size       {sum(m.files[n].size for n in enc_files) / 1e6:,.1f} MB encoder ({', '.join(enc_files)}), "
          f"{sum(f.size for f in m.files.values()) / 1e6:,.1f} MB in all")
    if m.parity:
        print(f"parity     max |p_torch - p_onnx| = {m.parity.probability_max_abs_diff:.2e} "
              f"(tolerance {m.parity.tolerance:.0e}, {m.parity.prompts_checked} prompts)")
    print()
    print(_table(["target", "prior acc", "test AUC", "out tokens", "$/Mtok in", "$/Mtok out"],
                 [[t.name, t.prior_accuracy, t.test_auc if t.test_auc is not None else "-", t.expected_output_tokens,
                   (t.input_cost_per_token or 0) * 1e6, (t.output_cost_per_token or 0) * 1e6] for t in m.targets]))
    print()
    print(_table(["preset", "kind", "value", "val acc", "description"],
                 [[k + (" (default)" if k == m.default_preset else ""), p.kind, p.value,
                   p.validation_accuracy if p.validation_accuracy is not None else "-", p.description]
                  for k, p in m.presets.items()]))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .publish import push_bundle

    result = push_bundle(args.bundle, args.repo, path_in_repo=args.path_in_repo or "", private=args.private,
                         branch=args.branch, tag=args.tag, licence=args.license, commit_message=args.message,
                         card=args.card)
    print(f"pushed {len(result.files)} files to {args.repo} in commit {result.commit} ({result.commit_url})")
    print(f"serve it with  bundle: {result.reference}" + (f"   (or @{args.tag})" if args.tag else ""))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .bundle import copy_bundle, load_bundle

    src = load_bundle(args.bundle)
    out = copy_bundle(src, args.out)
    print(f"copied {src.source} ({len(src.manifest.files) + 1} files, verified) to {out.directory}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .config import RequestOverrides
    from .decider import PrefillDecider
    from .predictor import PrefillPredictor

    decider = PrefillDecider(PrefillPredictor(args.bundle, intra_op_threads=args.threads), preset=args.preset,
                             tolerance=args.tolerance, lambda_=args.lambda_, max_cost_usd=args.max_cost_usd,
                             min_p_correct=args.min_p_correct)
    text = " ".join(args.text) if args.text else sys.stdin.read()
    d = decider.decide(text, decider.manifest_prices(), RequestOverrides(), "cli")
    excluded = set((d.constraints or {}).get("excluded", ()))
    if args.json:
        print(json.dumps({"target": d.target, "reason": d.reason, "policy": d.policy.__dict__,
                          "input_tokens": d.input_tokens, "p_correct": dict(d.p_correct), "cost_usd": dict(d.cost_usd),
                          "constraints": d.constraints}))
        return 0
    print(_table(["target", "P(correct)", "cost (USD)", ""],
                 [[t, d.p_correct.get(t, "-"), d.cost_usd.get(t, "-"),
                   "<- chosen" if t == d.target else ("outside the limits" if t in excluded else "")]
                  for t in d.candidates]))
    limits = "".join(f"; {k} {v:g}" for k, v in (d.constraints or {}).items() if k != "excluded")
    print(f"\npolicy {d.policy.kind}={d.policy.value} (preset {d.policy.preset}){limits}; {d.input_tokens} prompt "
          f"tokens{' (truncated)' if d.truncated else ''}; {d.reason} -> {d.target}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """One JSON line per prompt: {"id", "p_correct": {target: p}, "cost": {target: usd}} (ids from the data)."""
    from .costs import cost_matrix, manifest_price
    from .jsonl import write_predictions
    from .predictor import PrefillPredictor
    from .training.data import load_dataset  # numpy-only module: no torch

    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    m = pred.bundle.manifest
    ds = load_dataset(_data_arg(args.data), min_labels=0)
    rows = [r for r in ds.rows if args.split in (None, "all") or r.split == args.split]
    if not rows:
        raise SystemExit(f"error: no rows with split {args.split!r} in {ds.source}")
    p, n_tokens = pred.predict_many([r.prompt for r in rows])
    prices = [(pr.input_cost_per_token, pr.output_cost_per_token) for pr in map(manifest_price, m.targets)]
    cost = cost_matrix(prices, n_tokens, [t.expected_output_tokens for t in m.targets])
    out = write_predictions(args.out, [r.id for r in rows], m.target_names, p, cost)
    print(f"wrote {len(rows)} predictions to {out}")
    return 0


def _data_arg(value: str | None) -> str:
    data = value or os.environ.get(DATA_ENV)
    if not data:
        raise SystemExit(f"error: give --data PATH or set {DATA_ENV}")
    return data


def cmd_train(args: argparse.Namespace) -> int:
    from .training.data import add_rows, load_dataset

    ds = load_dataset(_data_arg(args.data), models_json=args.models_json, targets=args.targets)
    if args.add:  # may label targets the base data lacks (a model added to the fleet): new trunk columns
        ds = add_rows(ds, args.add, new_targets=True)
    if args.continue_from:
        from .training.continued import continue_training

        bundle, report = continue_training(args.continue_from, ds, args.out, seeds=args.seeds, keep=args.keep)
        test = report.get("test")
        print(f"refitted the scorer of {args.continue_from} on {report['rows']['fit']} rows "
              f"({report['rows']['labels']} labels) in {report['seconds']} s"
              + (f"; test mean AUC {test['mean_auc']:.3f}" if test else ""))
        print(f"bundle written to {bundle.directory}")
        return 0
    from .training.pipeline import TrainOptions, train

    layers = None if args.layers in (None, "auto") else [int(x) for x in args.layers.split(",")]
    extra = {} if args.max_auc_loss is None else {"max_auc_loss": args.max_auc_loss}
    opts = TrainOptions(encoder=args.encoder, targets=args.targets, layers=layers, **extra,
                        max_tokens=args.max_tokens, seeds=args.seeds, keep=min(args.keep, args.seeds),
                        quantize=args.quantize, external_data=args.external_data or None)
    bundle, report = train(ds, args.out, opts)
    print()
    print(_table(["stage", "seconds"], [[k, v] for k, v in report["stage_seconds"].items()] +
                 [["total", report["total_seconds"]]]))
    sel = report["probes"]["selected"]
    enc = bundle.manifest.encoder
    chosen = "" if layers is None else \
        f"\nlayers {','.join(map(str, enc.layers))} pooling {'+'.join(enc.pooling)} (given with --layers)"
    print(f"{chosen}\n{'the probes would pick' if layers else 'selected'} layer {sel['layer']} pooling "
          f"{'+'.join(sel['pooling'])} (probe AUC {sel['auc']:.3f}; best "
          f"L{sel['best_auc_layer']} {sel['best_auc']:.3f}; J best L{sel['best_j_layer']}; "
          f"J~AUC best-layer match {sel['j_matches_auc_within_one_layer']})")
    test = report.get("test")
    if test:
        print(f"\ntest split ({test['n']} prompts), mean AUC {test['mean_auc']:.3f}")
        print(_table(["target", "AUC"], [[t, a] for t, a in test["auc"].items()]))
        print()
        print(_table(["preset", "accuracy", "gap captured", "savings vs most expensive", "cost (USD)"],
                     [[k, v["router_accuracy"], v["gap_captured"], v["savings_vs_most_expensive"], v["cost"]]
                      for k, v in test["presets"].items()]))
        print(f"oracle {test['oracle_accuracy']:.3f}, best single "
              f"{next(iter(test['presets'].values()))['best_single_accuracy']:.3f}")
        if test.get("unlabelled_cells"):
            print(f"({test['unlabelled_cells']} prompt x target cells have no label: accuracies count them at the "
                  "predicted P(correct); AUCs use labelled cells only)")
    print(f"\nbundle written to {bundle.directory}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .training.data import load_dataset
    from .training.pipeline import TrainOptions, compute_features, split_validation
    from .training.probes import plot_probes, run_probes, select_layer

    ds = load_dataset(_data_arg(args.data), targets=args.targets)
    opts = TrainOptions(encoder=args.encoder, max_tokens=args.max_tokens)
    if args.max_auc_loss is not None:
        opts.max_auc_loss = args.max_auc_loss
    _, cache = compute_features(ds, opts)
    fit_idx, _ = split_validation(ds, ds.indices("train"), opts.val_fraction)
    res = run_probes(cache, ds.scores(), ds.targets, fit_idx)
    sel = select_layer(res, opts.max_auc_loss)
    print(_table(["layer", "pooling", "J", "d_eff", "AUC"],
                 [[r["layer"], r["pooling"], r["fisher_j"], r["d_eff"], r["auc"]] for r in res.summary]))
    print(f"\nselected: {sel}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probes.json").write_text(json.dumps(res.to_dict(), indent=1))
        plot_probes(res, str(out / "probes.png"))
        print(f"wrote {out / 'probes.json'} and {out / 'probes.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The router and the baselines on the same rows: a bundle on one split, or K-fold CV over the dataset."""
    from .errors import PrefillRouterError

    if (args.cv is None) == (args.bundle is None):
        raise PrefillRouterError("evaluate needs exactly one of --bundle DIR (score a trained bundle on --split) or "
                                 "--cv K (cross-validate the training recipe over the whole dataset)")
    if args.cv is None and (args.layers or args.encoder):
        raise PrefillRouterError("--layers/--encoder apply to --cv; a bundle already fixes its encoder and layers")

    import numpy as np

    from .training import harness
    from .training.data import load_dataset

    baselines = [] if args.baselines == "none" else (
        list(harness.BASELINE_NAMES) if args.baselines == "all" else [b.strip() for b in args.baselines.split(",")])
    pair = None
    if args.pair:
        parts = [x.strip() for x in args.pair.split(",")]
        if len(parts) != 2:
            raise PrefillRouterError(f"--pair wants STRONG,WEAK target names, got {args.pair!r}")
        pair = (parts[0], parts[1])
    ds = load_dataset(_data_arg(args.data), models_json=args.models_json)
    if args.cv is not None:
        variants = [harness.PrefillVariant([int(x) for x in spec.split(",")], head=args.head)
                    for spec in (args.layers or [])]
        report, preds, es = harness.cross_validate(ds, folds=args.cv, encoder=args.encoder, variants=variants,
                                                   baselines=baselines, bootstrap=args.bootstrap, pair=pair,
                                                   progress=not args.quiet)
    else:
        report, preds, es = harness.evaluate_bundle(ds, args.bundle, split=args.split, baselines=baselines,
                                                    bootstrap=args.bootstrap, pair=pair, threads=args.threads,
                                                    progress=not args.quiet)
    out = harness.write_report(report, preds, es, args.out)
    print(harness.markdown(report).split("\n\n## ")[0])
    unlabelled = int(np.isnan(es.hard).sum())
    if unlabelled:  # every router and baseline is scored the same way, but a route to such a cell scores 0
        print(f"\nnote: {unlabelled} prompt x target cells of the evaluated rows have no label; a route to one "
              "counts as a wrong answer for every router and baseline (label every target on the rows you evaluate "
              "on for accuracies that do not depend on where the gaps are)")
    print(f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'curve.png'}"
          f"{', ' + str(out / 'oof_preds.jsonl') if args.cv is not None else ', ' + str(out / 'preds.jsonl')}")
    return 0


def _read_rubric(path: str | None) -> str | None:
    from pathlib import Path

    return Path(path).read_text(encoding="utf-8") if path else None


def cmd_collect(args: argparse.Namespace) -> int:
    """Every prompt to every target through LiteLLM -> a training dataset (resumable, cost-capped)."""
    import asyncio

    from .collect import CollectOptions, Collector, load_prompts, load_router_config
    from .collection_client import CollectionClient

    rubric = _read_rubric(args.rubric)
    opts = CollectOptions(targets=args.targets, judge=args.judge, rubric=rubric, concurrency=args.concurrency,
                          max_retries=args.max_retries, max_cost=args.max_cost, max_tokens=args.max_tokens,
                          judge_max_tokens=args.judge_max_tokens, progress=not args.quiet)
    collector = Collector(load_prompts(args.prompts), CollectionClient(load_router_config(args.config),
                                                                       timeout=args.timeout), args.out, opts)
    s = asyncio.run(collector.run())
    print(f"answers {s.answered} (sent {s.sent} requests incl. retries and judge calls), failed {s.failed}, already "
          f"done {s.skipped_done}, judged again {s.rejudged}, not sent (cost ceiling) {s.not_sent_budget}; spent "
          f"${s.spent_usd:.4f} in total")
    if s.stopped_by_budget:
        print(f"stopped: the next call could exceed --max-cost {args.max_cost}; raise it and re-run to continue",
              file=sys.stderr)
    elif s.failed:
        print(f"{s.failed} calls failed after retries (see {collector.log_path}); re-run to retry only those",
              file=sys.stderr)
    print(f"wrote {s.out} ({collector.targets}) and its call log {collector.log_path}")
    return s.exit_code


def cmd_stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .log_stats import summarize_log

    st = summarize_log(args.log, args.feedback)
    lat = st["routing_latency_ms"]
    only = f" ({st['decided_only']} decided only: served by the caller, no outcome logged)" \
        if st["decided_only"] else ""
    print(f"{st['calls']} routed calls{only}, {st['failures']} failed; routing latency "
          + (f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else "not recorded"))
    print(_table(["target", "calls", "share", "failed", "cost (USD)", "mean P(correct)"],
                 [[t, v["calls"], f"{v['share']:.1%}", v["failures"], v["cost_usd"],
                   float("nan") if v["mean_p_correct"] is None else v["mean_p_correct"]]
                  for t, v in st["targets"].items()]))
    print("reasons: " + ", ".join(f"{k} {v}" for k, v in st["reasons"].items()))
    print("policies: " + ", ".join(f"{k} {v}" for k, v in st["policies"].items()))
    if st["limits"]["calls"]:
        print(f"limits (max_cost_usd / min_p_correct): {st['limits']['calls']} calls, "
              f"{st['limits']['excluded_a_target']} of them excluded a target")
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
    fb = st["feedback"]
    if fb:
        print(f"feedback: {fb['scored']} calls scored, mean {fb['mean_score']:.3f}; by the target that answered: "
              + ", ".join(f"{t} {v['mean_score']:.3f} ({v['scored']})" for t, v in fb["by_served_target"].items()))
    if st["arms"]:
        print("rollout arms (router: served by the router's choice; control: served as before):")
        print(_table(["arm", "calls", "failed", "failure rate", "cost (USD)", "cost per call (USD)", "scored",
                      "mean score"],
                     [[name, a["calls"], a["failures"], f"{a['failure_rate']:.1%}", a["cost_usd"],
                       float("nan") if a["cost_per_call_usd"] is None else a["cost_per_call_usd"], a["scored"],
                       float("nan") if a["mean_score"] is None else a["mean_score"]]
                      for name, a in st["arms"].items()]))
    if st["bundles"] and len(st["bundles"]) > 1:
        print("by bundle version (in the order they first decided a call):")
        print(_table(["version", "bundle", "calls", "failed", "first call", "saved", "mean P(correct)", "scored",
                      "mean score", "top target"],
                     [[v, b["bundle"], b["calls"], b["failures"], b["first_ts"] or "-",
                       "-" if b["savings_fraction"] is None else f"{b['savings_fraction']:.1%}",
                       float("nan") if b["mean_p_correct"] is None else b["mean_p_correct"], b["scored"],
                       float("nan") if b["mean_score"] is None else b["mean_score"],
                       next(iter(b["targets"]), "-")] for v, b in st["bundles"].items()]))
    if args.json:
        Path(args.json).write_text(json.dumps(st, indent=1))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .feedback import load_feedback
    from .jsonl import read_logs
    from .predictor import PrefillPredictor
    from .replay import ReplayError, policy_from_args, replay

    try:
        records = [rec for _, _, rec in read_logs(args.log, "decision log")]
    except FileNotFoundError as err:
        raise ReplayError(f"{err}; set routing_strategy_args.decision_log to write one") from err
    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    scores: dict[str, float] = {}
    for f in args.feedback or []:
        scores.update(load_feedback(f))
    r = replay(records, pred, policy=policy_from_args(args.preset, args.tolerance, args.lambda_, pred),
               scores=scores or None, progress=not args.quiet)
    print(f"replayed {r['calls']} logged calls with {r['bundle']} (version {r['bundle_version']}), policy "
          f"{r['policy']}" + (f"; {r['pinned']} pinned calls left as they were" if r["pinned"] else "")
          + (f"; skipped {sum(r['skipped'].values())}: {r['skipped']}" if r["skipped"] else ""))
    print(f"same route for {r['kept']} ({r['agreement']:.1%}), another for {r['moved']}; estimated cost "
          f"{r['estimated_cost_before_usd']:.6g} -> {r['estimated_cost_after_usd']:.6g} USD; mean P(correct) under "
          f"the new bundle: new route {r['mean_p_correct_new_route']:.3f}, old route "
          + ("-" if r["mean_p_correct_old_route"] is None else f"{r['mean_p_correct_old_route']:.3f}"))
    print(_table(["target", "calls before", "calls after"],
                 [[t, v["before"], v["after"]] for t, v in r["routes"].items()]))
    if r["top_moves"]:
        print("top moves: " + ", ".join(f"{m['from']} -> {m['to']} {m['calls']}" for m in r["top_moves"]))
    fb = r["feedback"]
    if fb:
        def mean(v: dict) -> str:
            return "-" if v["mean_score"] is None else f"{v['mean_score']:.3f}"
        print(f"feedback: calls kept {mean(fb['kept'])} ({fb['kept']['scored']} scored), calls it would move "
              f"{mean(fb['moved'])} ({fb['moved']['scored']} scored)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    if args.plot:
        _plot_replay(r, Path(args.plot))
    return 0


def _plot_replay(r: dict, path: Path) -> None:
    from .replay import ReplayError

    try:
        import matplotlib
    except ImportError as err:
        raise ReplayError(f"--plot needs matplotlib, which the serving install leaves out: pip install matplotlib "
                          f"(or litellm-prefill-router[train]) ({err})") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    from .feedback import feedback_rows
    from .jsonl import write_atomic

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

    from .errors import PrefillRouterError
    from .feedback import JudgedLines, judge_log
    from .jsonl import append_line, read_log
    from .judges import Completer, parse_judge

    judge = parse_judge(args.judge, _read_rubric(args.rubric), args.judge_max_tokens)
    complete: Completer | None = None
    client = None
    if judge.kind == "llm":
        from .collect import load_router_config
        from .collection_client import CollectionClient
        from .retrying import RetryPolicy, retried

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


def cmd_migrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from .semantic import migrate_auto_router_config

    src = Path(args.config)
    config = yaml.safe_load(src.read_text())
    mapping = dict(m.split("=", 1) for m in args.map or [])
    new, notes = migrate_auto_router_config(config, args.bundle, target_map=mapping, config_dir=src.parent)
    Path(args.out).write_text(yaml.safe_dump(new, sort_keys=False))
    for n in notes:
        print(f"- {n}")
    print(f"wrote {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .check import check_config, format_report, warnings_of

    report = check_config(args.config, args.prompt)
    print(format_report(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    problems = warnings_of(report)
    if args.strict and problems:
        print(f"--strict: {len(problems)} problem(s): " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


LOG_HELP = "the router's decision_log JSONL; several: e.g. the daily files of a {date} log (decisions-*.jsonl)"


def build_parser() -> argparse.ArgumentParser:
    from .judges import JUDGE_MAX_TOKENS  # stdlib only: --help stays fast

    p = argparse.ArgumentParser(prog="prefill-router", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a bundle")
    info.add_argument("--bundle", required=True, help="bundle directory or hf://owner/name[@revision][/path]")
    info.set_defaults(func=cmd_info)

    route = sub.add_parser("route", help="predict and route one prompt")
    route.add_argument("--bundle", required=True)
    route.add_argument("text", nargs="*", help="the prompt (default: stdin)")
    route.add_argument("--preset")
    route.add_argument("--tolerance", type=float)
    route.add_argument("--lambda", dest="lambda_", type=float)
    route.add_argument("--max-cost-usd", type=float, help="only targets whose estimated cost is at most this")
    route.add_argument("--min-p-correct", type=float, help="only targets at least this likely to be right")
    route.add_argument("--threads", type=int)
    route.add_argument("--json", action="store_true")
    route.set_defaults(func=cmd_route)

    pr = sub.add_parser("predict", help="P(correct) and cost per target for every prompt of a dataset (JSONL)")
    pr.add_argument("--bundle", required=True)
    pr.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
    pr.add_argument("--split", default="test", help="train | val | test | all (default: test)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--threads", type=int)
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="router vs baselines on the same rows (JSON + Markdown + PNG)")
    e.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
    e.add_argument("--models-json", help="prices per target (default: models.json beside the data)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--bundle", help="score this bundle (as served, ONNX) on --split")
    e.add_argument("--split", default="test", help="split to score a bundle on (default: test)")
    e.add_argument("--cv", type=int, help="K-fold cross-validation of the training recipe over every row")
    e.add_argument("--encoder", help="--cv: encoder (default smollm2)")
    e.add_argument("--layers", action="append",
                   help="--cv: comma-separated layers of one prefill variant (repeatable; default: probe selection)")
    e.add_argument("--head", default="trunk", choices=("trunk", "logreg"), help="--cv: head of the prefill variants")
    e.add_argument("--baselines", default="all",
                   help="all | none | comma list of knn,logreg,mlp,mf,benchmark (benchmark: per-benchmark accuracy "
                        "table read from each row's benchmark tag); random/cheapest/best single/oracle always")
    e.add_argument("--pair", help="STRONG,WEAK targets for APGR/CPT (default: most accurate, cheapest)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    e.add_argument("--threads", type=int)
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("collect", help="send every prompt to every target through LiteLLM and judge the answers")
    c.add_argument("--prompts", required=True, help="JSONL: id, prompt[, reference, judge, benchmark, split]")
    c.add_argument("--config", required=True, help="YAML with a LiteLLM model_list (the proxy config works)")
    c.add_argument("--out", required=True, help="training data file to write (JSONL)")
    c.add_argument("--targets", nargs="+", help="model groups to collect (default: all but the judge)")
    c.add_argument("--judge", help="exact | choice | numeric | regex[:PATTERN] | python:MOD:FUNC | llm:MODEL_GROUP")
    c.add_argument("--rubric", help="file with the LLM judge's rubric ({prompt}, {reference}, {answer})")
    c.add_argument("--concurrency", type=int, default=8)
    c.add_argument("--max-retries", type=int, default=5)
    c.add_argument("--max-cost", type=float, help="USD ceiling for this dataset (all runs together)")
    c.add_argument("--max-tokens", type=int, default=512, help="max output tokens per answer")
    c.add_argument("--judge-max-tokens", type=int, default=JUDGE_MAX_TOKENS,
                   help="max output tokens of an llm judge's reply (bounds its cost; --max-cost reserves it)")
    c.add_argument("--timeout", type=float, help="seconds per request")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_collect)

    fb = sub.add_parser("feedback", help="decision log + feedback -> training rows for --add")
    fb.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    fb.add_argument("--feedback", required=True, help='JSONL of {"id", "score"} or {"id", "thumbs": "up"|"down"}')
    fb.add_argument("--out", required=True)
    fb.add_argument("--benchmark", default="production", help="benchmark name for the rows")
    fb.set_defaults(func=cmd_feedback)

    st = sub.add_parser("stats", help="what a router did: calls, routes, reasons, latency, cost and savings")
    st.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    st.add_argument("--json", help="also write the summary here")
    st.add_argument("--feedback", nargs="+", help="feedback / judge score files ({id, score | thumbs} lines): mean "
                    "score per target that answered, and per rollout arm")
    st.set_defaults(func=cmd_stats)

    rp = sub.add_parser("replay", help="what another bundle would have done with logged traffic (offline)")
    rp.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    rp.add_argument("--bundle", required=True, help="the bundle to replay with: directory or hf://owner/name@rev")
    rp.add_argument("--preset", help="replay with this preset (default: each call's logged policy)")
    rp.add_argument("--tolerance", type=float)
    rp.add_argument("--lambda", dest="lambda_", type=float)
    rp.add_argument("--feedback", nargs="+", help="feedback / judge score files: mean score of kept and moved calls")
    rp.add_argument("--json", help="also write the summary here")
    rp.add_argument("--plot", help="PNG of the routes before and after")
    rp.add_argument("--threads", type=int)
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_replay)

    j = sub.add_parser("judge", help="score answers recorded in a decision log (decision_log_responses) later")
    j.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    j.add_argument("--judge", required=True, help="llm:MODEL_GROUP | python:MOD:FUNC | regex:PATTERN")
    j.add_argument("--config", help="YAML model_list holding the llm judge's model group")
    j.add_argument("--rubric", help="file with the LLM judge's rubric ({prompt}, {reference}, {answer})")
    j.add_argument("--judge-max-tokens", type=int, default=JUDGE_MAX_TOKENS,
                   help="max output tokens of an llm judge's reply")
    j.add_argument("--out", required=True, help="feedback JSONL: each score is appended as it is known; a rerun "
                   "judges only the answers not scored there")
    j.add_argument("--concurrency", type=int, default=8, help="answers judged at once (default 8)")
    j.add_argument("--quiet", action="store_true", help="no progress bar")
    j.set_defaults(func=cmd_judge)

    ck = sub.add_parser("check", help="what a LiteLLM proxy config does with its bundles: mapping, prices, routes")
    ck.add_argument("--config", required=True, help="the proxy config.yaml (or a bare model_list YAML)")
    ck.add_argument("--prompt", action="append", help="route this sample prompt in every model group (repeatable)")
    ck.add_argument("--json", help="also write the report here")
    ck.add_argument("--strict", action="store_true", help="exit 1 when a bundle target has no deployment")
    ck.set_defaults(func=cmd_check)

    pu = sub.add_parser("push", help="publish a bundle to the Hugging Face Hub (one commit, with a model card)")
    pu.add_argument("--bundle", required=True, help="bundle directory to publish (verified first)")
    pu.add_argument("--repo", required=True, help="model repository owner/name (created if missing)")
    pu.add_argument("--path-in-repo", help="folder inside the repository (default: its root; no model card then)")
    pu.add_argument("--branch", help="commit to this branch (created if missing; default: main)")
    pu.add_argument("--tag", help="tag the commit (serve it as hf://owner/name@TAG)")
    pu.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                    help="create the repository private (an existing one keeps its visibility)")
    pu.add_argument("--license", help="Hub licence id of the encoder (needed when the encoder is not a known one)")
    pu.add_argument("--message", help="commit message")
    pu.add_argument("--card", action=argparse.BooleanOptionalAction, default=True,
                    help="write README.md (model card) at the repository root (default on)")
    pu.set_defaults(func=cmd_push)

    pl = sub.add_parser("pull", help="copy a bundle (hf://owner/name@rev, or a directory) to a plain directory, "
                                     "verified: for an image or a machine without the Hub")
    pl.add_argument("--bundle", required=True, help="hf://owner/name[@revision][/path] or a bundle directory")
    pl.add_argument("--out", required=True, help="directory to write (replaced atomically if it exists)")
    pl.set_defaults(func=cmd_pull)

    mig = sub.add_parser("migrate", help="rewrite a LiteLLM auto_router (semantic) proxy config for prefill")
    mig.add_argument("--config", required=True)
    mig.add_argument("--bundle", required=True)
    mig.add_argument("--out", required=True)
    mig.add_argument("--map", nargs="*", help="model_group=target pairs for routes not named after a target")
    mig.set_defaults(func=cmd_migrate)

    for name, fn, helptext in (("train", cmd_train, "train a bundle"), ("probe", cmd_probe, "probe encoder layers")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
        t.add_argument("--encoder", default="smollm2", help="smollm2 | gemma3-270m | minilm-l6 | DIR | hub id")
        t.add_argument("--targets", nargs="+")
        t.add_argument("--max-tokens", type=int, default=512)
        t.add_argument("--max-auc-loss", type=float, default=None,
                       help="pick the shallowest layer within this probe AUC of the best (depth costs latency; "
                            "default 0.012)")
        t.set_defaults(func=fn)
        if name == "train":
            t.add_argument("--out", required=True)
            t.add_argument("--models-json")
            t.add_argument("--add", action="append", metavar="ROWS.jsonl",
                           help="extra training rows (from `collect` or `feedback`), repeatable")
            t.add_argument("--continue-from", metavar="BUNDLE",
                           help="keep this bundle's encoder and refit its scorer on --data plus --add (fast); "
                                "targets that only --add rows label are added to the bundle")
            t.add_argument("--layers", default="auto",
                           help="auto (probes + --max-auc-loss), or comma-separated layers (mean+last pooling each)")
            t.add_argument("--seeds", type=int, default=5)
            t.add_argument("--keep", type=int, default=3)
            t.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=True,
                           help="dynamic int8 encoder, kept only if validation AUC drops < 0.005 (default on)")
            t.add_argument("--external-data", action="store_true", default=None,
                           help="keep the encoder's weights in encoder.onnx.data beside the graph (automatic past "
                                "1.5 GB: one ONNX file cannot pass 2 GB)")
        else:
            t.add_argument("--out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .errors import PrefillRouterError

    try:
        return int(args.func(args))
    except PrefillRouterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
