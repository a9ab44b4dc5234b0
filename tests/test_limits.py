"""Per-request limits: a cost ceiling (``max_cost_usd``, the request's estimated cost) and a quality floor
(``min_p_correct``) narrow the candidates before the policy chooses - per request (``metadata.prefill``), per proxy
key or team (a ceiling the request can only lower), router-wide (``routing_strategy_args``) and per LangChain
runnable. A request no candidate qualifies for is still served, by the documented way out, and says so."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, model_list
from litellm_prefill_router import ConfigurationError, PrefillRouter, flush_logging
from litellm_prefill_router.config import parse_overrides
from litellm_prefill_router.policy import Constraints, RoutingPolicy, constrained_choice

P = {"cheap": 0.40, "mid": 0.70, "dear": 0.90}
COST = {"cheap": 1.0, "mid": 2.0, "dear": 4.0}
CANDS = ["cheap", "mid", "dear"]
MAX_QUALITY = RoutingPolicy("tolerance", 0.0)


def test_without_limits_the_policy_alone_decides() -> None:
    assert constrained_choice(MAX_QUALITY, CANDS, P, COST, Constraints()) == ("dear", "policy", None)


def test_a_cost_ceiling_leaves_the_policy_the_candidates_within_it() -> None:
    target, reason, record = constrained_choice(MAX_QUALITY, CANDS, P, COST, Constraints(max_cost_usd=2.0))
    assert (target, reason) == ("mid", "policy")  # the most likely among those costing at most 2
    assert record == {"max_cost_usd": 2.0, "excluded": ["dear"]}


def test_a_quality_floor_keeps_a_cheap_policy_off_the_targets_unlikely_to_be_right() -> None:
    cheapest = RoutingPolicy("tolerance", 1.0)
    assert constrained_choice(cheapest, CANDS, P, COST, Constraints())[0] == "cheap"
    target, reason, record = constrained_choice(cheapest, CANDS, P, COST, Constraints(min_p_correct=0.6))
    assert (target, reason, record) == ("mid", "policy", {"min_p_correct": 0.6, "excluded": ["cheap"]})


def test_over_budget_the_request_goes_to_the_cheapest_and_the_reason_says_so() -> None:
    target, reason, record = constrained_choice(MAX_QUALITY, CANDS, P, COST, Constraints(max_cost_usd=0.5))
    assert target == "cheap"
    assert reason == ("over budget: no candidate's estimated cost is within max_cost_usd=0.5 (the cheapest: 1 USD); "
                      "sent to the cheapest")
    assert record is not None and record["excluded"] == CANDS


def test_below_the_floor_the_request_goes_to_the_most_likely_within_budget() -> None:
    target, reason, _ = constrained_choice(MAX_QUALITY, CANDS, P, COST, Constraints(min_p_correct=0.95))
    assert (target, reason) == ("dear", "below floor: no candidate reaches min_p_correct=0.95 (the best: 0.900); "
                                        "sent to the most likely")
    target, reason, _ = constrained_choice(MAX_QUALITY, CANDS, P, COST, Constraints(2.0, 0.95))
    assert target == "mid"  # the budget holds: the most likely of those within it
    assert reason.startswith("below floor: no candidate within max_cost_usd=2 reaches min_p_correct=0.95")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_cost_usd": -1.0}, "max_cost_usd must be a number in"),
    ({"max_cost_usd": math.nan}, "max_cost_usd must be a number in"),
    ({"min_p_correct": 1.5}, "min_p_correct must be a number in"),
    ({"min_p_correct": True}, "min_p_correct must be a number in"),
])
def test_invalid_limits_are_refused_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Constraints(**kwargs)


def test_a_proxy_keys_cost_ceiling_can_only_be_lowered_by_the_request() -> None:
    key = {"user_api_key_metadata": {"prefill": {"max_cost_usd": 0.001, "min_p_correct": 0.5}}}
    assert parse_overrides({**key, "prefill": {"max_cost_usd": 0.01}}).max_cost_usd == 0.001
    assert parse_overrides({**key, "prefill": {"max_cost_usd": 0.0001}}).max_cost_usd == 0.0001
    assert parse_overrides({**key, "prefill": {"min_p_correct": 0.2}}).min_p_correct == 0.5  # admin's floor wins
    with pytest.raises(ConfigurationError, match="max_cost_usd"):
        parse_overrides({"prefill": {"max_cost_usd": "cheap"}})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def prefill_router(bundle_dir: Path, **args: object) -> PrefillRouter:
    return PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                         routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", **args})


async def routed(router: PrefillRouter, text: str, **limits: object) -> dict:
    extra = {"metadata": {"prefill": limits}} if limits else {}
    resp = await router.acompletion(model="auto", messages=user(text), **extra)
    d = resp._hidden_params["prefill_routing"]
    assert resp.choices[0].message.content == f"answer from {d['target']}"  # served where the decision says
    return d


async def test_a_requests_limits_route_it_through_litellm_within_budget_or_above_the_floor(bundle_dir: Path) -> None:
    r = prefill_router(bundle_dir)
    free = await routed(r, HIST_PROMPT)
    assert free["target"] == "history-model" and "constraints" not in free
    cost = free["cost_usd"]
    assert cost["math-model"] < cost["history-model"] < cost["generalist"]
    ceiling = (cost["math-model"] + cost["history-model"]) / 2
    d = await routed(r, HIST_PROMPT, max_cost_usd=ceiling)
    assert (d["target"], d["reason"]) == ("math-model", "policy")
    assert d["constraints"] == {"max_cost_usd": ceiling, "excluded": ["generalist", "history-model"]}
    d = await routed(r, HIST_PROMPT, max_cost_usd=cost["math-model"] / 10)
    assert d["target"] == "math-model" and d["reason"].startswith("over budget: ")
    d = await routed(r, HIST_PROMPT, tolerance=1.0)  # the cheapest, whatever its chances...
    assert d["target"] == "math-model"
    d = await routed(r, HIST_PROMPT, tolerance=1.0, min_p_correct=0.9)  # ...unless it is unlikely to be right
    assert (d["target"], d["reason"]) == ("history-model", "policy")
    d = await routed(r, HIST_PROMPT, max_cost_usd=ceiling, min_p_correct=0.9)
    assert d["target"] == "math-model" and d["reason"].startswith("below floor: no candidate within max_cost_usd=")


async def test_a_router_wide_ceiling_holds_unless_a_request_sets_a_lower_one(bundle_dir: Path) -> None:
    probe = await routed(prefill_router(bundle_dir), HIST_PROMPT)
    cost = probe["cost_usd"]
    ceiling = (cost["math-model"] + cost["history-model"]) / 2
    r = prefill_router(bundle_dir, max_cost_usd=ceiling)
    assert (await routed(r, HIST_PROMPT))["target"] == "math-model"
    d = await routed(r, HIST_PROMPT, max_cost_usd=1.0)  # asking for more than the router allows
    assert d["target"] == "math-model" and d["constraints"]["max_cost_usd"] == ceiling
    d = await routed(r, HIST_PROMPT, max_cost_usd=cost["math-model"] / 10)
    assert d["reason"].startswith("over budget: ") and d["constraints"]["max_cost_usd"] == cost["math-model"] / 10
    with pytest.raises(ConfigurationError, match="max_cost_usd"):
        prefill_router(bundle_dir, max_cost_usd=0)


async def test_a_retry_stays_within_the_requests_limits(bundle_dir: Path) -> None:
    """tolerance 1 picks the cheapest target at or above the floor: history-model; it fails, and the retry goes to
    the other target above the floor (generalist), not to the cheapest of the rest (math-model, P 0.0)."""
    ml = model_list(**{"history-model": {"mock_response": "litellm.InternalServerError"}})
    r = PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0, allowed_fails=5,
                      routing_strategy_args={"bundle": str(bundle_dir), "tolerance": 1.0})
    d = await routed(r, HIST_PROMPT, min_p_correct=0.3)
    assert d["p_correct"]["math-model"] < 0.3 <= d["p_correct"]["generalist"]
    assert (d["target"], d["reason"]) == ("generalist", "retry: history-model failed this request")
    assert d["constraints"] == {"min_p_correct": 0.3, "excluded": ["math-model"]}


async def test_replay_keeps_each_logged_calls_limits_and_stats_counts_the_ways_out(bundle_dir: Path,
                                                                                    tmp_path: Path) -> None:
    from litellm_prefill_router.log_stats import summarize
    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.replay import replay

    log = tmp_path / "decisions.jsonl"
    r = prefill_router(bundle_dir, decision_log=str(log))
    cost = (await routed(r, HIST_PROMPT))["cost_usd"]
    await routed(r, HIST_PROMPT, max_cost_usd=(cost["math-model"] + cost["history-model"]) / 2)
    await routed(r, MATH_PROMPT, max_cost_usd=cost["math-model"] / 10)
    await routed(r, HIST_PROMPT, tolerance=1.0, min_p_correct=0.9)
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["decision"]["target"] for x in rows] == ["history-model", "math-model", "math-model", "history-model"]
    stats = summarize(rows)
    assert stats["reasons"] == {"policy": 3, "over budget": 1}
    assert stats["limits"] == {"calls": 3, "excluded_a_target": 3}
    out = replay(rows, PrefillPredictor(bundle_dir))
    assert out["kept"] == 4  # without the limits, the capped history prompt would move back to history-model


def test_a_langchain_runnables_limits_and_a_calls_own(bundle_dir: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.runnables import RunnableLambda

    from langchain_integration import PrefillRouterRunnable

    runnables = {t: RunnableLambda(lambda _x, t=t: f"answer from {t}")
                 for t in ("math-model", "history-model", "generalist")}
    prices = {"math-model": (2e-7, 2e-7), "history-model": (3e-7, 3e-7), "generalist": (9e-7, 9e-7)}
    plain = PrefillRouterRunnable(runnables=runnables, bundle=str(bundle_dir), preset="max-quality", prices=prices)
    assert plain.invoke(HIST_PROMPT) == "answer from history-model"
    cost = plain.decide(HIST_PROMPT).cost_usd
    capped = PrefillRouterRunnable(runnables=runnables, bundle=str(bundle_dir), preset="max-quality", prices=prices,
                                   max_cost_usd=(cost["math-model"] + cost["history-model"]) / 2)
    assert capped.invoke(HIST_PROMPT) == "answer from math-model"
    floor = {"metadata": {"prefill": {"tolerance": 1.0, "min_p_correct": 0.9}}}
    assert plain.invoke(HIST_PROMPT, config={"metadata": {"prefill": {"tolerance": 1.0}}}) == "answer from math-model"
    assert plain.invoke(HIST_PROMPT, config=floor) == "answer from history-model"  # type: ignore[arg-type]
