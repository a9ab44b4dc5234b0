"""``prefill-router``: train, probe, route, info."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

DATA_ENV = "PREFILL_ROUTER_DATA"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    print(f"bundle     {b.directory}")
    print(f"encoder    {m.encoder.id} @ {m.encoder.revision} ({m.encoder.kind}), layers {list(m.encoder.layers)}, "
          f"pooling {list(m.encoder.pooling)}, max {m.encoder.max_prefill_tokens} tokens, "
          f"{'int8' if m.encoder.quantized else 'fp32'}")
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


def cmd_route(args: argparse.Namespace) -> int:
    from .config import RequestOverrides
    from .decider import PrefillDecider
    from .predictor import PrefillPredictor

    decider = PrefillDecider(PrefillPredictor(args.bundle, intra_op_threads=args.threads), preset=args.preset,
                             tolerance=args.tolerance, lambda_=args.lambda_)
    text = " ".join(args.text) if args.text else sys.stdin.read()
    d = decider.decide(text, decider.manifest_prices(), RequestOverrides(), "cli")
    if args.json:
        print(json.dumps({"target": d.target, "reason": d.reason, "policy": d.policy.__dict__,
                          "input_tokens": d.input_tokens, "p_correct": dict(d.p_correct), "cost_usd": dict(d.cost_usd)}))
        return 0
    print(_table(["target", "P(correct)", "cost (USD)", ""],
                 [[t, d.p_correct.get(t, "-"), d.cost_usd.get(t, "-"), "<- chosen" if t == d.target else ""]
                  for t in d.candidates]))
    print(f"\npolicy {d.policy.kind}={d.policy.value} (preset {d.policy.preset}); {d.input_tokens} prompt tokens"
          f"{' (truncated)' if d.truncated else ''}; {d.reason} -> {d.target}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """One JSON line per prompt: {"id", "p_correct": {target: p}, "cost": {target: usd}} (ids from the data)."""
    from pathlib import Path

    from .costs import estimate_cost, manifest_price
    from .predictor import PrefillPredictor
    from .training.data import load_dataset  # numpy-only module: no torch

    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    m = pred.bundle.manifest
    ds = load_dataset(_data_arg(args.data), min_labels=0)
    rows = [r for r in ds.rows if args.split in (None, "all") or r.split == args.split]
    if not rows:
        raise SystemExit(f"error: no rows with split {args.split!r} in {ds.source}")
    prices = {t.name: manifest_price(t) for t in m.targets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            enc = pred.encode([r.prompt for r in chunk])
            probs = pred.probabilities_for_ids([e.ids for e in enc])
            for r, e, p in zip(chunk, enc, probs):
                f.write(json.dumps({
                    "id": r.id,
                    "p_correct": {t.name: round(float(x), 6) for t, x in zip(m.targets, p)},
                    "cost": {t.name: estimate_cost(prices[t.name], e.n_tokens, t.expected_output_tokens)
                             for t in m.targets},
                }) + "\n")
            logging.getLogger(__name__).info("predicted %d/%d", min(start + 64, len(rows)), len(rows))
    print(f"wrote {len(rows)} predictions to {out}")
    return 0


def _data_arg(value: str | None) -> str:
    data = value or os.environ.get(DATA_ENV)
    if not data:
        raise SystemExit(f"error: give --data PATH or set {DATA_ENV}")
    return data


def cmd_train(args: argparse.Namespace) -> int:
    from .training.pipeline import TrainOptions, train

    layers = None if args.layers in (None, "auto") else [int(x) for x in args.layers.split(",")]
    opts = TrainOptions(encoder=args.encoder, targets=args.targets, layers=layers, max_auc_loss=args.max_auc_loss,
                        max_tokens=args.max_tokens, seeds=args.seeds, keep=min(args.keep, args.seeds),
                        quantize=args.quantize)
    bundle, report = train(_data_arg(args.data), args.out, opts, models_json=args.models_json)
    print()
    print(_table(["stage", "seconds"], [[k, v] for k, v in report["stage_seconds"].items()] +
                 [["total", report["total_seconds"]]]))
    sel = report["probes"]["selected"]
    print(f"\nselected layer {sel['layer']} pooling {'+'.join(sel['pooling'])} (probe AUC {sel['auc']:.3f}; best "
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
    print(f"\nbundle written to {bundle.directory}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .training.data import load_dataset
    from .training.pipeline import TrainOptions, compute_features, split_validation
    from .training.probes import plot_probes, run_probes, select_layer

    ds = load_dataset(_data_arg(args.data), targets=args.targets)
    opts = TrainOptions(encoder=args.encoder, max_tokens=args.max_tokens)
    _, cache = compute_features(ds, opts)
    fit_idx, _ = split_validation(ds, ds.indices("train"), opts.val_fraction)
    res = run_probes(cache, ds.scores(), ds.targets, fit_idx)
    sel = select_layer(res, args.max_auc_loss)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefill-router", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a bundle")
    info.add_argument("--bundle", required=True)
    info.set_defaults(func=cmd_info)

    route = sub.add_parser("route", help="predict and route one prompt")
    route.add_argument("--bundle", required=True)
    route.add_argument("text", nargs="*", help="the prompt (default: stdin)")
    route.add_argument("--preset")
    route.add_argument("--tolerance", type=float)
    route.add_argument("--lambda", dest="lambda_", type=float)
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
        t.add_argument("--max-auc-loss", type=float, default=0.01,
                       help="pick the shallowest layer within this probe AUC of the best (depth costs latency)")
        t.set_defaults(func=fn)
        if name == "train":
            t.add_argument("--out", required=True)
            t.add_argument("--models-json")
            t.add_argument("--layers", default="auto",
                           help="auto (probes + --max-auc-loss), or comma-separated layers (mean+last pooling each)")
            t.add_argument("--seeds", type=int, default=5)
            t.add_argument("--keep", type=int, default=3)
            t.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=True,
                           help="dynamic int8 encoder, kept only if validation AUC drops < 0.005 (default on)")
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
