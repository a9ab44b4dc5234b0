"""``prefill-router check``: what a LiteLLM proxy config will do with its bundles, before it serves traffic.

Builds the config's router the way the proxy does (no provider is called) and reports, for every prefill strategy
(router-wide and per ``routing_groups`` entry): the bundle and policy, each target's deployments and prices (and
where each price comes from), deployments no target maps, targets no deployment serves - and, for sample prompts,
the route each model group would take. A misconfiguration the proxy would refuse at start-up (an unknown
``prefill_target``, an unpriced deployment, a missing or broken bundle) is the typed error it would raise; one it
would start with but serve wrongly (a bundle target no deployment serves, ``metrics: true`` with no ``/metrics``
to serve them) is a warning, which ``--strict`` refuses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .composition import context_window, setting_of
from .errors import ConfigurationError
from .proxy_config import load_proxy_config


def serves_prometheus(litellm_settings: dict[str, Any]) -> bool:
    """The proxy mounts ``/metrics`` (litellm's ``prometheus`` callback in ``callbacks`` or ``success_callback``)."""
    def names(value: object) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return any(n == "prometheus" for key in ("callbacks", "success_callback") for n in names(litellm_settings.get(key)))


def check_config(path: str | Path, prompts: list[str] | None = None) -> dict[str, Any]:
    """The report of ``prefill-router check`` (raises the typed error a misconfiguration gets at start-up)."""
    from .router import prefill_strategies, router_from_config

    model_list, router_settings, litellm_settings = load_proxy_config(path)
    router = router_from_config(model_list, router_settings)
    strategies = prefill_strategies(router)
    if not strategies:
        raise ConfigurationError(
            f"{path}: no prefill strategy - set router_settings.routing_strategy: prefill (with routing_strategy_args."
            "bundle), or a routing_groups entry with routing_strategy: prefill")
    report: dict[str, Any] = {"config": str(path), "strategies": [],
                              "serves_metrics": serves_prometheus(litellm_settings)}
    pre_call_checks = bool(setting_of(router, "enable_pre_call_checks", False))
    for name, strategy in strategies.items():
        routes = strategy.routes()
        entry: dict[str, Any] = {
            "name": name, "bundle": str(strategy.args.bundle),
            "bundle_served": strategy.predictor.bundle.source,  # an hf:// reference with the commit it resolved to
            "policy": strategy.decider.default_policy.describe(),
            "autotune": strategy.args.autotune.describe() if strategy.args.autotune is not None else None,
            # what a (re)started router routes by: the setting tuned on the calls read back from its decision log
            "autotune_start": ({str(g): (st["policy"] if st else None)
                                for g, st in strategy.autotuner.status().items()} if strategy.autotuner else None),
            "answer_lengths_start": strategy.answer_lengths.status() if strategy.answer_lengths else None,
            "limits": {k: v for k, v in (("max_cost_usd", strategy.args.max_cost_usd),
                                         ("min_p_correct", strategy.args.min_p_correct)) if v is not None},
            "fallback_target": strategy.fallback_target,
            "encoder_providers": strategy.predictor.providers,  # where onnxruntime runs the encoder (execution_providers)
            "metrics": strategy.args.metrics,
            "decision_timeout_s": strategy.args.decision_timeout_s,
            "serving": "shadow" if strategy.args.shadow else
                       f"rollout {strategy.args.rollout:.0%}" if strategy.args.rollout < 1.0 else "routed",
            "model_groups": {group: [{"target": info.target, "model_name": info.model_name,
                                      "model": str((dep.get("litellm_params") or {}).get("model")),
                                      "input_usd_per_mtok": info.price.input_cost_per_token * 1e6,
                                      "output_usd_per_mtok": info.price.output_cost_per_token * 1e6,
                                      "price_from": info.price.source,
                                      "max_input_tokens": context_window(router, dep, group)} for dep, info in deps]
                             for group, deps in routes.items()},
            "pre_call_checks": pre_call_checks,
            "unmapped_deployments": list(strategy.unmapped),
            "targets_without_deployment": list(strategy.targets_without_deployment),
            "routes": [],
        }
        for prompt in prompts or []:
            for group, deps in routes.items():
                d = asyncio.run(strategy.decide(prompt, deps, {}, group))
                entry["routes"].append({"prompt": prompt, "model_group": group, "target": d.target,
                                        "reason": d.reason, "p_correct": dict(d.p_correct),
                                        "cost_usd": dict(d.cost_usd)})
        entry["notes"] = _setting_notes(strategy.args)
        entry["mixed_context_windows"] = {}
        for group, deps in entry["model_groups"].items():
            windows = {d["target"]: d["max_input_tokens"] for d in deps if d["max_input_tokens"] is not None}
            if not pre_call_checks and len(set(windows.values())) > 1:
                entry["mixed_context_windows"][group] = windows
        report["strategies"].append(entry)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one section per prefill strategy."""
    from .commands.common import table

    out = []
    for s in report["strategies"]:
        timeout = f", decision timeout {s['decision_timeout_s']:g} s" if s["decision_timeout_s"] else ""
        served = f" (serves {s['bundle_served']})" if s["bundle_served"] != s["bundle"] and \
            s["bundle"].startswith("hf://") else ""
        limits = "".join(f" {k} {v:g}," for k, v in s["limits"].items())
        autotune = f" autotuned to {s['autotune']}," if s["autotune"] else ""
        if s.get("autotune_start"):
            autotune += " starting from " + ", ".join(f"{p or 'the configured policy'} in {g!r}"
                                                      for g, p in s["autotune_start"].items()) + " (decision log),"
        out.append(f"{s['name']}: bundle {s['bundle']}{served}, policy {s['policy']},{autotune}{limits} fallback "
                   f"{s['fallback_target']}{timeout}, serving: {s['serving']}, encoder on {s['encoder_providers'][0]}")
        for group, deps in s["model_groups"].items():
            out.append(f"\nmodel group {group!r}:")
            out.append(table(["target", "deployment model", "$/Mtok in", "$/Mtok out", "price from", "context"],
                              [[d["target"], d["model"], d["input_usd_per_mtok"], d["output_usd_per_mtok"],
                                d["price_from"], d["max_input_tokens"] or "-"] for d in deps]))
        if s["targets_without_deployment"]:
            out.append(f"\nwarning: bundle targets no deployment serves (never chosen): "
                       f"{', '.join(s['targets_without_deployment'])}")
        if s["metrics"] and not report["serves_metrics"]:
            out.append(f"\nwarning: {_NO_METRICS_ENDPOINT}")
        for group, windows in s["mixed_context_windows"].items():
            out.append(f"\nwarning: {_mixed_windows(group, windows)}")
        out.extend(f"note: {n}" for n in s["notes"])
        if s["unmapped_deployments"]:
            out.append(f"note: deployments this strategy does not route (litellm routes them as usual): "
                       f"{', '.join(s['unmapped_deployments'])}")
        if s["routes"]:
            out.append("")
            out.append(table(["prompt", "model group", "target", "reason", "P(correct)", "est. cost USD"],
                              [[_short(r["prompt"]), r["model_group"], r["target"], r["reason"],
                                r["p_correct"].get(r["target"], float("nan")), r["cost_usd"].get(r["target"],
                                                                                                 float("nan"))]
                               for r in s["routes"]]))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _setting_notes(args: Any) -> list[str]:
    """Advice on how the strategy's settings work together (not errors: ``--strict`` does not refuse them)."""
    notes = []
    if args.autotune is not None and args.autotune.seed_from_log and not args.decision_log:
        notes.append(f"autotune has no decision_log to start from: after each restart the configured policy decides "
                     f"the first {args.autotune.min_calls} calls; set decision_log to keep the tuned setting")
    if args.autotune is not None and args.autotune.budget_usd_per_1k is not None and not args.learn_output_tokens:
        notes.append("autotune's budget_usd_per_1k is met on the decisions' cost estimates, which use the bundle's "
                     "answer lengths; with learn_output_tokens: true they use the answers' own (`prefill-router stats` "
                     "shows how far the estimates are from what calls cost)")
    return notes


_NO_METRICS_ENDPOINT = ("metrics: true, but litellm_settings has no `prometheus` callback, so the proxy serves no "
                        "/metrics; add prometheus to litellm_settings.callbacks (with --num_workers, also set "
                        "PROMETHEUS_MULTIPROC_DIR)")


def _mixed_windows(group: str, windows: dict[str, int]) -> str:
    smallest = min(windows, key=lambda t: windows[t])
    listed = ", ".join(f"{t} {n}" for t, n in sorted(windows.items(), key=lambda kv: kv[1]))
    return (f"model group {group!r} mixes context windows (max input tokens: {listed}) and "
            f"router_settings.enable_pre_call_checks is off: a prompt longer than {windows[smallest]} tokens routed "
            f"to {smallest} fails there; set enable_pre_call_checks: true so the router chooses only among the "
            "deployments a prompt fits")


def warnings_of(report: dict[str, Any]) -> list[str]:
    """What ``--strict`` refuses: bundle targets that no deployment serves; metrics nothing will serve; context
    windows that differ within a routed group while litellm's pre-call checks are off."""
    return [*(f"{s['name']}: no deployment serves {t}" for s in report["strategies"]
              for t in s["targets_without_deployment"]),
            *(f"{s['name']}: {_NO_METRICS_ENDPOINT}" for s in report["strategies"]
              if s["metrics"] and not report["serves_metrics"]),
            *(f"{s['name']}: {_mixed_windows(g, w)}" for s in report["strategies"]
              for g, w in s["mixed_context_windows"].items())]


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
