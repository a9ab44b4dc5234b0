"""``prefill-router check`` for the plugins a proxy config names: the complexity router's ``classifier_plugin`` and
the routing plugins of ``router_settings.plugins`` and ``complexity_router_config.plugins`` - imported as the proxy
imports them - and, for each :class:`~.routing_plugin.PrefillRoutingPlugin`, the pools it narrows: which candidate
model maps to which bundle target, pools it leaves alone, models a narrowed pool leaves out (a warning) and the
pick for sample prompts."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

from .costs import Price
from .deployments import complexity_config, deployment_model, tier_groups
from .errors import ConfigurationError


def import_object(path: str, config_dir: Path, where: str) -> Any:
    """The object a dotted path (``module.attribute``) names, imported as the proxy imports it: the module from the
    config's directory, else from the installed packages."""
    module, _, attribute = path.rpartition(".")
    if not module:
        raise ConfigurationError(f"{where} is not a dotted path module.attribute (e.g. tiers.classifier)")
    sys.path.insert(0, str(config_dir))
    try:
        return getattr(importlib.import_module(module), attribute)
    except ConfigurationError:  # what the module itself refuses at import: its own typed error, as the proxy sees it
        raise
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(f"{where} cannot be imported ({type(err).__name__}: {err}); the proxy looks for "
                                 f"{module.replace('.', '/')}.py beside the config, then in the installed "
                                 "packages") from err
    finally:
        sys.path.remove(str(config_dir))


def resolve_routing_plugins(model_list: list[dict[str, Any]], router_settings: dict[str, Any],
                            config_dir: Path) -> list[tuple[str, Any, dict[str, list[str]], str | None]]:
    """(where it is configured, the plugin, its pools) of each :class:`~.routing_plugin.PrefillRoutingPlugin` of the
    config: ``router_settings.plugins`` (pools: each model group's deployment models) and each complexity router's
    ``plugins`` (pools: each tier's model groups). Dotted paths are replaced by the objects they name, in place."""
    from .routing_plugin import PrefillRoutingPlugin

    found: list[tuple[str, Any, dict[str, list[str]], str | None]] = []
    groups: dict[str, list[str]] = {}
    for dep in model_list:
        if complexity_config(dep) is None:
            groups.setdefault(str(dep.get("model_name")), []).append(deployment_model(dep))
    places: list[tuple[str, list[Any], dict[str, list[str]]]] = []
    if isinstance(router_settings.get("plugins"), list):
        places.append(("router_settings.plugins", router_settings["plugins"], groups))
    for dep in model_list:
        cfg = complexity_config(dep)
        if cfg is not None and isinstance(cfg.get("plugins"), list):
            tiers = {f"tier {t}": tier_groups(v) for t, v in (cfg.get("tiers") or {}).items()}
            places.append((f"complexity router {dep.get('model_name')!r} plugins", cfg["plugins"], tiers))
    for where, plugins, pools in places:
        for i, value in enumerate(plugins):
            if isinstance(value, str):
                plugins[i] = import_object(value, config_dir, f"{where}: {value!r}")
            if isinstance(plugins[i], PrefillRoutingPlugin):
                found.append((f"routing plugin {value if isinstance(value, str) else i} ({where})", plugins[i], pools,
                              strategy_refusal(where, router_settings)))
    return found


def plugin_entry(where: str, plugin: Any, pools: dict[str, list[str]], prompts: list[str],
                 serving: str, router: Any = None, refused: str | None = None) -> dict[str, Any]:
    """A routing plugin's part of the report (see the module); sample picks priced as ``router``'s requests are;
    ``refused``: why litellm would fail every request (see :func:`strategy_refusal`)."""
    entry: dict[str, Any] = {
        "name": where, "bundle": str(plugin.bundle), "policy": plugin.decider.default_policy.describe(),
        "refused": refused,
        "serving": serving, "pools": {pool: [{"model": m, "target": plugin.target_of(m)} for m in models]
                                      for pool, models in pools.items()},
        "routes": []}
    entry["left_alone"] = sorted(p for p, ms in entry["pools"].items() if not any(m["target"] for m in ms))
    entry["left_out"] = {p: [m["model"] for m in ms if not m["target"]] for p, ms in entry["pools"].items()
                         if p not in entry["left_alone"] and not all(m["target"] for m in ms)}
    priced: dict[str, dict[str, Any]] = {}  # pool -> each target's price, as the plugin prices a request there
    for pool, models in entry["pools"].items():
        if by_target := plugin.pools_of(pools[pool]):
            priced[pool] = plugin.route_prices(router, pool, by_target)
        for m in models:
            m.update(price_columns(priced.get(pool, {}).get(m["target"])))
    for prompt in prompts:
        for pool, routes in priced.items():
            d = asyncio.run(plugin.decider.adecide([{"role": "user", "content": prompt}], routes, None, pool))
            entry["routes"].append({"prompt": prompt, "model_group": pool, "target": d.target,
                                    "reason": d.reason, "p_correct": dict(d.p_correct),
                                    "cost_usd": dict(d.cost_usd)})
    return entry


def price_columns(price: Price | None) -> dict[str, Any]:
    """A price as the report's columns: USD per million input / output tokens and where it came from (None: none)."""
    return {"input_usd_per_mtok": price.input_cost_per_token * 1e6 if price else None,
            "output_usd_per_mtok": price.output_cost_per_token * 1e6 if price else None,
            "price_from": price.source if price else None}


def left_out_warning(pool: str, models: list[str]) -> str:
    return (f"pool {pool!r}: {models} map to no bundle target and are left out whenever the plugin narrows the pool "
            "(map each to the target it serves with targets={model: target}, or give it its own model group)")


#: router-wide strategies litellm runs on its synchronous selection path, which refuses a Router with plugins
SYNC_ONLY_STRATEGIES = {"usage-based-routing": "usage-based-routing-v2"}


def strategy_refusal(where: str, router_settings: dict[str, Any]) -> str | None:
    """Why litellm would fail every request the routing plugins configured at ``where`` see (None: it would not): a
    router-wide strategy litellm only runs synchronously (``usage-based-routing``, v1), whose path refuses plugins."""
    strategy = router_settings.get("routing_strategy")
    if where != "router_settings.plugins" or strategy not in SYNC_ONLY_STRATEGIES:
        return None
    return (f"routing_strategy {strategy!r} runs on litellm's synchronous selection path, which refuses a Router "
            f"with plugins: every request would fail (\"Router(plugins=[...]) is configured, but this call resolved "
            f"to the synchronous deployment-selection path\"); use {SYNC_ONLY_STRATEGIES[strategy]!r}")


def plugin_warnings(entry: dict[str, Any]) -> list[str]:
    """What ``--strict`` refuses in a routing plugin's entry: a strategy litellm would fail every request of, and pools
    whose unmapped models a narrowing leaves out."""
    return [*([entry["refused"]] if entry.get("refused") else []),
            *(left_out_warning(pool, models) for pool, models in entry["left_out"].items())]
