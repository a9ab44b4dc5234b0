"""The prefill strategy composes with litellm's own routing: pre-routing strategy deployments (complexity router),
``routing_groups`` (a prefill group beside another router-wide strategy, a litellm strategy inside a prefill-routed
group) - each in a real litellm.Router with mock_response deployments."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from conftest import (
    COMPLEX_PROMPT,
    HIST_PROMPT,
    MATH_PROMPT,
    SIMPLE_PROMPT,
    cheap_group,
    complexity_router,
    model_list,
)
from litellm_prefill_router import ConfigurationError, PrefillRouter, flush_logging, install
from litellm_prefill_router.records import reason_kind

TARGETS = {"math-model", "history-model", "generalist"}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def plain_router(**kwargs: object) -> litellm.Router:
    install()
    return litellm.Router(**kwargs)


class RoutingRecordSpy(CustomLogger):
    """litellm's standard logging payload's routing record of each call. litellm keeps one callback per logger class
    name for the whole process (removing it from ``litellm.callbacks`` does not unregister it): one instance serves
    every test here."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.records.append(kwargs["standard_logging_object"]["metadata"]["routing_decision"])


@pytest.fixture(scope="module")
def routing_records() -> Iterator[list[dict]]:
    spy = RoutingRecordSpy()
    litellm.callbacks.append(spy)
    yield spy.records
    litellm.callbacks.remove(spy)


ROUTER_CLASSES = [pytest.param(PrefillRouter, id="PrefillRouter"), pytest.param(plain_router, id="install")]


@pytest.mark.parametrize("make", ROUTER_CLASSES)
async def test_a_complexity_router_tier_that_names_the_prefill_group_is_routed_by_the_bundle(
        bundle_dir: Path, make, routing_records: list[dict]) -> None:
    # before: every request to an auto_router/... deployment failed on a prefill router ("not a callable model")
    router = make(model_list=[*model_list(), cheap_group(), complexity_router("cheap", "auto")],
                  routing_strategy="prefill", routing_strategy_args={"bundle": str(bundle_dir)})
    await flush_logging()  # an earlier test's logging events end before this test's are counted
    routing_records.clear()
    simple = await router.acompletion(model="smart", messages=user(SIMPLE_PROMPT))
    hard = await router.acompletion(model="smart", messages=user(COMPLEX_PROMPT))
    await flush_logging()

    assert simple.choices[0].message.content == "answer from cheap"
    assert "prefill_routing" not in simple._hidden_params  # the complexity router's own route, left to litellm
    decision = hard._hidden_params["prefill_routing"]
    assert decision["target"] in TARGETS and hard.choices[0].message.content == f"answer from {decision['target']}"
    assert decision["model_group"] == "auto"
    assert decision["pre_routing"] == {"model_group": "smart", "routed_to": "auto", "router_type": "complexity",
                                       "cause": decision["pre_routing"]["cause"]}
    simple_record, hard_record = routing_records
    assert simple_record["router_type"] == "complexity" and simple_record["routed_model"] == "cheap"
    assert hard_record["router_type"] == "quality" and hard_record["routed_model"] == decision["target"]
    assert hard_record["signals"][0] == "pre-routed by complexity: smart -> auto"


@pytest.mark.parametrize("make", ROUTER_CLASSES)
async def test_a_routing_group_with_the_prefill_strategy_routes_beside_another_router_wide_strategy(
        bundle_dir: Path, make) -> None:
    others = [{"model_name": "other", "litellm_params": {"model": f"openai/other-{i}", "api_key": "sk-test",
                                                         "mock_response": f"other {i}"},
               "model_info": {"id": f"other-{i}", "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}}
              for i in (1, 2)]
    router = make(model_list=[*model_list(), *others], routing_strategy="latency-based-routing",
                  routing_groups=[{"group_name": "routed", "models": ["auto"], "routing_strategy": "prefill",
                                   "routing_strategy_args": {"bundle": str(bundle_dir), "preset": "max-quality"}}])
    math = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    hist = await router.acompletion(model="routed", messages=user(HIST_PROMPT))  # the group called by its name
    assert math.choices[0].message.content == "answer from math-model"
    assert hist.choices[0].message.content == "answer from history-model"
    assert math._hidden_params["prefill_routing"]["policy"]["preset"] == "max-quality"
    other = await router.acompletion(model="other", messages=user(MATH_PROMPT))
    assert other.choices[0].message.content in {"other 1", "other 2"}
    assert "prefill_routing" not in other._hidden_params
    assert router.completion(model="auto", messages=user(HIST_PROMPT)).choices[0].message.content == \
        "answer from history-model"  # litellm's sync path asks the group's strategy too


async def test_each_prefill_routing_group_routes_its_own_models_with_its_own_policy(bundle_dir: Path) -> None:
    # the router-wide prefill strategy leaves the models of a prefill group to that group's strategy
    router = PrefillRouter(
        model_list=[*model_list(), *model_list(group="budget")], routing_strategy="prefill",
        routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"},
        routing_groups=[{"group_name": "budget-routing", "models": ["budget"], "routing_strategy": "prefill",
                         "routing_strategy_args": {"bundle": str(bundle_dir), "tolerance": 1.0}}])
    assert {d.model_name for d in router.prefill_strategy._deployments.values() if d} == {"auto"}
    best = await router.acompletion(model="auto", messages=user(HIST_PROMPT))
    budget = await router.acompletion(model="budget", messages=user(HIST_PROMPT))
    assert best._hidden_params["prefill_routing"]["target"] == "history-model"
    assert budget._hidden_params["prefill_routing"]["target"] == "math-model"  # tolerance 1: the cheapest
    assert budget._hidden_params["prefill_routing"]["policy"] == {"kind": "tolerance", "value": 1.0, "preset": None}


async def test_a_target_whose_deployments_are_all_at_their_rpm_limit_gives_way_to_the_policys_next_pick(
        bundle_dir: Path) -> None:
    """The group's usage-based strategy finds the chosen target's only deployment at its rpm limit: the request goes
    to the policy's pick among the other targets (before: it failed with capacity left beside it, after litellm's
    retries), and its decision says why. A request that pins the full target gets litellm's own rate-limit error."""
    deployments = model_list()
    for dep in deployments:
        dep["litellm_params"]["rpm"] = 1
    router = PrefillRouter(model_list=deployments, routing_strategy="prefill", num_retries=0,
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"},
                           routing_groups=[{"group_name": "g", "models": ["auto"],
                                            "routing_strategy": "usage-based-routing-v2"}])
    if (into_minute := time.time() % 60) > 50:  # litellm counts rpm per clock minute: all three calls in one
        await asyncio.sleep(60.5 - into_minute)
    first = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert first.choices[0].message.content == "answer from math-model"
    await asyncio.sleep(0.2)  # litellm counts the first call's usage after it returns
    second = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    decision = second._hidden_params["prefill_routing"]
    assert second.choices[0].message.content == f"answer from {decision['target']}"
    assert decision["target"] != "math-model" and "math-model" not in decision["candidates"]
    assert decision["reason"] == "at capacity: math-model (every deployment at its rpm/tpm limit)"
    assert reason_kind(decision["reason"]) == "at capacity"  # the metrics' and stats' label
    await asyncio.sleep(0.2)
    with pytest.raises(litellm.RateLimitError, match="No deployments available"):
        await router.acompletion(model="auto", messages=user(MATH_PROMPT),
                                 metadata={"prefill": {"pin_model": "math-model"}})


async def test_the_groups_own_litellm_strategy_picks_among_the_chosen_targets_deployments(bundle_dir: Path) -> None:
    # math-model is served by two deployments; litellm's cost-based routing (the group's strategy) picks the cheaper
    deployments = model_list(targets=("history-model", "generalist"))
    for dep_id, price in (("math-dear", 3e-6), ("math-cheap", 1e-6)):
        deployments.append({"model_name": "auto",
                            "litellm_params": {"model": "openai/math-model", "api_key": "sk-test",
                                               "mock_response": f"answer from {dep_id}",
                                               "input_cost_per_token": price, "output_cost_per_token": price},
                            "model_info": {"id": dep_id, "prefill_target": "math-model"}})
    router = PrefillRouter(model_list=deployments, routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir)},
                           routing_groups=[{"group_name": "g", "models": ["auto"],
                                            "routing_strategy": "cost-based-routing"}])
    served = set()
    for _ in range(8):  # simple-shuffle would serve both (equal weights): 1 chance in 128 of the same one 8 times
        resp = await router.acompletion(model="auto", messages=user(HIST_PROMPT),
                                        metadata={"prefill": {"pin_model": "math-model"}})
        assert resp._hidden_params["prefill_routing"]["target"] == "math-model"
        served.add(resp._hidden_params["model_id"])
    assert served == {"math-cheap"}


def test_a_prefill_routing_group_without_a_bundle_fails_at_construction(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="bundle"):
        PrefillRouter(model_list=model_list(), routing_strategy="simple-shuffle",
                      routing_groups=[{"group_name": "g", "models": ["auto"], "routing_strategy": "prefill"}])


def test_a_prefill_routing_group_naming_models_without_deployments_fails_naming_them(bundle_dir: Path) -> None:
    group = {"group_name": "g", "models": ["auot"], "routing_strategy": "prefill",  # a misspelt model group
             "routing_strategy_args": {"bundle": str(bundle_dir)}}
    with pytest.raises(ConfigurationError, match=r"no deployment of the routing group's models \['auot'\] \(0 "
                                                 r"deployments in model_list\) maps to a target"):
        PrefillRouter(model_list=model_list(), routing_strategy="latency-based-routing", routing_groups=[group])


@pytest.mark.parametrize(("field", "entry"), [
    ("group_name", {"models": ["auto"]}),
    ("models", {"group_name": "g", "models": "auto"}),  # a string, not a list of model names
    ("routing_strategy_args", {"group_name": "g", "models": ["auto"], "routing_strategy_args": "bundles/x"}),
])
def test_a_malformed_prefill_routing_group_fails_at_construction_naming_its_field(
        bundle_dir: Path, field: str, entry: dict) -> None:
    """litellm's own check of a routing_groups entry, on every release (1.110+: the entry litellm is given for a
    prefill group is rebuilt from it, so it is checked first - before, a string of models was split into letters)."""
    from pydantic import ValidationError

    group = {"routing_strategy": "prefill", "routing_strategy_args": {"bundle": str(bundle_dir)}, **entry}
    with pytest.raises(ValidationError, match=field):
        PrefillRouter(model_list=model_list(), routing_strategy="latency-based-routing", routing_groups=[group])


PREFILL_ROUTED = {
    "router-wide": {"routing_strategy": "prefill"},
    "routing-group": {"routing_strategy": "latency-based-routing",
                      "routing_groups": [{"group_name": "routed", "models": ["auto"], "routing_strategy": "prefill",
                                          "routing_strategy_args": {}}]},
}


def prefill_routed_router(bundle_dir: Path, how: str, **kwargs: object) -> litellm.Router:
    settings = PREFILL_ROUTED[how]
    args = {"bundle": str(bundle_dir), "preset": "max-quality"}
    if how == "router-wide":
        return PrefillRouter(**settings, routing_strategy_args=args, **kwargs)
    groups = [{**g, "routing_strategy_args": args} for g in settings["routing_groups"]]
    return PrefillRouter(routing_strategy=settings["routing_strategy"], routing_groups=groups, **kwargs)


@pytest.mark.parametrize("how", PREFILL_ROUTED)
async def test_a_keys_routing_strategy_override_takes_precedence_over_the_prefill_strategy(
        bundle_dir: Path, how: str) -> None:
    # the proxy forwards a key's/team's router_settings.routing_strategy as this per-request kwarg; litellm gives it
    # precedence over routing groups, and so does the router-wide prefill strategy (before: it ignored it)
    router = prefill_routed_router(bundle_dir, how, model_list=model_list())
    routed = await router.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert routed._hidden_params["prefill_routing"]["target"] == "history-model"
    for _ in range(3):  # cost-based routing: the cheapest deployment (math-model), whatever the bundle predicts
        cheapest = await router.acompletion(model="auto", messages=user(HIST_PROMPT),
                                            routing_strategy="cost-based-routing")
        assert cheapest.choices[0].message.content == "answer from math-model"
        assert "prefill_routing" not in cheapest._hidden_params
    # least-busy: litellm's pick (holding it for the request's call), no decision
    busy = await router.acompletion(model="auto", messages=user(HIST_PROMPT), routing_strategy="least-busy")
    assert busy.choices[0].message.content.startswith("answer from ") and "prefill_routing" not in busy._hidden_params
    # a name litellm does not know is ignored by litellm (with its warning): the request is routed as configured
    bogus = await router.acompletion(model="auto", messages=user(HIST_PROMPT), routing_strategy="fastest")
    assert bogus._hidden_params["prefill_routing"]["target"] == "history-model"


@pytest.mark.parametrize("how", PREFILL_ROUTED)
async def test_a_keys_prefill_override_routes_as_configured_without_litellms_ignored_override_warning(
        bundle_dir: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    router = prefill_routed_router(bundle_dir, how, model_list=model_list())
    with caplog.at_level("WARNING"):
        routed = await router.acompletion(model="auto", messages=user(HIST_PROMPT), routing_strategy="prefill")
        assert routed._hidden_params["prefill_routing"]["target"] == "history-model"
        assert not [r for r in caplog.records if "Ignoring per-request" in r.getMessage()]
        for _ in range(2):
            await router.acompletion(model="auto", messages=user(HIST_PROMPT), routing_strategy=f"fastest-{how}")
    # litellm's warning before 1.110 (each request); on 1.110+, whose core ignores unknown names silently, the
    # strategy's own (once per name)
    ignored = [r.getMessage() for r in caplog.records if "Ignoring per-request" in r.getMessage()]
    assert ignored and f"'fastest-{how}'" in ignored[0] and "cost-based-routing" in ignored[0]


async def test_a_keys_prefill_override_of_a_group_no_bundle_routes_is_said_once(
        bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    router = prefill_routed_router(bundle_dir, "routing-group", model_list=[*model_list(), cheap_group()])
    with caplog.at_level("WARNING"):
        for _ in range(2):
            plain = await router.acompletion(model="cheap", messages=user(HIST_PROMPT), routing_strategy="prefill")
            assert plain.choices[0].message.content == "answer from cheap"
    said = [r.getMessage() for r in caplog.records if "which no prefill strategy routes" in r.getMessage()]
    assert len(said) == 1 and "'cheap'" in said[0] and "routing_groups" in said[0]


@pytest.mark.parametrize("release", ["1.109 (select)", "before (async_get_healthy_deployments)"])
async def test_the_healthy_deployment_lookup_gets_the_requests_span_and_arguments_in_either_litellm_api(
        release: str) -> None:
    """The strategy asks for healthy deployments the way the installed litellm offers (``select(kind="healthy")`` from
    1.109, the old method before) and passes the request's OpenTelemetry span, as litellm's own routing does."""
    from litellm_prefill_router.composition import healthy_deployments

    seen: dict = {}
    deployment = {"model_name": "auto", "model_info": {"id": "d1"}}

    class NewRouter:
        async def select(self, model, request_kwargs, *, kind, **kw):  # type: ignore[no-untyped-def]
            seen.update(model=model, kind=kind, **kw)
            return [deployment]

    class OldRouter:
        async def async_get_healthy_deployments(self, **kw):  # type: ignore[no-untyped-def]
            seen.update(kw)
            return [deployment]

    router = NewRouter() if release.startswith("1.109") else OldRouter()
    request = {"litellm_parent_otel_span": "span-of-the-request", "metadata": {}}
    got = await healthy_deployments(router, "auto", request, [{"role": "user", "content": "hi"}], None,  # type: ignore[arg-type]
                                    False)
    assert got == [deployment]
    assert seen["model"] == "auto" and seen["parent_otel_span"] == "span-of-the-request"
    assert seen["messages"] == [{"role": "user", "content": "hi"}] and seen["specific_deployment"] is False
    assert seen.get("kind", "healthy") == "healthy"


async def test_a_retry_whose_next_pick_is_at_capacity_says_both_why_it_moved(bundle_dir: Path) -> None:
    """math-model fails the request; the retry's next pick, generalist, has used its one request this minute: the
    retry goes to history-model, and the reason keeps the retry's cause beside the capacity one."""
    deployments = model_list(**{"math-model": {"mock_response": "litellm.InternalServerError"},
                                "generalist": {"rpm": 1}})
    for dep in deployments:  # litellm keeps rpm usage by deployment id: ids of their own, apart from other tests'
        dep["model_info"]["id"] = f"{dep['model_info']['prefill_target']}-{uuid.uuid4().hex[:8]}"
    router = PrefillRouter(model_list=deployments, routing_strategy="prefill", num_retries=1, retry_after=0,
                           allowed_fails=5, routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"},
                           routing_groups=[{"group_name": "g", "models": ["auto"],
                                            "routing_strategy": "usage-based-routing-v2"}])
    if (into_minute := time.time() % 60) > 50:  # litellm counts rpm per clock minute: both calls in one
        await asyncio.sleep(60.5 - into_minute)
    await router.acompletion(model="auto", messages=user(MATH_PROMPT),
                             metadata={"prefill": {"pin_model": "generalist"}})
    await asyncio.sleep(0.2)  # litellm counts the first call's usage after it returns
    resp = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    d = resp._hidden_params["prefill_routing"]
    assert d["p_correct"]["generalist"] > d["p_correct"]["history-model"]  # generalist is the policy's next pick
    assert resp.choices[0].message.content == "answer from history-model"
    assert d["reason"] == ("retry: math-model failed this request; at capacity: generalist (every deployment at its "
                           "rpm/tpm limit)")
    assert reason_kind(d["reason"]) == "retry"


async def test_routing_through_prefill_groups_group_strategies_and_key_overrides_uses_no_deprecated_router_member(
        bundle_dir: Path) -> None:
    """litellm 1.109+ counts each use of a deprecated Router member from outside litellm (and warns): the strategy
    reads the router through its entry points only, also where it resolves a model group's alias for a prefill
    group. Releases without the tally (<1.109) have nothing deprecated to use."""
    deprecated = pytest.importorskip("litellm.router_deprecated", reason="litellm<1.109 deprecates no Router member")
    tally = deprecated.DEPRECATED_ROUTER_MEMBER_USES
    deployments = [*model_list(), *model_list(group="budget"), cheap_group()]
    for dep in deployments:
        dep["litellm_params"]["rpm"] = 1000
    group = {"group_name": "routed", "models": ["budget"], "routing_strategy": "prefill",
             "routing_strategy_args": {"bundle": str(bundle_dir)}}
    router = PrefillRouter(model_list=deployments, routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir)},
                           routing_groups=[group, {"group_name": "g", "models": ["auto"],
                                                   "routing_strategy": "usage-based-routing-v2"}],
                           model_group_alias={"cheapest": "budget"})
    before = dict(tally)
    for model, kwargs in (("auto", {}), ("budget", {}), ("cheapest", {}), ("routed", {}), ("cheap", {}),
                          ("auto", {"routing_strategy": "cost-based-routing"}),
                          ("budget", {"routing_strategy": "least-busy"}), ("auto", {"routing_strategy": "prefill"})):
        resp = await router.acompletion(model=model, messages=user(HIST_PROMPT), **kwargs)
        assert resp.choices[0].message.content.startswith("answer from ")
    assert dict(tally) == before
