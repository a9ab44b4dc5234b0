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

from .check_plugins import import_object, plugin_entry, plugin_warnings, price_columns, resolve_routing_plugins
from .composition import context_window, setting_of
from .deployments import complexity_config, deployment_model
from .errors import ConfigurationError
from .proxy_config import load_proxy_config


def _callbacks(litellm_settings: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, name) of each entry of the config's ``litellm_settings.callbacks`` and ``success_callback``."""
    def names(value: object) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return [(key, n) for key in ("callbacks", "success_callback") for n in names(litellm_settings.get(key))]


def serves_prometheus(litellm_settings: dict[str, Any]) -> bool:
    """The proxy mounts ``/metrics`` (litellm's ``prometheus`` callback in ``callbacks`` or ``success_callback``)."""
    return any(name == "prometheus" for _, name in _callbacks(litellm_settings))


def import_own_callbacks(litellm_settings: dict[str, Any], config_dir: Path) -> None:
    """Import this package's callbacks the config names, as the proxy does at start-up: a misspelt one is a
    :class:`~.errors.ConfigurationError` naming it."""
    for key, name in _callbacks(litellm_settings):
        if name.startswith("litellm_prefill_router."):
            import_object(name, config_dir, f"litellm_settings.{key} entry {name}")


def resolve_classifiers(model_list: list[dict[str, Any]], config_dir: Path) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Replace each complexity router's ``classifier_plugin`` dotted path (``module.attribute``) by the object it names,
    imported as the proxy imports it: the module from the config's directory, else from the installed packages.
    Returns model name -> (its :class:`~.tier_classifier.PrefillTierClassifier`, its complexity_router_config) for
    the routers whose classifier is one."""
    from .tier_classifier import PrefillTierClassifier

    found: dict[str, tuple[Any, dict[str, Any]]] = {}
    for dep in model_list:
        cfg = complexity_config(dep)
        path = cfg.get("classifier_plugin") if cfg is not None else None
        if cfg is None or not isinstance(path, str):
            continue
        cfg["classifier_plugin"] = import_object(
            path, config_dir, f"complexity router {dep.get('model_name')!r}: classifier_plugin {path!r}")
        if isinstance(cfg["classifier_plugin"], PrefillTierClassifier):
            found[str(dep.get("model_name"))] = (cfg["classifier_plugin"], cfg)
    return found


def _serving(shadow: bool, rollout: float, otherwise: str) -> str:
    """How a router serves requests: ``shadow``, ``rollout N%`` (that share by its choice), else ``otherwise``."""
    return "shadow" if shadow else f"rollout {rollout:.0%}" if rollout < 1.0 else otherwise


def _classifier_entry(name: str, classifier: Any, complexity: dict[str, Any], prompts: list[str],
                      router: Any = None) -> dict[str, Any]:
    """A tier classifier's part of the report: its bundle, policy, and each tier's target, model group and price
    (what ``router``'s deployments of the tier's groups cost, as the classifier prices it at request time)."""
    groups = complexity.get("tiers") or {}
    prices = classifier.tier_prices(router, name)
    entry: dict[str, Any] = {
        "name": f"complexity router {name!r} (tier classifier)", "bundle": str(classifier.bundle),
        "bundle_served": classifier.decider.predictor.bundle.source,
        "policy": classifier.decider.default_policy.describe(),
        # how requests are served: by the classifier's tier, as before (shadow), or a rollout's share of users by it
        "serving": _serving(classifier.shadow, classifier.rollout, "classified")
        + (f", served as before by tier {classifier.shadow_tier}" if classifier.shadow_tier else
           ", served as before by litellm's classifier_fallback" if classifier.shadow or classifier.rollout < 1.0
           else ""),
        "tiers": [{"tier": tier, "target": target, "model_group": groups.get(tier), **price_columns(prices[target])}
                  for tier, target in classifier.tiers.items()],
        # litellm cancels a classifier past its classifier_plugin_timeout_ms; the classifier's own timeout should
        # decline first (a declined request is logged; the one litellm cancels gets litellm's warning as well)
        "decision_timeout_s": classifier.decider.timeout_s,
        "classifier_plugin_timeout_ms": complexity.get("classifier_plugin_timeout_ms", PLUGIN_TIMEOUT_MS),
        # tiers the classifier returns that the router does not have: litellm falls back on every such request
        "unknown_tiers": sorted(t for t in {*classifier.tiers, *filter(None, [classifier.shadow_tier])}
                                if groups and t not in groups),
        "routes": []}
    for prompt in prompts:
        d = asyncio.run(classifier.decider.adecide([{"role": "user", "content": prompt}], prices, None, name))
        entry["routes"].append({"prompt": prompt, "model_group": name, "tier": classifier.tier_for(d),
                                "target": d.target, "reason": d.reason, "p_correct": dict(d.p_correct),
                                "cost_usd": dict(d.cost_usd)})
    return entry


def check_config(path: str | Path, prompts: list[str] | None = None) -> dict[str, Any]:
    """The report of ``prefill-router check`` (raises the typed error a misconfiguration gets at start-up)."""
    from .router import prefill_strategies, router_from_config

    model_list, router_settings, litellm_settings = load_proxy_config(path)
    import_own_callbacks(litellm_settings, Path(path).resolve().parent)
    classifiers = resolve_classifiers(model_list, Path(path).resolve().parent)
    plugins = resolve_routing_plugins(model_list, router_settings, Path(path).resolve().parent)
    router = router_from_config(model_list, router_settings)
    strategies = prefill_strategies(router)
    if not strategies and not classifiers and not plugins:
        raise ConfigurationError(
            f"{path}: no prefill strategy - set router_settings.routing_strategy: prefill (with routing_strategy_args."
            "bundle), or a routing_groups entry with routing_strategy: prefill, or a complexity router whose "
            "classifier_plugin is a PrefillTierClassifier, or a PrefillRoutingPlugin in router_settings.plugins or "
            "a complexity router's plugins")
    report: dict[str, Any] = {"config": str(path), "strategies": [], "classifiers": [], "plugins": [],
                              "serves_metrics": serves_prometheus(litellm_settings)}
    for name, (classifier, complexity) in classifiers.items():
        report["classifiers"].append(_classifier_entry(name, classifier, complexity, prompts or [], router))
    for where, plugin, pools, refused in plugins:
        report["plugins"].append(plugin_entry(where, plugin, pools, prompts or [],
                                              _serving(plugin.shadow, plugin.rollout, "narrowed"), router, refused))
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
            # where onnxruntime runs the encoder (execution_providers)
            "encoder_providers": strategy.predictor.providers,
            "metrics": strategy.args.metrics,
            "decision_timeout_s": strategy.args.decision_timeout_s,
            "serving": _serving(strategy.args.shadow, strategy.args.rollout, "routed"),
            "model_groups": {group: [{"target": info.target, "model_name": info.model_name,
                                      "model": deployment_model(dep),
                                      **price_columns(info.price),
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


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one section per prefill strategy, then one per tier classifier."""
    from .commands.common import table

    out = []
    for p in report.get("plugins") or []:
        out.append(f"{p['name']}: bundle {p['bundle']}, policy {p['policy']}, {p['serving']}")
        out.append(table(["pool", "model", "target", "$/Mtok in", "$/Mtok out", "price from"],
                         [[pool, m["model"], m["target"] or "-", _or_dash(m.get("input_usd_per_mtok")),
                           _or_dash(m.get("output_usd_per_mtok")), m.get("price_from") or "-"]
                          for pool, ms in p["pools"].items() for m in ms]))
        if p["left_alone"]:
            out.append(f"note: pools no model of which maps to a bundle target (left as they are): "
                       f"{', '.join(p['left_alone'])}")
        out.extend(f"\nwarning: {w}" for w in plugin_warnings(p))
        if p["routes"]:
            out.append("")
            out.append(table(["prompt", "pool", "target", "reason", "P(correct)", "est. cost USD"],
                             [[_short(r["prompt"]), r["model_group"], r["target"], r["reason"],
                               r["p_correct"].get(r["target"], float("nan")),
                               r["cost_usd"].get(r["target"], float("nan"))] for r in p["routes"]]))
        out.append("")
    for c in report.get("classifiers") or []:
        out.append(f"{c['name']}: bundle {c['bundle']}, policy {c['policy']}, {c['serving']}")
        out.append(table(["tier", "target", "model group", "$/Mtok in", "$/Mtok out", "price from"],
                         [[t["tier"], t["target"], t["model_group"] or "-", t["input_usd_per_mtok"],
                           t["output_usd_per_mtok"], t["price_from"]] for t in c["tiers"]]))
        if c["unknown_tiers"]:
            out.append(f"\nwarning: {_unknown_tiers(c)}")
        if _cancelled_first(c):
            out.append(f"\nwarning: {_cancelled_first(c)}")
        if c["routes"]:
            out.append("")
            out.append(table(["prompt", "tier", "target", "reason", "P(correct)", "est. cost USD"],
                             [[_short(r["prompt"]), r["tier"] or "(declined)", r["target"], r["reason"],
                               r["p_correct"].get(r["target"], float("nan")),
                               r["cost_usd"].get(r["target"], float("nan"))] for r in c["routes"]]))
        out.append("")
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
    windows that differ within a routed group while litellm's pre-call checks are off; tier classifier tiers the
    complexity router does not have, or a classifier that litellm cancels before its own decision timeout."""
    return [*(f"{s['name']}: no deployment serves {t}" for s in report["strategies"]
              for t in s["targets_without_deployment"]),
            *(f"{s['name']}: {_NO_METRICS_ENDPOINT}" for s in report["strategies"]
              if s["metrics"] and not report["serves_metrics"]),
            *(f"{s['name']}: {_mixed_windows(g, w)}" for s in report["strategies"]
              for g, w in s["mixed_context_windows"].items()),
            *(f"{c['name']}: {_unknown_tiers(c)}" for c in report.get("classifiers") or [] if c["unknown_tiers"]),
            *(f"{c['name']}: {_cancelled_first(c)}" for c in report.get("classifiers") or [] if _cancelled_first(c)),
            *(f"{p['name']}: {w}" for p in report.get("plugins") or [] for w in plugin_warnings(p))]


#: litellm's default complexity_router_config.classifier_plugin_timeout_ms
PLUGIN_TIMEOUT_MS = 3000


def _cancelled_first(classifier: dict[str, Any]) -> str:
    """The warning for a classifier whose decision timeout does not end before litellm cancels it ('' if it does)."""
    timeout_s, plugin_ms = classifier["decision_timeout_s"], classifier["classifier_plugin_timeout_ms"]
    if timeout_s is not None and timeout_s * 1000.0 < float(plugin_ms):
        return ""
    waits = "waits for every prediction" if timeout_s is None else f"waits up to {timeout_s:g} s for a prediction"
    return (f"the classifier {waits}, but litellm cancels it after classifier_plugin_timeout_ms {plugin_ms}: a slow "
            "prediction is then cut off (litellm's classifier_fallback serves the request) instead of declined in "
            f"time; set the classifier's decision_timeout_s below {float(plugin_ms) / 1000.0:g} s")


def _unknown_tiers(classifier: dict[str, Any]) -> str:
    return (f"the classifier's tiers {classifier['unknown_tiers']} are not in complexity_router_config.tiers: litellm "
            "refuses such a verdict and its classifier_fallback decides those requests")


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
