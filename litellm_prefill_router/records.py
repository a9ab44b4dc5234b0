"""How a routing decision is written down - without litellm: the keys of the request-metadata records, litellm's
``StandardLoggingRoutingDecision`` (spend logs, logging integrations, the proxy's savings figure), the proxy's
``x-prefill-*`` response headers, and a call's savings against its baseline (decision log, ``stats``)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from .costs import Price
from .errors import ConfigurationError
from .policy import RoutingDecision, RoutingPolicy

DECISION_KEY = "prefill_decision"  # the decision record (RoutingDecision.to_dict() + deployment, baseline, shadow)
# {"path", "messages", "responses", "metrics"}: where the router logs its decisions and whether it counts them
DECISION_LOG_KEY = "prefill_decision_log"
# litellm's own per-request routing record (StandardLoggingRoutingDecision): copied into the standard logging
# payload, so spend logs, Datadog LLM Observability router spans and the proxy's savings figures see our decisions
LITELLM_DECISION_KEY = "routing_decision"
_CAUSES = {"policy": "classifier_plugin", "over budget": "classifier_plugin", "below floor": "classifier_plugin",
           "fallback: inference failed": "classifier_fallback",
           "fallback: routing timed out": "classifier_fallback",
           "fallback: the request has no text": "default_fallback"}


T = TypeVar("T")


def reason_kind(reason: str) -> str:
    """A decision's reason without its particulars: "policy", "pinned" (a request's pin_model, or a continued Responses
    API response), "retry" (a retry routed away from the targets that failed it), "at capacity" (the chosen target's
    deployments were all at their rpm/tpm limits), "over budget" / "below floor" (no candidate met the request's
    max_cost_usd / min_p_correct), "fallback: inference failed", "fallback: routing timed out", "fallback: the request
    has no text to route on"."""
    for kind in ("pinned", "retry", "at capacity", "over budget", "below floor"):
        if reason.startswith(kind + ":"):
            return kind
    return reason.split(" (")[0] if reason.startswith("fallback") else reason


def savings_baseline(decision: RoutingDecision, options: Sequence[T], target_price: Callable[[T], tuple[str, Price]]
                     ) -> T | None:
    """What the decision is measured against: among ``options`` (deployments, targets: ``target_price`` gives each
    one's target and price) of a candidate target, the one whose target has the highest expected cost for this prompt,
    then the highest per-token price (the only measure when the decision has no costs: pinned, fallback)."""
    def dearness(option: T) -> tuple[float, float]:
        target, price = target_price(option)
        return decision.cost_usd.get(target, 0.0), price.input_cost_per_token + price.output_cost_per_token
    candidates = [o for o in options if target_price(o)[0] in decision.candidates]
    return max(candidates, key=dearness) if candidates else None


def baseline_record(target: str, deployment_id: str | None, price: Price) -> dict[str, Any]:
    """The decision record's ``baseline``: what :func:`call_savings` prices a call's usage at."""
    return {"target": target, "deployment_id": deployment_id, "input_cost_per_token": price.input_cost_per_token,
            "output_cost_per_token": price.output_cost_per_token}


def call_savings(baseline: dict | None, prompt_tokens: object, completion_tokens: object,
                 cost: object) -> float | None:
    """USD saved by one call against sending it to the baseline deployment: the baseline's price x this call's
    token usage, minus what the call cost (None when the cost or the usage is unknown)."""
    if not baseline or not isinstance(cost, (int, float)):
        return None
    if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
        return None
    return (baseline["input_cost_per_token"] * prompt_tokens + baseline["output_cost_per_token"] * completion_tokens
            - float(cost))


def field_of(obj: object, name: str) -> Any:
    """Field ``name`` of a mapping or an object (a litellm response, a ``routing_groups`` entry); None where it has
    none."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _texts(items: object, kind: str) -> list[str]:
    """The ``text`` of each item of ``items`` (objects or dicts) whose ``type`` is ``kind``."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        return []
    return [t for item in items if field_of(item, "type") == kind and isinstance(t := field_of(item, "text"), str)]


def answer_text(response: object) -> str | None:
    """The answer text of a finished call's response, as litellm hands it to its loggers (a stream's assembled
    response): a chat completion's message, a text completion's text, a Responses API response's output text, an
    Anthropic message's text blocks, a Google GenAI response's text parts. None where it has none (a tool call, an
    unknown shape)."""
    choices = field_of(response, "choices")
    if isinstance(choices, Sequence) and choices:
        first = choices[0]
        text = field_of(first, "text")
        if isinstance(text, str):  # a text completion
            return text
        content = field_of(field_of(first, "message"), "content")
        return content if isinstance(content, str) else None
    output = field_of(response, "output")  # the Responses API: message items holding output_text parts
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        parts = [t for item in output if field_of(item, "type") == "message"
                 for t in _texts(field_of(item, "content"), "output_text")]
        return "".join(parts) if parts else None
    if field_of(response, "type") == "message":  # an Anthropic message
        return "".join(blocks) if (blocks := _texts(field_of(response, "content"), "text")) else None
    candidates = field_of(response, "candidates")  # Google GenAI
    if isinstance(candidates, Sequence) and candidates:
        parts = field_of(field_of(candidates[0], "content"), "parts") or []
        texts = [t for part in parts if isinstance(t := field_of(part, "text"), str)]
        return "".join(texts) if texts else None
    return None


def delta_text(chunk: object) -> str | None:
    """The answer text one chunk of a stream adds: a chat chunk's delta, a text completion chunk's text, a Responses
    API ``response.output_text.delta`` event's delta, an Anthropic ``content_block_delta`` event's text, a Google
    GenAI chunk's text parts - also where the chunk is server-sent events (``data: {...}`` lines, as litellm streams
    the Anthropic and Google GenAI APIs). None for other chunks."""
    if isinstance(chunk, (bytes, str)):
        texts = [t for event in _sse_events(chunk) if (t := delta_text(event)) is not None]
        return "".join(texts) if texts else None
    choices = field_of(chunk, "choices")  # the commonest first: a missing attribute costs ~2 us on litellm's types
    if isinstance(choices, Sequence) and choices:
        first = choices[0]
        delta = field_of(first, "delta")
        content = field_of(delta, "content") if delta is not None else field_of(first, "text")
        return content if isinstance(content, str) else None
    kind = field_of(chunk, "type")
    if kind == "response.output_text.delta":
        return delta if isinstance(delta := field_of(chunk, "delta"), str) else None
    if kind == "content_block_delta":
        return text if isinstance(text := field_of(field_of(chunk, "delta"), "text"), str) else None
    return answer_text(chunk) if field_of(chunk, "candidates") is not None else None


def _sse_events(chunk: bytes | str) -> list[object]:
    """The JSON ``data:`` payloads of server-sent events (what is not JSON is skipped)."""
    lines = (chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk).splitlines()
    events = []
    for line in lines:
        if line.startswith("data:"):
            try:
                events.append(json.loads(line[5:]))
            except ValueError:
                continue
    return events


def abandoned_reason(chunks: int) -> str:
    """The outcome error of a call whose stream its reader dropped after ``chunks`` chunks (see
    :func:`decision_log_row`'s ``abandoned``)."""
    return f"the stream was dropped before its end ({chunks} chunk{'s' * (chunks != 1)} read from it)"


def decision_log_row(*, call_id: tuple[str, object], response_id: object, decision: dict[str, Any], ok: bool,
                     model: object, cost: object, prompt_tokens: object, completion_tokens: object,
                     latency_s: float | None, error: object, extra: Mapping[str, object],
                     abandoned: str | None = None) -> dict[str, Any]:
    """One line of a decision log (the LiteLLM router's and the LangChain runnable's): ``call_id`` is (its key,
    its value) - ``litellm_call_id`` for LiteLLM calls, ``run_id`` for LangChain runs; ``extra``: what the log is
    set to keep besides (``messages``, ``response``). ``outcome.savings_usd``: see :func:`call_savings` against
    ``decision["baseline"]``. ``abandoned``: why the answer is partial - its stream was dropped before the end -
    making the outcome no success, with ``abandoned: true`` and that reason as its error (tokens and cost as far as
    they were counted)."""
    ok = ok and abandoned is None
    outcome: dict[str, Any] = {
        "success": ok, "model": model, "response_cost": cost, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "savings_usd": call_savings(decision.get("baseline"), prompt_tokens, completion_tokens, cost) if ok else None,
        "latency_s": latency_s, "error": abandoned or (None if ok else repr(error))}
    if abandoned is not None:
        outcome["abandoned"] = True
    return {"ts": datetime.now(timezone.utc).isoformat(), call_id[0]: call_id[1],
            "response_id": response_id if ok else None, "decision": decision, "outcome": outcome, **extra}


def logged_call_id(rec: Mapping[str, Any]) -> str | None:
    """The id a decision-log line answers to (feedback, judges): its LiteLLM call id, its LangChain run id, or the
    semantic-router drop-in's route id (``RouteChoice.id``)."""
    value = rec.get("litellm_call_id") or rec.get("run_id") or rec.get("route_id")
    return str(value) if value else None


#: what a feedback line's id names, for messages about ids that name no logged call
FEEDBACK_ID_MEANING = "a call's litellm_call_id, LangChain run_id, RouteChoice.id or the provider's response id"


def feedback_ids(rec: Mapping[str, Any]) -> list[str]:
    """The ids feedback on a decision-log line may name: its call id (LiteLLM call id / LangChain run id), then the
    provider's response id."""
    return [str(i) for i in (logged_call_id(rec), rec.get("response_id")) if i]


def feedback_score(rec: Mapping[str, Any], scores: Mapping[str, float] | None) -> float | None:
    """The feedback / judge score (by call id, see :func:`feedback_ids`) of a decision-log line; None without one."""
    if not scores:
        return None
    return next((scores[i] for i in feedback_ids(rec) if i in scores), None)


def answered_by(decision: Mapping[str, Any]) -> str | None:
    """The target whose model answered a logged call: the decision's target, or - in shadow mode, a rollout's
    control arm, and a tier classifier's call that litellm's complexity router served from another tier - the served
    target (None: a deployment or tier that maps to no target, or a declined decision whose caller's (or litellm's
    fallback's) model is not known)."""
    if decision.get("shadow") or "served_target" in decision:
        return decision.get("served_target")
    return None if decision.get("declined") else decision.get("target")


# litellm prices a routing_decision's savings baseline with the proxy's router (the deployments' own prices): it
# imports litellm.proxy.proxy_server to find it. Outside the proxy that import takes ~1.7 s, on the event loop, in
# the first request's logging (stalling the next request's routing), and the baseline is then priced from the public
# cost map (0 for a model it does not know). So the baseline goes into the record only where the proxy runs.
_PROXY_MODULE = "litellm.proxy.proxy_server"


def standard_routing_decision(decision: RoutingDecision, model_group: str, baseline: dict | None) -> dict[str, Any]:
    """The decision as litellm's ``StandardLoggingRoutingDecision`` (router_type "quality": the route follows the
    predicted P(correct)); ``classifier_probabilities`` holds P(correct) per candidate target. In the proxy the
    savings baseline is the most expensive candidate, so litellm's ``autorouter_savings`` reads "saved vs always
    sending it there" (the SDK has the decision log's ``savings_usd`` instead, see ``_PROXY_MODULE``).
    """
    out: dict[str, Any] = {"router_model_name": model_group, "router_type": "quality",
                           "routed_model": decision.target, "classifier_cost": 0.0,
                           "signals": [decision.reason, f"policy {decision.policy.describe()}"]}
    cause = next((c for prefix, c in _CAUSES.items() if decision.reason.startswith(prefix)), None)
    if cause is not None:
        out["cause"] = cause
    if decision.p_correct:
        out["classifier_probabilities"] = {t: round(float(v), 6) for t, v in decision.p_correct.items()}
        if decision.target in decision.p_correct:
            out["score"] = out["classifier_confidence"] = round(float(decision.p_correct[decision.target]), 6)
    if baseline is not None and _PROXY_MODULE in sys.modules:
        out["savings_baseline_model"] = str((baseline.get("litellm_params") or {}).get("model") or "")
        out["savings_baseline_deployment_id"] = str((baseline.get("model_info") or {}).get("id"))
    return out


_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]")


def policy_label(policy: object) -> str:
    """A logged decision's policy as :meth:`RoutingPolicy.describe` words it (``preset=balanced``, ``lambda=0.05
    (autotuned)``); ``unknown`` for a record that names none."""
    if not isinstance(policy, Mapping):
        return "unknown"
    try:
        return RoutingPolicy(policy.get("kind", "tolerance"), float(policy.get("value", 0.0)), policy.get("preset"),
                             bool(policy.get("autotuned"))).describe()
    except (ConfigurationError, TypeError, ValueError):
        return "unknown"


def with_served_tier(record: dict, md: Mapping) -> dict:
    """A tier classifier's record, with the tier litellm's complexity router served where that is not simply the
    classifier's pick: litellm moves a classified tier on (an escalation keyword, a stalled session, a plan-mode
    floor, a prompt too long for the tier's model), and a declined or shadow decision is served by its
    ``classifier_fallback`` (or ``shadow_tier``). The served tier's target (``served_target``, None for a tier the
    classifier does not map) is the one that answered: what the outcome, feedback and answer lengths belong to."""
    if "tier" not in record:  # not a tier classifier's
        return record
    routing = md.get(LITELLM_DECISION_KEY)
    if not isinstance(routing, Mapping):
        return record
    served = routing.get("tier")
    if not isinstance(served, str) or (served == record.get("tier") and not record.get("shadow")
                                       and not record.get("declined")):
        return record
    targets = record.get("tier_targets") or {}
    return {**record, "served_tier": served, "served_target": targets.get(served),
            "served_cause": routing.get("cause")}


def with_served_candidate(record: dict, md: Mapping) -> dict:
    """A routing plugin's record that narrowed nothing (shadow, a rollout's control arm, a declined decision: litellm
    chose among the whole pool), with the target that answered (``served_target``): the one the deployment litellm
    chose stands for - its model, else its model group, as the record's ``candidate_targets`` maps them (None: a
    deployment that maps to no target). litellm names the attempt's deployment in the request's metadata."""
    candidates = record.get("candidate_targets")
    if not isinstance(candidates, Mapping):
        return record
    deployment, group = md.get("deployment"), md.get("model_group")
    served = candidates.get(deployment) if deployment in candidates else candidates.get(group)
    return {**record, "served_target": served}


def hidden_params(response: object, create: bool = False) -> Any:
    """litellm's hidden params of ``response`` (None if it has none): a dict (chat, Responses API, a stream),
    ``HiddenParams`` (text completions: a pydantic model with ``get`` and item assignment), or the ``_hidden_params``
    key of an Anthropic Messages or Google GenAI ``generate_content`` response (a dict; ``create``: added where
    missing - litellm adds its headers to it later)."""
    if isinstance(response, dict):
        if response.get("type") != "message" and "candidates" not in response:
            return None
        return response.setdefault("_hidden_params", {}) if create else response.get("_hidden_params")
    return getattr(response, "_hidden_params", None)


def decision_headers(request_data: dict, response: object = None,
                     answered: tuple[bool, dict | None] = (False, None)) -> dict[str, str] | None:
    """HTTP response headers describing the prefill decision of one proxy request (None if it was not routed by
    the prefill strategy or the tier classifier): ``x-prefill-target``, ``x-prefill-reason``, ``x-prefill-policy``,
    ``x-prefill-p-correct`` (the chosen target's), ``x-prefill-latency-ms``, ``x-prefill-tier`` (the tier classifier's
    tier), ``x-prefill-novelty`` (above 1: a prompt unlike the bundle's training data); where another target answered
    (shadow, a rollout's control arm, a tier litellm's complexity router served instead) ``x-prefill-served-target``
    (and ``x-prefill-served-tier``).

    The headers describe the attempt that answered: after litellm's ``fallbacks`` moved a request to another model
    group, that group's decision (none for a group the bundle does not route), not the failed attempt's still in the
    request's metadata. A response a Router deployment served says it in its hidden params (as in the SDK);
    ``answered`` (known, decision) says it for one that does not (an Anthropic message: litellm has taken its hidden
    params off; the proxy hook passes ``shared_metadata.answered_with``). Otherwise - a failed request (``response``
    None) - they are the request's last decision."""
    get = getattr(hidden_params(response), "get", None)
    if callable(get) and get("model_id"):
        decision = get("prefill_routing")
    elif response is not None and answered[0]:
        decision = answered[1]
    else:
        decision = None
        for key in ("litellm_metadata", "metadata"):
            md = request_data.get(key)
            if isinstance(md, dict) and isinstance(md.get(DECISION_KEY), dict):
                decision = with_served_tier(md[DECISION_KEY], md)
                break
    if not isinstance(decision, dict) or not decision.get("target"):
        return None
    target = str(decision["target"])
    policy_text = policy_label(decision.get("policy"))
    headers = {
        "x-prefill-target": target,
        "x-prefill-reason": str(decision.get("reason", "")),
        "x-prefill-policy": policy_text,
        "x-prefill-latency-ms": f"{float(decision.get('latency_ms') or 0.0):.1f}",
    }
    p = (decision.get("p_correct") or {}).get(target)
    if p is not None:
        headers["x-prefill-p-correct"] = f"{float(p):.4f}"
    tiered = decision.get("tier_decision")  # a routing plugin narrowed the pool of the tier the classifier chose
    tier = decision.get("tier") or (tiered.get("tier") if isinstance(tiered, Mapping) else None)
    if tier:  # a complexity router's tier, chosen by the tier classifier
        headers["x-prefill-tier"] = str(tier)
    if isinstance(novelty := decision.get("novelty"), (int, float)):  # above 1: unlike the bundle's training data
        headers["x-prefill-novelty"] = f"{float(novelty):.3f}"
    if decision.get("shadow"):  # x-prefill-target is the route the router would take; this is who answered
        headers["x-prefill-shadow"] = "true"
    if decision.get("shadow") or "served_target" in decision:
        headers["x-prefill-served-target"] = str(decision.get("served_target") or "unmapped")
    if decision.get("served_tier"):  # the tier litellm's complexity router served (escalated, or its fallback's)
        headers["x-prefill-served-tier"] = str(decision["served_tier"])
    if decision.get("arm"):  # a canary rollout: "router" (served by the route above) or "control" (served as before)
        headers["x-prefill-arm"] = str(decision["arm"])
    if decision.get("unavailable_targets"):  # left out by litellm for this request (cooldown, context window, ...)
        headers["x-prefill-unavailable"] = ",".join(str(t) for t in decision["unavailable_targets"])
    # header values must be printable ASCII on one line (a fallback reason quotes an exception message)
    return {k: _HEADER_UNSAFE.sub("?", v)[:512] for k, v in headers.items()}
