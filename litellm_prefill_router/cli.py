"""``prefill-router``: train, probe, route, info, predict, evaluate, collect, feedback, stats, replay, tune, drift,
judge, check, push, pull, migrate, settings. Every ``--bundle`` takes a directory or
``hf://owner/name[@revision][/path]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .commands.arg_types import FRACTION, THREADS, layer_list, number, out_dir, out_file, time_arg, whole
from .commands.bundles import (
    cmd_check,
    cmd_info,
    cmd_migrate,
    cmd_predict,
    cmd_pull,
    cmd_push,
    cmd_route,
    cmd_settings,
)
from .commands.common import DATA_ENV, check_outputs_apart
from .commands.learning import cmd_drift, cmd_tune
from .commands.logs import cmd_feedback, cmd_judge, cmd_replay, cmd_stats
from .commands.training import cmd_collect, cmd_evaluate, cmd_probe, cmd_train

LOG_HELP = "the router's decision_log JSONL; several: e.g. the daily files of a {date} log (decisions-*.jsonl)"


def _add_window(p: argparse.ArgumentParser) -> None:
    """--since / --until: only the logged calls of a time window (e.g. this week against --reference-log)."""
    p.add_argument("--since", type=time_arg, help="only calls logged at or after this ISO date / date-time (UTC unless "
                                              "it names a zone)")
    p.add_argument("--until", type=time_arg, help="only calls logged before this ISO date / date-time")


def build_parser() -> argparse.ArgumentParser:
    from .judges import JUDGE_MAX_TOKENS  # stdlib only: --help stays fast

    p = argparse.ArgumentParser(prog="prefill-router", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a bundle")
    info.add_argument("--bundle", required=True, help="bundle directory or hf://owner/name[@revision][/path]")
    info.set_defaults(func=cmd_info)

    route = sub.add_parser("route", help="predict and route one prompt")
    route.add_argument("--bundle", required=True, help="bundle directory or hf://owner/name[@revision][/path]")
    route.add_argument("text", nargs="*", help="the prompt (default: stdin)")
    route.add_argument("--preset", help="a policy preset of the bundle (default: its default preset)")
    route.add_argument("--tolerance", type=FRACTION, help="the cheapest target within this of the best P(correct)")
    route.add_argument("--lambda", dest="lambda_", type=number(),
                       help="max P(correct) - lambda x cost / the dearest candidate's cost")
    route.add_argument("--value-usd", type=number(), help="what a right answer is worth: max P(correct) x it - cost")
    route.add_argument("--max-cost-usd", type=number(), help="only targets whose estimated cost is at most this")
    route.add_argument("--min-p-correct", type=FRACTION, help="only targets at least this likely to be right")
    route.add_argument("--threads", type=THREADS, help="onnxruntime threads (default: its own)")
    route.add_argument("--json", action="store_true", help="print the decision as JSON")
    route.set_defaults(func=cmd_route)

    pr = sub.add_parser("predict", help="P(correct) and cost per target for every prompt of a dataset (JSONL); "
                        "labels optional")
    pr.add_argument("--bundle", required=True, help="bundle directory or hf://owner/name[@revision][/path]")
    pr.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
    pr.add_argument("--split", choices=("train", "val", "test", "all"),
                    help="rows to predict (default: the test split; every row when the data names no splits)")
    pr.add_argument("--out", required=True, type=out_file, help="predictions JSONL to write")
    pr.add_argument("--threads", type=THREADS, help="onnxruntime threads (default: its own)")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="router vs baselines on the same rows (JSON + Markdown + PNG)")
    e.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
    e.add_argument("--models-json", help="prices per target (default: models.json beside the data)")
    e.add_argument("--out", required=True, type=out_dir, help="output directory")
    e.add_argument("--bundle", help="score this bundle (as served, ONNX) on --split")
    e.add_argument("--split", default="test", help="split to score a bundle on (default: test)")
    e.add_argument("--cv", type=whole(2), help="K-fold cross-validation of the training recipe over every row")
    e.add_argument("--encoder", help="--cv: encoder (default smollm2)")
    e.add_argument("--layers", action="append", type=layer_list,
                   help="--cv: comma-separated layers of one prefill variant (repeatable; default: probe selection)")
    e.add_argument("--head", default="trunk", choices=("trunk", "logreg"), help="--cv: head of the prefill variants")
    e.add_argument("--baselines", default="all",
                   help="all | none | comma list of knn,logreg,mlp,mf,benchmark (benchmark: per-benchmark accuracy "
                        "table read from each row's benchmark tag); random/cheapest/best single/oracle always")
    e.add_argument("--pair", help="STRONG,WEAK targets for APGR/CPT (default: most accurate, cheapest)")
    e.add_argument("--bootstrap", type=whole(0), default=1000, help="bootstrap resamples for the 95%% intervals")
    e.add_argument("--threads", type=THREADS, help="onnxruntime threads (default: its own)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("collect", help="send every prompt to every target through LiteLLM and judge the answers")
    c.add_argument("--prompts", required=True, help="JSONL: id, prompt[, reference, judge, benchmark, split]")
    c.add_argument("--config", required=True, help="YAML with a LiteLLM model_list (the proxy config works)")
    c.add_argument("--out", required=True, type=out_file, help="training data file to write (JSONL)")
    c.add_argument("--targets", nargs="+", help="model groups to collect (default: all but the judge)")
    c.add_argument("--judge", help="exact | choice | numeric | regex[:PATTERN] | python:MOD:FUNC | llm:MODEL_GROUP")
    c.add_argument("--rubric", help="file with the LLM judge's rubric ({prompt}, {reference}, {answer})")
    c.add_argument("--concurrency", type=whole(1), default=8, help="calls in flight at once (default 8)")
    c.add_argument("--max-retries", type=whole(0), default=5,
                   help="retries of a rate-limited / timed-out / 5xx call, with back-off (default 5)")
    c.add_argument("--max-cost", type=number(low_open=True), help="USD ceiling for this dataset (all runs together)")
    c.add_argument("--max-tokens", type=whole(1), default=512, help="max output tokens per answer")
    c.add_argument("--judge-max-tokens", type=whole(1), default=JUDGE_MAX_TOKENS,
                   help="max output tokens of an llm judge's reply (bounds its cost; --max-cost reserves it)")
    c.add_argument("--timeout", type=number(low_open=True), help="seconds per request")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_collect)

    fb = sub.add_parser("feedback", help="decision log + feedback -> training rows for --add")
    fb.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    fb.add_argument("--feedback", required=True, help='JSONL of {"id", "score"} or {"id", "thumbs": "up"|"down"}')
    fb.add_argument("--out", required=True, type=out_file, help="training rows JSONL to write (for train --add)")
    fb.add_argument("--benchmark", default="production", help="benchmark name for the rows")
    fb.set_defaults(func=cmd_feedback)

    st = sub.add_parser("stats", help="what a router did: calls, routes, reasons, latency, cost and savings")
    st.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    _add_window(st)
    st.add_argument("--json", type=out_file, help="also write the summary here")
    st.add_argument("--feedback", nargs="+", help="feedback / judge score files ({id, score | thumbs} lines): mean "
                    "score per target that answered, and per rollout arm")
    st.set_defaults(func=cmd_stats)

    rp = sub.add_parser("replay", help="what another bundle would have done with logged traffic (offline)")
    rp.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    _add_window(rp)
    rp.add_argument("--bundle", required=True, help="the bundle to replay with: directory or hf://owner/name@rev")
    rp.add_argument("--preset", help="replay with this preset (default: each call's logged policy)")
    rp.add_argument("--tolerance", type=FRACTION, help="replay with this tolerance policy")
    rp.add_argument("--lambda", dest="lambda_", type=number(), help="replay with this lambda policy")
    rp.add_argument("--value-usd", type=number(), help="replay with this value_usd policy")
    rp.add_argument("--feedback", nargs="+", help="feedback / judge score files: mean score of kept and moved calls")
    rp.add_argument("--json", type=out_file, help="also write the summary here")
    rp.add_argument("--plot", type=out_file, help="PNG of the routes before and after")
    rp.add_argument("--threads", type=THREADS, help="onnxruntime threads (default: its own)")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_replay)

    tu = sub.add_parser("tune", help="the policy setting that fits a budget, on the traffic a router logged")
    tu.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    _add_window(tu)
    goal = tu.add_mutually_exclusive_group(required=True)
    goal.add_argument("--budget-usd-per-1k", type=number(low_open=True),
                      help="the most expected accuracy within this estimated cost per 1,000 requests")
    goal.add_argument("--savings", type=FRACTION,
                      help="... within this fraction saved vs each call's dearest candidate")
    goal.add_argument("--min-expected-accuracy", type=FRACTION,
                      help="the cheapest setting reaching this mean P(correct)")
    tu.add_argument("--model-group", help="only the calls routed in this model group")
    tu.add_argument("--feedback", nargs="+", help="feedback / judge score files ({id, score | thumbs} lines): the "
                                                  "observed score of the calls each setting keeps, and calibration")
    tu.add_argument("--recalibrate", action="store_true",
                    help="with --feedback (30+ scored calls): expected accuracies from P(correct) recalibrated to the "
                         "scores (a logistic fit); the routes stay the router's")
    tu.add_argument("--simulate-autotune", action="store_true",
                    help="also replay the log through autotune with this goal: its setting changes and what it would "
                         "have spent, call by call in logged order")
    tu.add_argument("--window", type=whole(1), help="--simulate-autotune: the calls each tune looks at (default 2000)")
    tu.add_argument("--every", type=whole(1), help="--simulate-autotune: calls between tunes (default 100)")
    tu.add_argument("--min-calls", type=whole(1),
                    help="--simulate-autotune: calls before the first tune (default 200)")
    tu.add_argument("--json", type=out_file, help="also write the sweep, frontier and choice here")
    tu.add_argument("--plot", type=out_file,
                    help="PNG of expected accuracy vs cost for every setting (needs matplotlib)")
    tu.set_defaults(func=cmd_tune)

    dr = sub.add_parser("drift", help="does the traffic a router logged still look like its bundle's training data?")
    dr.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    _add_window(dr)
    ref = dr.add_mutually_exclusive_group(required=True)
    ref.add_argument("--bundle", help="compare with this bundle's reference (its validation split); only the calls "
                                      "its version decided count")
    ref.add_argument("--reference-log", nargs="+", help="compare with an earlier decision log (e.g. last month's)")
    dr.add_argument("--model-group", help="only the calls routed in this model group")
    dr.add_argument("--feedback", nargs="+", help="feedback / judge score files: per answering target, its mean "
                                                  "P(correct) against its mean score on this traffic")
    dr.add_argument("--min-calls", type=whole(1), default=200, help="calls a target needs for a verdict (default 200)")
    dr.add_argument("--fail-on", choices=["moderate", "major"],
                    help="exit 3 when the verdict is this shift or worse (for a scheduled check)")
    dr.add_argument("--novel-out", type=out_file,
                    help="write the novel calls (unlike any reference row), furthest first, here as `collect` prompts: "
                         "the ones to label first")
    dr.add_argument("--json", type=out_file, help="also write the report here")
    dr.add_argument("--plot", type=out_file, help="PNG of each target's PSI and mean P(correct) against the reference")
    dr.set_defaults(func=cmd_drift)

    j = sub.add_parser("judge", help="score answers recorded in a decision log (decision_log_responses) later")
    j.add_argument("--log", required=True, nargs="+", help=LOG_HELP)
    j.add_argument("--judge", required=True, help="llm:MODEL_GROUP | python:MOD:FUNC | regex:PATTERN")
    j.add_argument("--config", help="YAML model_list holding the llm judge's model group")
    j.add_argument("--rubric", help="file with the LLM judge's rubric ({prompt}, {reference}, {answer})")
    j.add_argument("--judge-max-tokens", type=whole(1), default=JUDGE_MAX_TOKENS,
                   help="max output tokens of an llm judge's reply")
    j.add_argument("--out", required=True, type=out_file,
                   help="feedback JSONL: each score is appended as it is known; a rerun judges only the answers not "
                        "scored there")
    j.add_argument("--concurrency", type=whole(1), default=8, help="answers judged at once (default 8)")
    j.add_argument("--quiet", action="store_true", help="no progress bar")
    j.set_defaults(func=cmd_judge)

    ck = sub.add_parser("check", help="what a LiteLLM proxy config does with its bundles: mapping, prices, routes")
    ck.add_argument("--config", required=True, help="the proxy config.yaml (or a bare model_list YAML)")
    ck.add_argument("--prompt", action="append", help="route this sample prompt in every model group (repeatable)")
    ck.add_argument("--json", type=out_file, help="also write the report here")
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
    pl.add_argument("--out", required=True,
                    help="directory to write (new, empty, or an earlier bundle it replaces atomically)")
    pl.set_defaults(func=cmd_pull)

    mig = sub.add_parser("migrate", help="rewrite a LiteLLM auto_router (semantic) proxy config for prefill")
    mig.add_argument("--config", required=True, help="the proxy config with auto_router (semantic) deployments")
    mig.add_argument("--bundle", required=True, help="bundle directory or hf://owner/name[@revision][/path]")
    mig.add_argument("--out", required=True, type=out_file, help="the rewritten config to write")
    mig.add_argument("--map", nargs="*", help="model_group=target pairs for routes not named after a target")
    mig.set_defaults(func=cmd_migrate)

    st = sub.add_parser("settings", help="every routing_strategy_args / metadata.prefill / autotune setting, and "
                                         "the constructor arguments of PrefillTierClassifier, PrefillRoutingPlugin, "
                                         "PrefillSemanticRouter and PrefillRouterRunnable: type, bounds, default, "
                                         "what it does")
    st.add_argument("name", nargs="?", help="one table (default: all)",
                    choices=("routing_strategy_args", "metadata.prefill", "autotune", "PrefillTierClassifier",
                             "PrefillRoutingPlugin", "PrefillSemanticRouter", "PrefillRouterRunnable"))
    st.add_argument("--write", metavar="MARKDOWN",
                    help="rewrite the tables between <!-- settings: NAME --> ... <!-- /settings --> in this file")
    st.set_defaults(func=cmd_settings)

    for name, fn, helptext in (("train", cmd_train, "train a bundle"), ("probe", cmd_probe, "probe encoder layers")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--data", help=f"dataset file or directory (or ${DATA_ENV})")
        t.add_argument("--encoder", default="smollm2", help="smollm2 | gemma3-270m | minilm-l6 | DIR | hub id")
        t.add_argument("--targets", nargs="+", help="only these targets (default: every target the data labels)")
        t.add_argument("--max-tokens", type=whole(8), default=512,
                       help="prompt tokens the encoder reads (longer: head 1/4 + tail 3/4; default 512)")
        t.add_argument("--max-auc-loss", type=number(0.0, 1.0), default=None,
                       help="pick the shallowest layer within this probe AUC of the best (depth costs latency; "
                            "default 0.012)")
        t.set_defaults(func=fn)
        if name == "train":
            t.add_argument("--out", required=True,
                           help="bundle directory to write (new, empty, or an earlier bundle it replaces)")
            t.add_argument("--models-json", help="prices per target (default: models.json beside the data)")
            t.add_argument("--add", action="append", metavar="ROWS.jsonl",
                           help="extra training rows (from `collect` or `feedback`), repeatable")
            t.add_argument("--continue-from", metavar="BUNDLE",
                           help="keep this bundle's encoder and refit its scorer on --data plus --add (fast); "
                                "targets that only --add rows label are added to the bundle")
            t.add_argument("--layers", default=None, type=layer_list,
                           help="auto (probes + --max-auc-loss; the default), or comma-separated layers (mean+last "
                                "pooling each)")
            t.add_argument("--seeds", type=whole(1), default=5, help="trunks trained (default 5)")
            t.add_argument("--keep", type=whole(1), default=3,
                           help="of them, the best on validation kept as the ensemble (default 3, at most --seeds)")
            t.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=True,
                           help="dynamic int8 encoder, kept only if validation AUC drops < 0.005 (default on)")
            t.add_argument("--device", default="auto",
                           help="where to extract features: auto (a CUDA GPU if torch has one), cpu, cuda, cuda:N")
            t.add_argument("--external-data", action="store_true", default=None,
                           help="keep the encoder's weights in encoder.onnx.data beside the graph (automatic past "
                                "1.5 GB: one ONNX file cannot pass 2 GB)")
        else:
            t.add_argument("--out", type=out_dir, help="directory for the probe report (JSON + PNG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .errors import PrefillRouterError

    try:
        check_outputs_apart(args)
        return int(args.func(args))
    except PrefillRouterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `prefill-router stats ... | head`: the reader left; no traceback, as other tools
        try:  # what is still buffered goes nowhere, instead of failing again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a file descriptor (embedded): nothing to redirect
            pass
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
