"""The keyword settings of the bundle's other front doors - litellm's complexity-router tier classifier
(``PrefillTierClassifier``), litellm's routing plugin (``PrefillRoutingPlugin``) and the semantic-router drop-in
(``PrefillSemanticRouter``) - as pydantic models made from the ``prefill`` strategy's own fields
(:class:`~.config.PrefillStrategyArgs`). A setting they share with ``routing_strategy_args`` has one type, one set of
bounds and one description, is validated the same way wherever it is given, and appears in the settings reference
(``prefill-router settings``) as the constructor takes it (``lambda_``, the Python keyword)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .autotune import AutotuneSettings
from .config import PrefillStrategyArgs
from .errors import ConfigurationError
from .sessions import ProviderSpec
from .validation_messages import Settings, explain


class HookSettings(TypedDict, total=False):
    """The keyword settings of a :class:`~.request_hooks.RequestHook` (the tier classifier's and the routing
    plugin's): policy (``preset`` / ``tolerance`` / ``lambda_`` / ``value_usd``; default the bundle's ``balanced``),
    ``prices`` ({target: (input, output) USD per token}; else what the Router's deployments serving it cost, else
    the bundle's), ``max_cost_usd`` / ``min_p_correct`` limits, ``reload_interval_s``, ``prediction_cache_size``
    (1024), ``decision_timeout_s`` (2.5 s), ``decision_log`` (``{date}`` / ``{pid}``), ``decision_log_messages``
    (True), ``decision_log_responses``, ``metrics``, ``learn_output_tokens``, ``execution_providers``, ``autotune``,
    ``shadow`` and ``rollout`` (1.0) - as for the ``prefill`` strategy's ``routing_strategy_args``."""

    preset: str | None
    tolerance: float | None
    lambda_: float | None
    value_usd: float | None
    prices: Mapping[str, tuple[float, float]] | None
    max_cost_usd: float | None
    min_p_correct: float | None
    reload_interval_s: float | None
    prediction_cache_size: int
    decision_timeout_s: float | None
    decision_log: str | None
    decision_log_messages: bool
    decision_log_responses: bool
    metrics: bool
    learn_output_tokens: bool
    execution_providers: Sequence[ProviderSpec] | None
    autotune: AutotuneSettings | Mapping[str, Any] | None
    shadow: bool
    rollout: float


#: the strategy settings the tier classifier and the routing plugin take (all of :class:`HookSettings` but prices)
HOOK_SHARED = tuple(name for name in HookSettings.__annotations__ if name != "prices")
#: the strategy settings the semantic-router drop-in takes
SEMANTIC_SHARED = ("preset", "tolerance", "lambda_", "value_usd", "max_cost_usd", "min_p_correct", "reload_interval_s",
                   "prediction_cache_size", "decision_timeout_s", "decision_log", "decision_log_messages",
                   "execution_providers", "autotune", "shadow", "rollout")

#: checked by ``costs.given_prices``, whose error names the target and the shape it needs
_PRICES = (Mapping[str, Any] | None, Field(
    default=None, description=(
        "{target: (input, output) USD per token} for the targets named; the others are priced as the request will "
        "be billed (the Router's deployments serving them), else at the bundle's training prices")))
_SEMANTIC_PRICES = (Mapping[str, Any] | None, Field(default=None, description=(
    "{target: (input, output) USD per token} for the targets named (what your calls to them cost); the others at "
    "the bundle's training prices")))
_BUNDLE = (str, Field(description=PrefillStrategyArgs.model_fields["bundle"].description))
_AUTOTUNE = ("tune the policy to a goal on the calls it decides, as it serves (`prefill-router tune`, online); the "
             "policy settings decide until the first tune; autotune's own settings are routing_strategy_args'")
#: where a hook's meaning of a shared setting is not the strategy's
_HOOK_MEANING = {
    "autotune": _AUTOTUNE,
    "decision_timeout_s": ("seconds a request waits for its prediction; later, the request is declined - served as "
                           "litellm would serve it without the hook - so a burst beyond the encoder's throughput is "
                           "served at once; none: 2.5 (under litellm's 3 s classifier timeout)"),
    "shadow": "decide and record every request (decision log, routing record, headers) but serve it as litellm would "
              "without the hook",
}
_SEMANTIC_MEANING = {
    "autotune": _AUTOTUNE,
    "decision_timeout_s": ("seconds a call waits for its prediction; later, the call is declined (`name=None`: the "
                           "caller's default serves); none: wait"),
    "decision_log": ("JSONL path: a line per call with its decision (the caller calls the model, so no outcome); "
                     "{date} in it starts a file per UTC day, {pid} one per process"),
    "shadow": "decide and log every call but return shadow_route (none: `name=None`, the caller's default serves)",
    "rollout": ("canary: the share of calls that get the router's choice, by a hash of the call's user (else per "
                "call); the rest are decided and served as in shadow mode"),
}


def _shared(names: tuple[str, ...], meaning: Mapping[str, str]) -> dict[str, Any]:
    """The strategy's fields ``names`` - type, bounds, default - under their Python names, with ``meaning``'s
    descriptions where a front door's meaning differs."""
    fields = PrefillStrategyArgs.model_fields

    def typed(name: str) -> Any:  # the annotation, with the field's bounds where it has any
        field = fields[name]
        return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return {name: (typed(name), Field(default=fields[name].default,
                                      description=meaning.get(name, fields[name].description)))
            for name in names}


class _HookSettingsBase(Settings):
    model_config = ConfigDict(extra="forbid")


def _model(name: str, own: Mapping[str, Any], shared: tuple[str, ...], meaning: Mapping[str, str]) -> type[BaseModel]:
    return create_model(name, __base__=_HookSettingsBase, **own, **_shared(shared, meaning))


#: what the tier classifier's and the routing plugin's shared settings are checked against
HOOK_SETTINGS = _model("HookSettings", {"prices": _PRICES}, HOOK_SHARED, _HOOK_MEANING)
_SEMANTIC_OWN = {
    "min_score": (float | None, Field(default=None, ge=0.0, le=1.0, description=(
        "a pick whose P(correct) is under this is declined (`name=None`); a call's threshold= overrides it; none: "
        "never"))),
    "confidence_threshold": (float | None, Field(default=None, ge=0.0, le=1.0, description=(
        "semantic-router 1.x's name for min_score"))),
}
#: what the semantic drop-in's settings (but its routes, and the bundle's) are checked against
SEMANTIC_SETTINGS = _model("SemanticSettings", {**_SEMANTIC_OWN, "prices": _SEMANTIC_PRICES}, SEMANTIC_SHARED,
                           _SEMANTIC_MEANING)

#: the settings reference of each constructor: its own arguments, then the settings it shares with the strategy
TIER_CLASSIFIER = _model("PrefillTierClassifier", {
    "bundle": _BUNDLE,
    "tiers": (dict[str, str], Field(description=(
        "{complexity-router tier: bundle target}: each tier is the target whose quality its model groups stand "
        "for; the tier picked is the one whose target the policy picks"))),
    "shadow_tier": (str | None, Field(default=None, description=(
        "the tier that serves requests in shadow mode and a rollout's control arm; none: litellm's "
        "classifier_fallback (its keyword heuristic by default)"))),
    "prices": _PRICES}, HOOK_SHARED, _HOOK_MEANING)
ROUTING_PLUGIN = _model("PrefillRoutingPlugin", {
    "bundle": _BUNDLE,
    "targets": (dict[str, str] | None, Field(default=None, description=(
        "{candidate model: bundle target} (a deployment's litellm_params.model, or a complexity-router tier's model "
        "group); a candidate not named maps to the target its name, or its last path part, is"))),
    "prices": _PRICES}, HOOK_SHARED, _HOOK_MEANING)
SEMANTIC_ROUTER = _model("PrefillSemanticRouter", {
    "bundle": _BUNDLE,
    "routes": (list[str] | None, Field(default=None, description="the targets it routes among; none: all of them")),
    **_SEMANTIC_OWN,
    "shadow_route": (str | None, Field(default=None, description=(
        "the route returned in shadow mode and to a rollout's control arm"))),
    "prices": _SEMANTIC_PRICES}, SEMANTIC_SHARED, _SEMANTIC_MEANING)


def validated_settings(model: type[BaseModel], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``given`` (the settings a constructor was called with) checked against ``model``: their values as validated
    (e.g. an ``autotune`` mapping as :class:`~.autotune.AutotuneSettings`). Raises
    :class:`~.errors.ConfigurationError` naming each bad setting, what it got and what the setting is."""
    try:
        parsed = model.model_validate(dict(given))
    except ValidationError as err:
        raise ConfigurationError(f"invalid {where} settings: {explain(err, model)}") from err
    return {name: getattr(parsed, name) for name in given}
