"""Settings of the prefill routing strategy (``routing_strategy_args``), validated with bounds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .autotune import AutotuneSettings
from .errors import ConfigurationError
from .jsonl import checked_log_template


class PrefillStrategyArgs(BaseModel):
    """``routing_strategy_args`` of ``Router(routing_strategy="prefill", ...)``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    bundle: str = Field(description="bundle directory written by `prefill-router train`, or "
                                    "hf://owner/name[@revision][/path] on the Hugging Face Hub (`prefill-router push`)")
    preset: str | None = None
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0)
    lambda_: float | None = Field(default=None, alias="lambda", ge=0.0)
    # what a right answer is worth (USD): the router maximises P(correct) x value_usd - cost (see policy.py)
    value_usd: float | None = Field(default=None, ge=0.0)
    # limits for every request (see RequestOverrides): a request's own max_cost_usd can only lower this one, its own
    # min_p_correct replaces this one
    max_cost_usd: float | None = Field(default=None, gt=0.0)
    min_p_correct: float | None = Field(default=None, ge=0.0, le=1.0)
    # tune the policy to a goal on the calls the router decides, as it serves (`prefill-router tune`, online): e.g.
    # {savings: 0.5} or {budget_usd_per_1k: 0.2} or {min_expected_accuracy: 0.7}; the policy above decides until the
    # first tune (see litellm_prefill_router.autotune)
    autotune: AutotuneSettings | None = None
    on_error: Literal["fallback", "raise"] = "fallback"
    fallback_target: str | None = None
    # seconds a request waits for its prediction; later, it goes to the fallback target (reason "fallback: routing
    # timed out"; with on_error: raise, an error) and a prediction still queued is dropped - so a burst beyond the
    # encoder's throughput is served at once instead of queueing. None: wait for the encoder
    decision_timeout_s: float | None = Field(default=None, gt=0.0, le=600.0)
    default_input_cost_per_token: float | None = Field(default=None, ge=0.0)
    default_output_cost_per_token: float | None = Field(default=None, ge=0.0)
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)
    # onnxruntime execution providers for the encoder, in priority order: names, or [name, {options}] (e.g.
    # ["CUDAExecutionProvider", "CPUExecutionProvider"] with onnxruntime-gpu). None: the CPU. A provider this
    # onnxruntime lacks is an error unless CPUExecutionProvider is listed as the fallback
    execution_providers: list[str | tuple[str, dict[str, Any]]] | None = Field(default=None, min_length=1)
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    # prompts per encoder call; None: 1 for an int8 encoder (its dynamic activation scales are per call, so grouping
    # would make a route depend on the other requests in flight), max_batch_size for fp32 (exact under padding)
    max_encoder_batch_size: int | None = Field(default=None, ge=1, le=1024)
    # predictions remembered per process for prompts seen again (exact token ids): a litellm retry or fallback of a
    # request, a repeated question, costs its tokenisation only. 0: every request runs the encoder
    prediction_cache_size: int = Field(default=1024, ge=0, le=1_000_000)
    # JSONL path; "{date}" in it starts a file per UTC day, "{pid}" one per process (proxy workers)
    decision_log: str | None = None
    # the request's messages go into the decision log (needed to retrain from it); False logs decisions only
    decision_log_messages: bool = True
    # the answer text goes into the decision log too, so a judge can score it later (`prefill-router judge`)
    decision_log_responses: bool = False
    # seconds between checks whether the bundle directory changed (a retrained bundle written over it, or a symlink
    # pointed at another; for hf://owner/name[@branch], a new commit on the branch - each check asks the Hub); a
    # changed bundle is loaded off the request path and swapped in. None: never reload
    reload_interval_s: float | None = Field(default=None, gt=0.0)
    # shadow mode: decide and log every route (decision log, litellm's routing record, response headers) but serve
    # the request as before - from shadow_target's deployments if set, else by litellm's simple-shuffle - to see
    # what the router would do on real traffic before letting it choose
    shadow: bool = False
    shadow_target: str | None = None
    # canary rollout: the share of requests served by the router's choice; the others (the "control" arm) are
    # decided and recorded as in shadow mode and served as before (by shadow_target if set). A request that names an
    # end user (the OpenAI `user` field) is assigned by a hash of it - each user stays in one arm -, others by a hash
    # of the request's litellm_trace_id - a retry keeps its arm. Decisions carry "arm": "router" | "control"; `stats`
    # compares the arms
    rollout: float = Field(default=1.0, ge=0.0, le=1.0)
    # a retry of a failed request (litellm's num_retries) goes to the best deployment that has not failed it yet -
    # the next target by the policy when the chosen one has no other deployment - instead of the same one again;
    # when every deployment has failed it, or the request pins a target, litellm's retry goes as without this
    reroute_retries: bool = True
    # estimate each target's answer length from its latest answers (their completion tokens) instead of the bundle's
    # training-data lengths (see litellm_prefill_router.answer_lengths); read from the decision log at start
    learn_output_tokens: bool = False
    # a Responses API request that continues a response (previous_response_id) goes to the deployment that answered it,
    # when that deployment is available (reason "pinned: continues ..."; no encoder pass): another model does not
    # have the conversation the id stands for. False: every turn is routed on its own input
    responses_affinity: bool = True
    # Prometheus metrics of routing (decisions, latency, P(correct) of the chosen target, calls, cost, savings,
    # bundle reloads) in prometheus_client's default registry: litellm's /metrics serves them with its prometheus
    # callback. Needs the `metrics` extra (prometheus_client)
    metrics: bool = False

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


class RequestOverrides(BaseModel):
    """Per-request overrides read from ``metadata["prefill"]``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    preset: str | None = None
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0)
    lambda_: float | None = Field(default=None, alias="lambda", ge=0.0)
    value_usd: float | None = Field(default=None, ge=0.0)
    pin_model: str | None = None
    candidates: list[str] | None = None
    # caps each target's expected output tokens in the cost estimate; the LiteLLM strategy fills it from the
    # request's max_tokens / max_completion_tokens / max_output_tokens
    max_output_tokens: int | None = Field(default=None, ge=1)
    # limits: the policy chooses among the candidates whose estimated cost for this request is at most max_cost_usd
    # and whose P(correct) is at least min_p_correct; none qualifies -> the cheapest (over budget), or the most likely
    # within budget (below floor): the request is served either way and the decision's reason says so
    max_cost_usd: float | None = Field(default=None, gt=0.0)
    min_p_correct: float | None = Field(default=None, ge=0.0, le=1.0)


def checked_cache_size(value: object) -> int:
    """A ``prediction_cache_size`` given to a constructor (the strategy's arguments check theirs as a field)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ConfigurationError(f"prediction_cache_size must be an integer from 0 (no cache) to 1000000, got "
                                 f"{value!r}")
    return value


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
        raise ConfigurationError(f"invalid routing_strategy_args for 'prefill': {err}") from err


# The LiteLLM proxy copies the calling team's and key's metadata into each request's metadata under these names; a
# "prefill" entry there is an admin's policy for that team / key (the key's is the more specific).
ADMIN_LAYERS = ("user_api_key_team_metadata", "user_api_key_metadata")
_POLICY_FIELDS = ("preset", "tolerance", "lambda", "lambda_", "value_usd")


def _prefill_entry(container: Any, where: str) -> dict[str, Any]:
    raw = container.get("prefill") if isinstance(container, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} must be a dict, got {type(raw).__name__}")
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
        raise ConfigurationError(f"invalid metadata['prefill'] overrides: {err}") from err
