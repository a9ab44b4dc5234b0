"""Settings of the prefill routing strategy (``routing_strategy_args``), validated with bounds."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .autotune import AutotuneSettings
from .errors import ConfigurationError, RequestSettingsError
from .jsonl import checked_log_template
from .validation_messages import Settings, explain

#: what each policy setting means, wherever it is set (routing_strategy_args, PrefillRouterRunnable)
TOLERANCE_DOC = "policy: the cheapest target whose P(correct) is within this of the best"
LAMBDA_DOC = "policy: the target with the most P(correct) - lambda x cost / the dearest candidate's cost"
VALUE_USD_DOC = "policy: what a right answer is worth (USD) - the target with the most P(correct) x value_usd - cost"

#: the bounds of the settings, wherever they are set (routing_strategy_args, a request's metadata["prefill"],
#: PrefillRouterRunnable): a share of 0..1 (tolerance, min_p_correct, rollout), a weight or value >= 0 (lambda,
#: value_usd), a cost ceiling or interval > 0 (max_cost_usd, reload_interval_s), a decision timeout of at most 10 min,
#: a prediction cache of at most a million entries
Share = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
DecisionTimeout = Annotated[float, Field(gt=0.0, le=600.0)]
CacheSize = Annotated[int, Field(ge=0, le=1_000_000)]


class PrefillStrategyArgs(Settings):
    """``routing_strategy_args`` of ``Router(routing_strategy="prefill", ...)``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    bundle: str = Field(description="bundle directory written by `prefill-router train`, or "
                                    "hf://owner/name[@revision][/path] on the Hugging Face Hub (`prefill-router push`)")
    preset: str | None = Field(default=None, description=(
        "policy: a preset calibrated by training (max-quality, balanced, match-best-single, min-cost); none of the "
        "four policy settings: the bundle's default preset"))
    tolerance: Share | None = Field(default=None, description=TOLERANCE_DOC)
    lambda_: NonNegative | None = Field(default=None, alias="lambda", description=LAMBDA_DOC)
    value_usd: NonNegative | None = Field(default=None, description=VALUE_USD_DOC)
    max_cost_usd: Positive | None = Field(default=None, description=(
        "every request's cost ceiling (its estimated cost, USD): the policy picks among the targets within it, else "
        "the cheapest; a request's own can only lower it"))
    min_p_correct: Share | None = Field(default=None, description=(
        "every request's quality floor: the policy picks among the targets at least this likely to be right, else "
        "the most likely within budget; a request's own replaces it"))
    autotune: AutotuneSettings | None = Field(default=None, description=(
        "tune the policy to a goal on the calls the router decides, as it serves (`prefill-router tune`, online); "
        "the policy above decides until the first tune (table below)"))
    on_error: Literal["fallback", "raise"] = Field(default="fallback", description=(
        "a request whose prediction failed or timed out: sent to fallback_target, or failed with InferenceError"))
    fallback_target: str | None = Field(default=None, description=(
        "the target of requests with no prediction (no text, inference failed, timed out); none: the target with "
        "the best prior accuracy"))
    decision_timeout_s: DecisionTimeout | None = Field(default=None, description=(
        "seconds a request waits for its prediction; later, it goes to the fallback target and a prediction still "
        "queued is dropped, so a burst beyond the encoder's throughput is served at once; none: wait"))
    default_input_cost_per_token: NonNegative | None = Field(default=None, description=(
        "USD per input token of a deployment with no price (model_info, litellm_params, litellm's cost map); none: "
        "such a deployment is an error (UnpricedDeploymentError)"))
    default_output_cost_per_token: NonNegative | None = Field(default=None, description=(
        "USD per output token of a deployment with no price, as above"))
    intra_op_threads: int | None = Field(default=None, ge=1, le=256, description=(
        "onnxruntime threads per inference; none: onnxruntime's default"))
    intra_op_spinning: bool = Field(default=False, description=(
        "let onnxruntime's intra-op threads spin-wait for work after each run (onnxruntime's own default); off: "
        "lower routing latency beside the serving threads (session 31, 2 cores: 37 vs 47 ms added p50 at 256 "
        "tokens), at 7-14% fewer routes/s when routing alone saturates the cores"))
    execution_providers: list[str | tuple[str, dict[str, Any]]] | None = Field(default=None, min_length=1, description=(
        "onnxruntime execution providers of the encoder, in priority order: names or [name, {options}] (e.g. "
        "[CUDAExecutionProvider, CPUExecutionProvider] with onnxruntime-gpu); a provider onnxruntime lacks is an "
        "error unless CPUExecutionProvider is listed; none: the CPU"))
    max_batch_size: int = Field(default=16, ge=1, le=1024, description="requests per trunk call")
    max_encoder_batch_size: int | None = Field(default=None, ge=1, le=1024, description=(
        "prompts per encoder call; none: 1 for an int8 encoder (its activation scales are per call, so grouping "
        "would make a route depend on the other requests in flight), max_batch_size for fp32"))
    prediction_cache_size: CacheSize = Field(default=1024, description=(
        "predictions remembered per process for prompts seen again (by exact token ids): a retry, a fallback or a "
        "repeated question costs its tokenisation only; 0: off"))
    decision_log: str | None = Field(default=None, description=(
        "JSONL path: a line per call with its decision and outcome; {date} in it starts a file per UTC day, {pid} "
        "one per process (proxy workers); a path this process could not write is refused at start"))
    decision_log_messages: bool = Field(default=True, description=(
        "the request's messages go into the decision log (needed to retrain from it)"))
    decision_log_responses: bool = Field(default=False, description=(
        "the answer text goes into the decision log too, for `prefill-router judge` to score later"))
    reload_interval_s: Positive | None = Field(default=None, description=(
        "seconds between checks whether the bundle changed (a retrained bundle written over it, a symlink pointed "
        "elsewhere, a new commit of an hf:// branch); a changed bundle is loaded off the request path and swapped "
        "in; none: never reload"))
    shadow: bool = Field(default=False, description=(
        "decide and record every request (decision log, routing record, headers) but serve it as before - by "
        "shadow_target if set, else litellm's simple-shuffle"))
    shadow_target: str | None = Field(default=None, description=(
        "the target that serves requests in shadow mode and a rollout's control arm"))
    rollout: Share = Field(default=1.0, description=(
        "canary: the share of requests served by the router's choice, by a hash of the end user (else of the "
        "request's litellm_trace_id); the rest are decided and served as in shadow mode"))
    reroute_retries: bool = Field(default=True, description=(
        "a retry of a failed request goes to the best deployment that has not failed it yet, not the same one"))
    learn_output_tokens: bool = Field(default=False, description=(
        "estimate each target's answer length from its latest answers instead of the bundle's training data"))
    responses_affinity: bool = Field(default=True, description=(
        "a Responses API request with previous_response_id goes to the deployment that answered it, when available"))
    metrics: bool = Field(default=False, description=(
        "prefill_router_* Prometheus metrics in prometheus_client's default registry (the `metrics` extra)"))

    @field_validator("decision_log")
    @classmethod
    def _known_placeholders(cls, v: str | None) -> str | None:
        return checked_log_template(v)

    @model_validator(mode="after")
    def _shadow_target_needs_shadow(self) -> PrefillStrategyArgs:
        if self.shadow_target is not None and not self.shadow and self.rollout == 1.0:
            raise ValueError("shadow_target is only used in shadow mode or for the control arm of a rollout: add "
                             "shadow: true or rollout: <share below 1>")
        if self.shadow and self.rollout != 1.0:
            raise ValueError("shadow: true serves every request as before; rollout applies without it - set one")
        return self


class RequestOverrides(Settings):
    """Per-request overrides read from ``metadata["prefill"]``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    preset: str | None = Field(default=None, description="this request's policy: a preset of the bundle")
    tolerance: Share | None = Field(default=None, description="this request's policy: a tolerance")
    lambda_: NonNegative | None = Field(default=None, alias="lambda",
                                        description="this request's policy: a lambda")
    value_usd: NonNegative | None = Field(default=None, description="this request's policy: a value_usd")
    pin_model: str | None = Field(default=None, description=(
        "the target that serves this request, with no encoder pass (if it is available)"))
    candidates: list[str] | None = Field(default=None, description="only these targets may serve this request")
    max_output_tokens: int | None = Field(default=None, ge=1, description=(
        "caps each target's expected answer length in the cost estimate; the LiteLLM strategy fills it from the "
        "request's max_tokens / max_completion_tokens / max_output_tokens"))
    max_cost_usd: Positive | None = Field(default=None, description=(
        "this request's cost ceiling (estimated USD): none qualifies -> the cheapest target (reason over budget)"))
    min_p_correct: Share | None = Field(default=None, description=(
        "this request's quality floor: none qualifies -> the most likely target within budget (reason below "
        "floor)"))


def parse_strategy_args(args: Any) -> PrefillStrategyArgs:
    if isinstance(args, PrefillStrategyArgs):
        return args
    if not isinstance(args, dict) or "bundle" not in args:
        raise ConfigurationError(
            "routing_strategy='prefill' needs routing_strategy_args={'bundle': '<bundle dir>', ...}; "
            f"got {args!r}. Train a bundle with `prefill-router train --data PATH --out DIR`."
        )
    try:
        return PrefillStrategyArgs.model_validate(args)
    except ValidationError as err:
        raise ConfigurationError(f"invalid routing_strategy_args for 'prefill': {explain(err, PrefillStrategyArgs)} "
                                 "(every setting: `prefill-router settings routing_strategy_args`)") from err


# The LiteLLM proxy copies the calling team's and key's metadata into each request's metadata under these names; a
# "prefill" entry there is an admin's policy for that team / key (the key's is the more specific).
ADMIN_LAYERS = ("user_api_key_team_metadata", "user_api_key_metadata")
_POLICY_FIELDS = ("preset", "tolerance", "lambda", "lambda_", "value_usd")


def _prefill_entry(container: Any, where: str) -> dict[str, Any]:
    raw = container.get("prefill") if isinstance(container, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestSettingsError(f"{where} must be a dict, got {type(raw).__name__}")
    return {k: v for k, v in raw.items() if v is not None}


def parse_overrides(metadata: Any) -> RequestOverrides:
    """The overrides of one request: ``metadata["prefill"]``, then the team's and the key's ``metadata.prefill``
    (proxy virtual keys) on top - an admin's setting wins over the request's: an admin policy (preset / tolerance /
    lambda) replaces the request's policy, admin ``candidates`` narrow the request's (intersection), an admin
    ``max_cost_usd`` is a ceiling (the request may set a lower one), and any other field the admin sets replaces the
    request's."""
    merged = _prefill_entry(metadata, "metadata['prefill']")
    for layer in ADMIN_LAYERS:
        admin = _prefill_entry(metadata.get(layer) if isinstance(metadata, dict) else None,
                               f"metadata['{layer}']['prefill']")
        if any(k in admin for k in _POLICY_FIELDS):
            merged = {k: v for k, v in merged.items() if k not in _POLICY_FIELDS}
        if isinstance(admin.get("candidates"), list) and isinstance(merged.get("candidates"), list):
            narrowed = [t for t in merged["candidates"] if t in admin["candidates"]]
            admin = {**admin, "candidates": narrowed or admin["candidates"]}
        caps = [c for c in (admin.get("max_cost_usd"), merged.get("max_cost_usd"))
                if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if "max_cost_usd" in admin and len(caps) == 2:
            admin = {**admin, "max_cost_usd": min(caps)}
        merged.update(admin)
    if not merged:
        return RequestOverrides()
    try:
        return RequestOverrides.model_validate(merged)
    except ValidationError as err:
        raise RequestSettingsError(f"invalid metadata['prefill'] overrides: {explain(err, RequestOverrides)} "
                                   "(every setting: `prefill-router settings metadata.prefill`)") from err
