"""A model list's deployments as the prefill strategy sees them: which bundle target each serves and at what price,
held per served bundle (a reload swaps the whole map) and described again when a deployment is updated in place.
Free of litellm: litellm's cost map is reached through a callable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .costs import Price
from .decider import PrefillDecider
from .errors import ConfigurationError, UnpricedDeploymentError
from .predictor import PrefillPredictor


@dataclass(frozen=True)
class DeploymentTarget:
    deployment_id: str
    model_name: str
    target: str
    price: Price


def deployment_price(dep: dict, known_model_info: Callable[[], Any]) -> Price | None:
    """A deployment's price: ``litellm_params`` / ``model_info`` (input and output cost per token), else
    litellm's cost map through ``known_model_info``. litellm answers 0/0 for models it does not know, so a zero
    price from its map counts as unknown (None); an explicit 0 in the deployment's config is a free deployment."""
    for source in ("litellm_params", "model_info"):
        src = dep.get(source) or {}
        if src.get("input_cost_per_token") is not None and src.get("output_cost_per_token") is not None:
            try:
                return Price(float(src["input_cost_per_token"]), float(src["output_cost_per_token"]), source)
            except (TypeError, ValueError) as err:
                raise ConfigurationError(f"deployment {deployment_model(dep) or dep.get('model_name')!r} (model "
                                         f"group {dep.get('model_name')!r}): its {source} price is not USD per "
                                         f"token: {err}") from err
    try:
        info = known_model_info()
    except Exception:  # noqa: BLE001 - litellm raises many kinds for unknown models
        info = None
    pin, pout = (info or {}).get("input_cost_per_token"), (info or {}).get("output_cost_per_token")
    if pin is not None and pout is not None and (pin > 0 or pout > 0):
        return Price(float(pin), float(pout), "litellm")
    return None


def deployment_model(dep: Mapping[str, Any]) -> str:
    """A deployment's model (its ``litellm_params.model``; "" where it names none)."""
    return str((dep.get("litellm_params") or {}).get("model") or "")


def deployments_by_group(deps: Iterable[dict]) -> dict[str, list[dict]]:
    """``deps`` by their model group (``model_name``), in order - one pass over a model list."""
    groups: dict[str, list[dict]] = {}
    for dep in deps:
        groups.setdefault(str(dep.get("model_name")), []).append(dep)
    return groups


def complexity_config(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """A complexity router deployment's ``complexity_router_config`` (None: not one)."""
    cfg = (deployment.get("litellm_params") or {}).get("complexity_router_config")
    return cfg if deployment_model(deployment).startswith("auto_router/") and isinstance(cfg, dict) else None


def tier_groups(pool: object) -> list[str]:
    """The model groups a complexity router's ``tiers`` entry sends a tier to: one group, or a pool of several."""
    return [str(g) for g in (pool if isinstance(pool, list) else [pool] if pool is not None else [])]


def deployment_id(dep: dict) -> str:
    """A deployment's id (litellm's ``model_info.id``)."""
    return str((dep.get("model_info") or {}).get("id") or id(dep))


def target_of(dep: dict, targets: Sequence[str], bundle: str) -> str | None:
    """The bundle target a deployment serves: its ``model_info.prefill_target`` (which must be one of ``targets``),
    else the target its model name, its model or its model's last path part names; None if none does."""
    explicit = (dep.get("model_info") or {}).get("prefill_target")
    if explicit is not None:
        if explicit not in targets:
            raise ConfigurationError(
                f"deployment {dep.get('model_name')!r} has model_info.prefill_target={explicit!r}, which is not "
                f"a target of bundle {bundle}; valid targets: {list(targets)}"
            )
        return str(explicit)
    model = deployment_model(dep)
    for name in (dep.get("model_name"), model, model.split("/")[-1]):
        if name in targets:
            return str(name)
    return None


def priced(dep: dict, dep_id: str, known_model_info: Callable[[], Any], default: Price | None) -> Price:
    """A deployment's price (see :func:`deployment_price`), else ``default`` (the strategy's default prices);
    UnpricedDeploymentError naming the deployment and the settings that price it."""
    price = deployment_price(dep, known_model_info)
    if price is not None:
        return price
    if default is not None:
        return default
    model = (dep.get("litellm_params") or {}).get("model")
    raise UnpricedDeploymentError(
        f"deployment {dep.get('model_name')!r} (model {model!r}, id {dep_id}) has no known price: set "
        "model_info.input_cost_per_token and output_cost_per_token on it, or routing_strategy_args "
        "default_input_cost_per_token/default_output_cost_per_token."
    )


def described_from(dep: dict) -> tuple[object, ...]:
    """What a deployment's target and price are read from. A deployment updated in place (the proxy's
    ``/model/update``, ``Router.upsert_deployment``: same id, new price or target) is described again when it
    changes."""
    params, info = dep.get("litellm_params") or {}, dep.get("model_info") or {}
    return (dep.get("model_name"), params.get("model"), params.get("input_cost_per_token"),
            params.get("output_cost_per_token"), info.get("prefill_target"), info.get("input_cost_per_token"),
            info.get("output_cost_per_token"))


@dataclass
class ServedBundle:
    """What one bundle serves with: swapped whole when the bundle is reloaded, read once per request."""

    decider: PrefillDecider
    deployments: dict[str, DeploymentTarget | None]  # deployment id -> its target and price (None: unmapped)
    described_from: dict[str, tuple[object, ...]] = field(default_factory=dict)  # deployment id -> described_from

    def remember(self, dep_id: str, dep: dict, info: DeploymentTarget | None) -> DeploymentTarget | None:
        self.deployments[dep_id] = info
        self.described_from[dep_id] = described_from(dep)
        return info

    def known(self, dep_id: str, dep: dict) -> bool:
        """The deployment was described as it is now."""
        return dep_id in self.deployments and self.described_from.get(dep_id) == described_from(dep)

    def describe(self, dep: dict, bundle: str, price_of: Callable[[dict, str], Price]) -> DeploymentTarget | None:
        """The deployment's target and price (None: it serves no target), described once per change of it;
        ConfigurationError for a target the bundle lacks or a deployment ``price_of`` cannot price."""
        dep_id = deployment_id(dep)
        if self.known(dep_id, dep):
            return self.deployments[dep_id]
        target = target_of(dep, self.decider.targets, bundle)
        info = None if target is None else DeploymentTarget(dep_id, str(dep.get("model_name")), target,
                                                             price_of(dep, dep_id))
        return self.remember(dep_id, dep, info)

    @property
    def predictor(self) -> PrefillPredictor:
        return self.decider.predictor
