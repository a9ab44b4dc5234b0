"""`prefill-router` commands that need the train extra: train, probe, evaluate, collect."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import data_arg, read_rubric, table


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.data import add_rows, load_dataset

    ds = load_dataset(data_arg(args.data), models_json=args.models_json, targets=args.targets)
    if args.add:  # may label targets the base data lacks (a model added to the fleet): new trunk columns
        ds = add_rows(ds, args.add, new_targets=True)
    if args.continue_from:
        from ..training.continued import continue_training

        bundle, report = continue_training(args.continue_from, ds, args.out, seeds=args.seeds,
                                           keep=min(args.keep, args.seeds))
        test = report.get("test")
        print(f"refitted the scorer of {args.continue_from} on {report['rows']['fit']} rows "
              f"({report['rows']['labels']} labels) in {report['seconds']} s"
              + (f"; test mean AUC {test['mean_auc']:.3f}" if test else ""))
        print(f"bundle written to {bundle.directory}")
        return 0
    from ..training.pipeline import TrainOptions, train

    layers = args.layers  # None: the probes choose
    extra = {} if args.max_auc_loss is None else {"max_auc_loss": args.max_auc_loss}
    opts = TrainOptions(encoder=args.encoder, targets=args.targets, layers=layers, **extra,
                        max_tokens=args.max_tokens, seeds=args.seeds, keep=min(args.keep, args.seeds),
                        quantize=args.quantize, external_data=args.external_data or None, device=args.device)
    bundle, report = train(ds, args.out, opts)
    print()
    print(table(["stage", "seconds"], [[k, v] for k, v in report["stage_seconds"].items()] +
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
        print(table(["target", "AUC"], [[t, a] for t, a in test["auc"].items()]))
        print()
        print(table(["preset", "accuracy", "gap captured", "savings vs most expensive", "cost (USD)"],
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

    from ..training.data import load_dataset
    from ..training.pipeline import TrainOptions, compute_features, split_validation
    from ..training.probes import plot_probes, run_probes, select_layer

    ds = load_dataset(data_arg(args.data), targets=args.targets)
    opts = TrainOptions(encoder=args.encoder, max_tokens=args.max_tokens)
    if args.max_auc_loss is not None:
        opts.max_auc_loss = args.max_auc_loss
    _, cache = compute_features(ds, opts)
    fit_idx, _ = split_validation(ds, ds.indices("train"), opts.val_fraction)
    res = run_probes(cache, ds.scores(), ds.targets, fit_idx)
    sel = select_layer(res, opts.max_auc_loss)
    print(table(["layer", "pooling", "J", "d_eff", "AUC"],
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
    from ..errors import PrefillRouterError

    if (args.cv is None) == (args.bundle is None):
        raise PrefillRouterError("evaluate needs exactly one of --bundle DIR (score a trained bundle on --split) or "
                                 "--cv K (cross-validate the training recipe over the whole dataset)")
    if args.cv is None and (args.layers or args.encoder):
        raise PrefillRouterError("--layers/--encoder apply to --cv; a bundle already fixes its encoder and layers")

    import numpy as np

    from ..training import harness, reports
    from ..training.data import load_dataset

    baselines = [] if args.baselines == "none" else (
        list(harness.BASELINE_NAMES) if args.baselines == "all" else [b.strip() for b in args.baselines.split(",")])
    pair = None
    if args.pair:
        parts = [x.strip() for x in args.pair.split(",")]
        if len(parts) != 2:
            raise PrefillRouterError(f"--pair wants STRONG,WEAK target names, got {args.pair!r}")
        pair = (parts[0], parts[1])
    ds = load_dataset(data_arg(args.data), models_json=args.models_json)
    if args.cv is not None:
        variants = [harness.PrefillVariant(layers, head=args.head) for layers in (args.layers or []) if layers]
        report, preds, es = harness.cross_validate(ds, folds=args.cv, encoder=args.encoder, variants=variants,
                                                   baselines=baselines, bootstrap=args.bootstrap, pair=pair,
                                                   progress=not args.quiet)
    else:
        report, preds, es = harness.evaluate_bundle(ds, args.bundle, split=args.split, baselines=baselines,
                                                    bootstrap=args.bootstrap, pair=pair, threads=args.threads,
                                                    progress=not args.quiet)
    out = reports.write_report(report, preds, es, args.out)
    print(reports.markdown(report).split("\n\n## ")[0])
    unlabelled = int(np.isnan(es.hard).sum())
    if unlabelled:  # every router and baseline is scored the same way, but a route to such a cell scores 0
        print(f"\nnote: {unlabelled} prompt x target cells of the evaluated rows have no label; a route to one "
              "counts as a wrong answer for every router and baseline (label every target on the rows you evaluate "
              "on for accuracies that do not depend on where the gaps are)")
    print(f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'curve.png'}"
          f"{', ' + str(out / 'oof_preds.jsonl') if args.cv is not None else ', ' + str(out / 'preds.jsonl')}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Every prompt to every target through LiteLLM -> a training dataset (resumable, cost-capped)."""
    import asyncio

    from ..collect import CollectOptions, Collector, load_prompts, load_router_config
    from ..collection_client import CollectionClient

    rubric = read_rubric(args.rubric)
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
