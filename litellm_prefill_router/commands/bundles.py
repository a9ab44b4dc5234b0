"""`prefill-router` commands on bundles and configs: info, route, predict, check, push, pull, migrate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import PrefillRouterError
from .common import data_arg, table, write_text


def cmd_info(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle

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
    ref = b.report().get("reference")
    if isinstance(ref, dict):
        print(f"reference  {ref.get('n')} rows ({ref.get('source')}): `prefill-router drift` compares traffic with it"
              + ("; each decision's novelty is measured against them" if ref.get("rows") else ""))
    else:
        print("reference  none (trained before session 16): `drift` needs --reference-log, decisions carry no novelty")
    print()
    print(table(["target", "prior acc", "test AUC", "out tokens", "$/Mtok in", "$/Mtok out"],
                 [[t.name, t.prior_accuracy, t.test_auc if t.test_auc is not None else "-", t.expected_output_tokens,
                   (t.input_cost_per_token or 0) * 1e6, (t.output_cost_per_token or 0) * 1e6] for t in m.targets]))
    print()
    print(table(["preset", "kind", "value", "val acc", "description"],
                 [[k + (" (default)" if k == m.default_preset else ""), p.kind, p.value,
                   p.validation_accuracy if p.validation_accuracy is not None else "-", p.description]
                  for k, p in m.presets.items()]))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..publish import push_bundle

    result = push_bundle(args.bundle, args.repo, path_in_repo=args.path_in_repo or "", private=args.private,
                         branch=args.branch, tag=args.tag, licence=args.license, commit_message=args.message,
                         card=args.card)
    print(f"pushed {len(result.files)} files to {args.repo} in commit {result.commit} ({result.commit_url})")
    print(f"serve it with  bundle: {result.reference}" + (f"   (or @{args.tag})" if args.tag else ""))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..bundle import check_bundle_destination, copy_bundle, load_bundle

    check_bundle_destination(args.out)  # before fetching anything
    src = load_bundle(args.bundle)
    out = copy_bundle(src, args.out)
    print(f"copied {src.source} ({len(src.manifest.files) + 1} files, verified) to {out.directory}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from ..config import RequestOverrides
    from ..decider import PrefillDecider
    from ..predictor import PrefillPredictor

    decider = PrefillDecider(PrefillPredictor(args.bundle, intra_op_threads=args.threads), preset=args.preset,
                             tolerance=args.tolerance, lambda_=args.lambda_, value_usd=args.value_usd,
                             max_cost_usd=args.max_cost_usd,
                             min_p_correct=args.min_p_correct)
    text = " ".join(args.text) if args.text else sys.stdin.read()
    d = decider.decide(text, decider.manifest_prices(), RequestOverrides(), "cli")
    excluded = set((d.constraints or {}).get("excluded", ()))
    if args.json:
        print(json.dumps({"target": d.target, "reason": d.reason, "policy": d.policy.__dict__,
                          "input_tokens": d.input_tokens, "p_correct": dict(d.p_correct), "cost_usd": dict(d.cost_usd),
                          "constraints": d.constraints}))
        return 0
    print(table(["target", "P(correct)", "cost (USD)", ""],
                 [[t, d.p_correct.get(t, "-"), d.cost_usd.get(t, "-"),
                   "<- chosen" if t == d.target else ("outside the limits" if t in excluded else "")]
                  for t in d.candidates]))
    limits = "".join(f"; {k} {v:g}" for k, v in (d.constraints or {}).items() if k != "excluded")
    print(f"\npolicy {d.policy.kind}={d.policy.value} (preset {d.policy.preset}){limits}; {d.input_tokens} prompt "
          f"tokens{' (truncated)' if d.truncated else ''}; {d.reason} -> {d.target}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """One JSON line per prompt: {"id", "p_correct": {target: p}, "cost": {target: usd}} (ids from the data)."""
    from ..costs import cost_matrix, manifest_price
    from ..jsonl import write_predictions
    from ..predictor import PrefillPredictor
    from ..training.data import load_dataset  # numpy-only module: no torch

    pred = PrefillPredictor(args.bundle, intra_op_threads=args.threads)
    m = pred.bundle.manifest
    ds = load_dataset(data_arg(args.data), min_labels=0, require_scores=False)
    if Path(args.out).expanduser().resolve() == Path(ds.source).resolve():  # --data named its directory
        raise PrefillRouterError(f"--out {args.out} is also the data file of --data {args.data}, an input of this "
                                 "command; writing it would destroy what is read - name another file")
    # default: the data's test split; data that names no splits (prompts to score, say) is predicted whole
    split = args.split or ("all" if ds.splits_assigned else "test")
    rows = [r for r in ds.rows if split == "all" or r.split == split]
    if not rows:
        splits = sorted({r.split or "-" for r in ds.rows})
        named = "it names no splits" if ds.splits_assigned else f"its splits: {splits}"
        raise PrefillRouterError(f"no rows with split {split!r} in {ds.source} ({named}); pass --split all to "
                                 "predict every row")
    p, n_tokens = pred.predict_many([r.prompt for r in rows])
    prices = [(pr.input_cost_per_token, pr.output_cost_per_token) for pr in map(manifest_price, m.targets)]
    cost = cost_matrix(prices, n_tokens, [t.expected_output_tokens for t in m.targets])
    out = write_predictions(args.out, [r.id for r in rows], m.target_names, p, cost)
    print(f"wrote {len(rows)} predictions ({'every row' if split == 'all' else f'split {split}'}) to {out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:

    from ..check import check_config, format_report, warnings_of

    report = check_config(args.config, args.prompt)
    print(format_report(report), end="")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    problems = warnings_of(report)
    if args.strict and problems:
        print(f"--strict: {len(problems)} problem(s): " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0




def cmd_migrate(args: argparse.Namespace) -> int:

    import yaml

    from ..errors import ConfigurationError
    from ..semantic import migrate_auto_router_config

    src = Path(args.config)
    try:
        config = yaml.safe_load(src.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigurationError(f"cannot read the proxy config {src}: {err}") from err
    if not isinstance(config, dict):
        raise ConfigurationError(f"{src} is not a LiteLLM proxy config (a mapping with a model_list)")
    if bad := [m for m in args.map or [] if "=" not in m or not all(m.split("=", 1))]:
        raise ConfigurationError(f"--map takes model_group=target pairs, got {bad}")
    mapping = dict(m.split("=", 1) for m in args.map or [])
    new, notes = migrate_auto_router_config(config, args.bundle, target_map=mapping, config_dir=src.parent)
    write_text(args.out, yaml.safe_dump(new, sort_keys=False))
    for n in notes:
        print(f"- {n}")
    print(f"wrote {args.out}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from ..errors import ConfigurationError
    from ..settings_reference import markdown_table, settings_models, write_tables

    if args.write:
        changed = write_tables(args.write)
        print(f"{args.write}: {'settings tables rewritten' if changed else 'settings tables already current'}")
        return 0
    models = settings_models()
    if args.name is not None and args.name not in models:
        raise ConfigurationError(f"{args.name}'s settings need langchain-core: install the `langchain` extra")
    names = [args.name] if args.name else list(models)
    print("\n".join(f"{name}\n\n{markdown_table(models[name])}" for name in names), end="")
    return 0
