"""The prefill router as litellm's complexity-router classifier (classifier_type: custom), through a real litellm
Router with mock deployments."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import time
from pathlib import Path

import litellm
import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, read_a_chunk_and_drop, stream_of, streamed_text, tier_router
from litellm_prefill_router import flush_logging
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.log_stats import summarize
from litellm_prefill_router.tier_classifier import PrefillTierClassifier

TIERS = {"SIMPLE": "history-model", "MEDIUM": "math-model", "COMPLEX": "generalist"}
# the complexity router's tiers name model groups; each serves one bundle target
GROUPS = {"SIMPLE": "hist", "MEDIUM": "maths", "COMPLEX": "gen", "REASONING": "gen"}
SERVED_BY = {"hist": "history-model", "maths": "math-model", "gen": "generalist", "other": "generalist"}


def router(classifier: PrefillTierClassifier, failing: tuple[str, ...] = (),
           priced: dict[str, tuple[float, float]] | None = None, **config: object) -> litellm.Router:
    """``priced``: {model group: (input, output) USD per token} in its deployment's model_info (its litellm model
    named for the price: litellm's cost map is process-wide, one entry per model)."""
    deployments = [{"model_name": g, "litellm_params": {
        "model": f"openai/{SERVED_BY[g]}" + (f"-at-{priced[g][0]:g}" if priced and g in priced else ""),
        "api_key": "sk-test",
        "mock_response": "litellm.InternalServerError" if g in failing else f"answer from {g}"},
        "model_info": dict(zip(("input_cost_per_token", "output_cost_per_token"), (priced or {}).get(g, ())))}
        for g in ("hist", "maths", "gen", "other")]
    return litellm.Router(model_list=[*deployments, tier_router("smart", classifier, GROUPS, **config)],
                          fallbacks=[{"smart": ["other"]}])


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_the_complexity_router_sends_each_prompt_to_the_tier_whose_model_the_bundle_picks(
        bundle_dir: Path) -> None:
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality"))
    for prompt, tier, group in ((MATH_PROMPT, "MEDIUM", "maths"), (HIST_PROMPT, "SIMPLE", "hist")):
        resp = await r.acompletion(model="smart", messages=user(prompt))
        assert resp.choices[0].message.content == f"answer from {group}"
        headers = resp._hidden_params["additional_headers"]
        assert headers["x-litellm-complexity-router-tier"] == tier
        assert headers["x-litellm-complexity-router-cause"] == "classifier_plugin"
        d = resp._hidden_params["prefill_routing"]
        assert (d["tier"], d["target"], d["model_group"], d["reason"]) == (tier, TIERS[tier], "smart", "policy")
        assert set(d["p_correct"]) == set(TIERS.values())
    # the Responses API routes on its input
    resp = await r.aresponses(model="smart", input=MATH_PROMPT)
    assert resp.output[0].content[0].text == "answer from maths"
    assert resp._hidden_params["prefill_routing"]["tier"] == "MEDIUM"


async def test_the_system_prompt_is_classified_whichever_api_carries_it(bundle_dir: Path) -> None:
    """litellm hands the classifier a chat request's system message and the Responses API's instructions, but not the
    Anthropic API's ``system``: the classifier reads it from the request, so the three classify the same text."""
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", prediction_cache_size=0))
    system = "You are a patient tutor who answers about the integral of x squared."
    chat = await r.acompletion(model="smart", messages=[{"role": "system", "content": system}, *user(HIST_PROMPT)])
    anthropic = await r.aanthropic_messages(model="smart", max_tokens=16, system=system, messages=user(HIST_PROMPT))
    responses = await r.aresponses(model="smart", input=HIST_PROMPT, instructions=system)
    plain = await r.acompletion(model="smart", messages=user(HIST_PROMPT))
    seen = [(d["input_tokens"], d["p_correct"]) for d in (chat._hidden_params["prefill_routing"],
                                                           anthropic["_hidden_params"]["prefill_routing"],
                                                           responses._hidden_params["prefill_routing"])]
    assert all(x == seen[0] for x in seen), seen
    assert seen[0][0] > plain._hidden_params["prefill_routing"]["input_tokens"]


async def test_the_decision_log_keeps_the_anthropic_system_prompt_the_classifier_read(bundle_dir: Path,
                                                                                      tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log)))
    system = "You are a patient tutor who answers about the integral of x squared."
    await r.aanthropic_messages(model="smart", max_tokens=16, system=system, messages=user(HIST_PROMPT))
    await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    await flush_logging()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [rec["messages"] for rec in logged] == [[{"role": "system", "content": system}, *user(HIST_PROMPT)],
                                                   user(MATH_PROMPT)]  # the chat call's as sent


async def test_a_tier_is_priced_by_the_deployments_of_the_model_groups_it_is_sent_to_unless_prices_are_given(
        bundle_dir: Path) -> None:
    """The tiers' targets stand for their models' quality; the cost is what the tier's groups will bill: a tier
    served at 10x the bundle's price is decided, and its cost ceiling checked, at that price."""
    from conftest import PRICES

    pin, pout = PRICES["math-model"]

    async def decided(**settings: object) -> dict:
        priced = settings.pop("priced", None)
        r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", **settings),  # type: ignore[arg-type]
                   priced=priced)  # type: ignore[arg-type]
        return (await r.acompletion(model="smart", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]

    as_trained = await decided()
    dear = await decided(priced={"maths": (pin * 10, pout * 10)})
    assert dear["cost_usd"]["math-model"] == pytest.approx(10 * as_trained["cost_usd"]["math-model"])
    assert dear["cost_usd"]["generalist"] == as_trained["cost_usd"]["generalist"]
    ceiling = 2 * as_trained["cost_usd"]["math-model"]
    assert (await decided(max_cost_usd=ceiling))["tier"] == "MEDIUM"
    capped = await decided(max_cost_usd=ceiling, priced={"maths": (pin * 10, pout * 10)})
    assert capped["tier"] != "MEDIUM" and capped["cost_usd"][capped["target"]] <= ceiling
    told = await decided(priced={"maths": (pin * 10, pout * 10)}, prices={"math-model": (pin, pout)})
    assert told["cost_usd"]["math-model"] == as_trained["cost_usd"]["math-model"]


async def test_each_classified_call_is_logged_with_its_outcome_and_stats_sums_it_up(bundle_dir: Path,
                                                                                   tmp_path: Path) -> None:
    log = tmp_path / "tiers.jsonl"
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log)))
    for prompt in (MATH_PROMPT, HIST_PROMPT, MATH_PROMPT):
        await r.acompletion(model="smart", messages=user(prompt))
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["decision"]["tier"], x["outcome"]["success"], x["outcome"]["model"]) for x in rows] == \
        [("MEDIUM", True, "math-model"), ("SIMPLE", True, "history-model"), ("MEDIUM", True, "math-model")]
    assert rows[0]["litellm_call_id"] and rows[0]["messages"] == user(MATH_PROMPT)
    # savings against the dearest candidate tier's target (generalist) at the bundle's prices
    assert rows[0]["decision"]["baseline"]["target"] == "generalist" and rows[0]["outcome"]["savings_usd"] > 0
    stats = summarize(rows)
    assert stats["calls"] == 3 and stats["targets"]["math-model"]["calls"] == 2 and stats["savings_usd"] > 0


async def test_a_router_wide_prefill_strategy_leaves_the_classifiers_decision_on_the_tier_groups_it_does_not_route(
        bundle_dir: Path) -> None:
    from conftest import model_list
    from litellm_prefill_router import PrefillRouter

    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality")
    # the tier groups' deployments are named after no bundle target: the strategy leaves them to litellm
    tier_groups = [{"model_name": g, "litellm_params": {"model": f"openai/tier-{g}", "api_key": "sk-test",
                                                        "mock_response": f"answer from {g}"}}
                   for g in set(GROUPS.values())]
    r = PrefillRouter(model_list=[*model_list(), *tier_groups, tier_router("smart", classifier, GROUPS)],
                      routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir)})
    resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content == "answer from maths"
    assert resp._hidden_params["prefill_routing"]["tier"] == "MEDIUM"
    plain = await r.acompletion(model="auto", messages=user(MATH_PROMPT))  # the strategy's own group
    assert "tier" not in plain._hidden_params["prefill_routing"]


async def test_a_router_wide_prefill_strategy_keeps_the_classifiers_decision_on_tier_groups_of_bundle_targets(
        bundle_dir: Path, tmp_path: Path) -> None:
    """Tier groups whose deployments serve bundle targets (the usual config: a tier names a real model) are the
    classifier's: the strategy neither decides again within the tier's group nor replaces the classifier's record
    (its tier, its p_correct over the tiers' targets, litellm's complexity-router routing record)."""
    from conftest import model_list
    from litellm_prefill_router import PrefillRouter

    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log))
    deployments = [dep for g in ("hist", "maths", "gen") for dep in model_list(
        targets=(SERVED_BY[g],), group=g, **{SERVED_BY[g]: {"mock_response": f"answer from {g}"}})]
    seen: list[dict] = []

    # litellm keeps one callback per logger class name for the whole process: a name no other test's spy has
    class TierGroupRoutingSpy(litellm.integrations.custom_logger.CustomLogger):  # type: ignore[name-defined,misc]
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore
            seen.append(kwargs["standard_logging_object"]["metadata"].get("routing_decision") or {})

    r = PrefillRouter(model_list=[*deployments, tier_router("smart", classifier, GROUPS)], routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "min-cost"})
    spy = TierGroupRoutingSpy()
    litellm.callbacks.append(spy)
    try:
        for prompt, tier, group in ((MATH_PROMPT, "MEDIUM", "maths"), (HIST_PROMPT, "SIMPLE", "hist")):
            resp = await r.acompletion(model="smart", messages=user(prompt))
            assert resp.choices[0].message.content == f"answer from {group}"
            d = resp._hidden_params["prefill_routing"]
            assert (d["tier"], d["target"], d["reason"]) == (tier, TIERS[tier], "policy")
            assert d["policy"]["preset"] == "max-quality"  # the classifier's policy, not the strategy's min-cost
            assert set(d["p_correct"]) == set(TIERS.values()) and "pre_routing" not in d
        await flush_logging()
    finally:
        litellm.callbacks.remove(spy)
    assert [row["decision"]["tier"] for row in map(json.loads, log.read_text().splitlines())] == ["MEDIUM", "SIMPLE"]
    assert [x.get("router_model_name") for x in seen] == ["smart", "smart"]
    # a tier whose group pools several targets is routed within the pool by the strategy (two stages)
    pool = model_list(targets=("math-model", "history-model"), group="pool")
    r = PrefillRouter(model_list=[*deployments, *pool, tier_router("smart", classifier, {**GROUPS, "MEDIUM": "pool"})],
                      routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "min-cost"})
    d = (await r.acompletion(model="smart", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    assert d["policy"]["preset"] == "min-cost" and d["candidates"] == ["history-model", "math-model"]
    assert (d["pre_routing"]["model_group"], d["pre_routing"]["routed_to"]) == ("smart", "pool")


async def test_a_requests_metadata_prefill_overrides_the_classifiers_policy(bundle_dir: Path) -> None:
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality"))
    pinned = await r.acompletion(model="smart", messages=user(MATH_PROMPT),
                                 metadata={"prefill": {"pin_model": "generalist"}})
    assert pinned.choices[0].message.content == "answer from gen"
    assert pinned._hidden_params["prefill_routing"]["reason"] == "pinned"
    cheapest = await r.acompletion(model="smart", messages=user(HIST_PROMPT), metadata={"prefill": {"tolerance": 1.0}})
    assert cheapest._hidden_params["prefill_routing"]["tier"] == "MEDIUM"  # math-model, the cheapest target
    narrowed = await r.acompletion(model="smart", messages=user(MATH_PROMPT),
                                   metadata={"prefill": {"candidates": ["history-model", "generalist"]}})
    assert narrowed._hidden_params["prefill_routing"]["tier"] == "COMPLEX"


async def test_a_failed_prediction_is_declined_and_litellms_classifier_fallback_serves_the_request(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, decision_log=str(log))

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("encoder exploded")
    monkeypatch.setattr(classifier.decider.predictor, "apredict_one", broken)
    r = router(classifier)  # classifier_fallback: litellm's heuristic scorer
    resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content.startswith("answer from ")  # the request was served
    assert resp._hidden_params["additional_headers"]["x-litellm-complexity-router-cause"] != "classifier_plugin"
    await flush_logging()
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["decision"]["declined"] is True and row["decision"]["tier"] is None
    assert row["decision"]["reason"].startswith("fallback: inference failed (RuntimeError: encoder exploded)")
    assert summarize([row])["targets"]["(declined)"]["calls"] == 1


async def test_invalid_metadata_prefill_overrides_are_declined_with_why_and_served_by_litellms_fallback(
        bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The strategy fails such a request; litellm serves a classifier's failure by its classifier_fallback, with a
    warning - the request is in the log, declined, with the validation error."""
    log = tmp_path / "tiers.jsonl"
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, decision_log=str(log)))
    with caplog.at_level("WARNING", logger="LiteLLM Router"):
        resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT),
                                   metadata={"prefill": {"tolerance": "lots"}})
    assert resp.choices[0].message.content.startswith("answer from ")
    assert any("invalid metadata['prefill'] overrides" in rec.getMessage() for rec in caplog.records)
    d = resp._hidden_params["prefill_routing"]
    assert d["declined"] is True and d["reason"].startswith("fallback: invalid metadata['prefill'] overrides")
    assert d["served_tier"] is not None  # litellm's fallback's tier answered
    await flush_logging()
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["decision"]["reason"] == d["reason"] and row["outcome"]["success"] is True


async def test_a_prediction_litellm_cancels_at_its_plugin_timeout_is_logged_as_declined(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm cancels a classifier past classifier_plugin_timeout_ms and serves the request by its fallback: the
    request is still in the decision log (declined, with why), not lost from it. By default the classifier's own
    decision timeout (2.5 s) declines before litellm's default 3 s cut-off."""
    assert PrefillTierClassifier(str(bundle_dir), TIERS).decider.timeout_s == 2.5
    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, decision_log=str(log), decision_timeout_s=30.0)

    async def stuck(*_args: object, **_kwargs: object) -> None:
        await asyncio.sleep(30)
    monkeypatch.setattr(classifier.decider.predictor, "apredict_one", stuck)
    r = router(classifier, classifier_plugin_timeout_ms=200)
    started = time.perf_counter()
    resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    assert time.perf_counter() - started < 5
    assert resp.choices[0].message.content.startswith("answer from ")  # served by litellm's classifier_fallback
    assert "prefill_routing" in resp._hidden_params  # the response names the declined decision too
    await flush_logging()
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["decision"]["declined"] is True and row["decision"]["tier"] is None and row["outcome"]["success"]
    assert row["decision"]["reason"].startswith("fallback: routing cancelled by litellm (no prediction within 0.2")
    assert row["decision"]["served_tier"] in GROUPS  # the tier litellm's heuristic served


async def test_a_fallback_to_another_model_group_is_not_logged_as_the_classifiers_decision(bundle_dir: Path,
                                                                                          tmp_path: Path) -> None:
    log = tmp_path / "tiers.jsonl"
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log)),
               failing=("maths",))
    resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content == "answer from other"  # litellm's fallbacks: smart -> other
    assert "prefill_routing" not in resp._hidden_params  # "other" was not chosen by the classifier
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["decision"]["tier"], x["outcome"]["success"]) for x in rows] == [("MEDIUM", False)]


def test_tiers_that_do_not_map_one_to_one_onto_bundle_targets_are_errors(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"tiers' targets \['gpt-9'\] are not targets of bundle .*; its "
                                                 r"targets: \['generalist', 'history-model', 'math-model'\]"):
        PrefillTierClassifier(str(bundle_dir), {"SIMPLE": "math-model", "COMPLEX": "gpt-9"})
    with pytest.raises(ConfigurationError, match="tiers 'SIMPLE' and 'MEDIUM' both name target 'math-model'"):
        PrefillTierClassifier(str(bundle_dir), {"SIMPLE": "math-model", "MEDIUM": "math-model"})
    with pytest.raises(ConfigurationError, match="tiers must map each complexity-router tier to a bundle target"):
        PrefillTierClassifier(str(bundle_dir), {})
    with pytest.raises(ConfigurationError, match="tiers maps tier names to target names"):
        PrefillTierClassifier(str(bundle_dir), {"SIMPLE": ["math-model"]})  # type: ignore[dict-item]


def test_bad_prices_cache_sizes_and_policies_are_configuration_errors(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"prices\['math-model'\] must be \(input, output\) USD per token"):
        PrefillTierClassifier(str(bundle_dir), TIERS, prices={"math-model": (1e-7,)})  # type: ignore[dict-item]
    for size, said in ((-1, "Input should be greater than or equal to 0"), (True, "true/false is not a value")):
        with pytest.raises(ConfigurationError, match=f"PrefillTierClassifier settings: prediction_cache_size: {said}"):
            PrefillTierClassifier(str(bundle_dir), TIERS, prediction_cache_size=size)
    with pytest.raises(ConfigurationError, match="unknown policy preset 'nope'"):
        PrefillTierClassifier(str(bundle_dir), TIERS, preset="nope")
    with pytest.raises(ConfigurationError,
                       match="invalid PrefillTierClassifier settings: autotune.savings: Input should be less than 1"):
        PrefillTierClassifier(str(bundle_dir), TIERS, autotune={"savings": 2})


def test_it_is_a_litellm_classifier_plugin_that_litellms_config_copies_share(bundle_dir: Path) -> None:
    from litellm.types.router import ClassifierPlugin

    classifier = PrefillTierClassifier(str(bundle_dir), TIERS)
    # what the proxy checks when it resolves `classifier_plugin: module.instance`
    assert isinstance(classifier, ClassifierPlugin) and inspect.iscoroutinefunction(classifier.classify)
    assert copy.deepcopy({"plugin": classifier})["plugin"] is classifier  # litellm deep-copies its model_list


async def test_autotune_tunes_the_classifiers_policy_per_complexity_router(bundle_dir: Path) -> None:
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality",
                                       autotune={"savings": 0.3, "window": 20, "min_calls": 20, "every": 10})
    assert classifier.autotuner is not None
    r = router(classifier)
    for i in range(20):
        await r.acompletion(model="smart", messages=user((MATH_PROMPT, HIST_PROMPT)[i % 2]))
    classifier.autotuner.wait()
    status = classifier.autotuner.status()["smart"]
    assert status is not None and status["calls"] == 20
    resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    assert resp._hidden_params["prefill_routing"]["policy"]["autotuned"] is True


async def test_learned_answer_lengths_price_the_tiers_and_a_restarted_classifier_reads_them_back(
        bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.answer_lengths import MIN_ANSWERS

    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log),
                                       learn_output_tokens=True)
    r = router(classifier)
    first = None
    for i in range(MIN_ANSWERS + 1):  # the mock answers have 20 completion tokens
        resp = await r.acompletion(model="smart", messages=user(f"{MATH_PROMPT} {'again ' * (i % 5)}"))
        first = first or resp._hidden_params["prefill_routing"]
        await flush_logging()
    last = resp._hidden_params["prefill_routing"]
    per_token = 2e-7  # math-model's price, in and out
    assert first["cost_usd"]["math-model"] == pytest.approx(per_token * (first["input_tokens"] + 256))
    assert last["cost_usd"]["math-model"] == pytest.approx(per_token * (last["input_tokens"] + 20))
    assert classifier.answer_lengths is not None
    assert classifier.answer_lengths.status()["smart"]["math-model"]["answers"] == MIN_ANSWERS + 1
    again = PrefillTierClassifier(str(bundle_dir), TIERS, decision_log=str(log), learn_output_tokens=True)
    assert again.answer_lengths is not None
    assert again.answer_lengths.status()["smart"]["math-model"]["answers"] == MIN_ANSWERS + 1


async def test_a_tier_litellm_escalates_is_logged_with_the_tier_and_target_that_answered(
        bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.feedback import feedback_rows

    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log),
                                       learn_output_tokens=True)
    r = router(classifier)
    # the classifier picks SIMPLE (pinned to its target); litellm's escalation keyword moves the call to MEDIUM
    resp = await r.acompletion(model="smart", messages=user(f"{HIST_PROMPT} LITELLM ESCALATE"),
                               metadata={"prefill": {"pin_model": "history-model"}})
    assert resp.choices[0].message.content == "answer from maths"
    d = resp._hidden_params["prefill_routing"]
    assert (d["tier"], d["target"], d["served_tier"], d["served_target"]) == \
        ("SIMPLE", "history-model", "MEDIUM", "math-model")
    plain = await r.acompletion(model="smart", messages=user(HIST_PROMPT),
                                metadata={"prefill": {"pin_model": "history-model"}})
    assert "served_tier" not in plain._hidden_params["prefill_routing"]  # served as classified
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["decision"].get("served_target"), x["outcome"]["model"]) for x in rows] == \
        [("math-model", "math-model"), (None, "history-model")]
    # the answer, its length and its feedback are the served target's, not the classifier's pick's
    assert classifier.answer_lengths is not None
    learned = classifier.answer_lengths.status()["smart"]
    assert learned["math-model"]["answers"] == 1 and learned["history-model"]["answers"] == 1
    stats = summarize(rows)
    assert stats["moved_by_litellm"]["calls"] == 1
    assert list(stats["moved_by_litellm"]["by_cause"].values()) == [{"math-model": 1}]
    data, _ = feedback_rows(log, {rows[0]["litellm_call_id"]: 1.0, rows[1]["litellm_call_id"]: 0.0})
    assert sorted((list(row["scores"].items())[0]) for row in data) == [("history-model", 0.0), ("math-model", 1.0)]


async def test_shadow_mode_logs_the_classifiers_tier_and_litellms_heuristic_serves_without_a_warning_per_request(
        bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "tiers.jsonl"
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log),
                                     shadow=True))
    with caplog.at_level("WARNING", logger="LiteLLM Router"):
        resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
    headers = resp._hidden_params["additional_headers"]
    assert headers["x-litellm-complexity-router-cause"] != "classifier_plugin"  # litellm's own classifier decided
    heuristic_tier = headers["x-litellm-complexity-router-tier"]
    assert resp.choices[0].message.content == f"answer from {GROUPS[heuristic_tier]}"
    d = resp._hidden_params["prefill_routing"]
    assert (d["shadow"], d["tier"], d["target"]) == (True, "MEDIUM", "math-model")  # what the classifier would do
    assert (d["served_tier"], d["served_target"]) == (heuristic_tier, TIERS.get(heuristic_tier))
    assert not [x for x in caplog.records if "declined" in x.getMessage()]
    await flush_logging()
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["decision"]["shadow"] is True and row["decision"]["served_tier"] == heuristic_tier
    assert summarize([row])["shadow"]["calls"] == 1


async def test_a_failed_prediction_still_warns_that_the_classifier_declined(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    classifier = PrefillTierClassifier(str(bundle_dir), TIERS)

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("encoder exploded")
    monkeypatch.setattr(classifier.decider.predictor, "apredict_one", broken)
    with caplog.at_level("WARNING", logger="LiteLLM Router"):
        resp = await router(classifier).acompletion(model="smart", messages=user(MATH_PROMPT))
    assert [x for x in caplog.records if "declined to classify" in x.getMessage()]
    assert resp._hidden_params["prefill_routing"]["served_tier"] == \
        resp._hidden_params["additional_headers"]["x-litellm-complexity-router-tier"]


async def test_a_rollout_serves_its_control_arm_by_the_shadow_tier_and_keeps_each_user_in_one_arm(
        bundle_dir: Path) -> None:
    r = router(PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", rollout=0.5,
                                     shadow_tier="COMPLEX"))
    arms: dict[str, set[str]] = {}
    for i in range(24):
        u = f"user-{i % 8}"
        resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT), user=u)
        d = resp._hidden_params["prefill_routing"]
        arms.setdefault(u, set()).add(d["arm"])
        served = "gen" if d["arm"] == "control" else "maths"  # control: as before (COMPLEX); router: MEDIUM
        assert resp.choices[0].message.content == f"answer from {served}"
        assert d.get("shadow", False) is (d["arm"] == "control")
    assert all(len(a) == 1 for a in arms.values())  # each user stays in one arm
    assert {a for s in arms.values() for a in s} == {"router", "control"}


def test_shadow_and_rollout_settings_that_cannot_apply_are_configuration_errors(bundle_dir: Path) -> None:
    for bad in ({"rollout": 1.5}, {"rollout": "half"}, {"shadow": True, "rollout": 0.5},
                {"shadow_tier": "COMPLEX"}, {"shadow": True, "shadow_tier": ""}):
        with pytest.raises(ConfigurationError):
            PrefillTierClassifier(str(bundle_dir), TIERS, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
async def test_a_stream_the_classifier_sent_to_its_tier_carries_the_classifiers_decision(
        api: str, bundle_dir: Path, tmp_path: Path) -> None:
    """Against a local OpenAI-compatible endpoint (litellm mocks the Responses and Anthropic streams not); litellm's
    complexity router serves no Google GenAI request (it goes to the fallbacks). A stream dropped before its end is
    logged as abandoned."""
    from fake_openai import FakeOpenAI

    log = tmp_path / "tiers.jsonl"
    with FakeOpenAI() as fake:
        deployments = [{"model_name": g, "litellm_params": {"model": f"openai/{SERVED_BY[g]}", "api_key": "sk-test",
                                                            "api_base": fake.url}} for g in ("hist", "maths", "gen")]
        r = litellm.Router(model_list=[*deployments, tier_router(
            "smart", PrefillTierClassifier(str(bundle_dir), TIERS, preset="max-quality", decision_log=str(log)),
            GROUPS)])
        for prompt, tier in ((MATH_PROMPT, "MEDIUM"), (HIST_PROMPT, "SIMPLE")):
            stream = await stream_of(r, api, prompt, model="smart")
            d = stream._hidden_params["prefill_routing"]  # before the first chunk
            assert (d["tier"], d["target"], d["model_group"]) == (tier, TIERS[tier], "smart")
            assert streamed_text(api, [c async for c in stream]) == f"answer from {TIERS[tier]}"
        await read_a_chunk_and_drop(await stream_of(r, api, f"{MATH_PROMPT} (dropped)", model="smart"))
        await flush_logging()
    assert [m["model"] for m in fake.requests] == ["math-model", "history-model", "math-model"]
    rows = {row["messages"][-1]["content"]: row["outcome"] for row in map(json.loads, log.read_text().splitlines())}
    assert {p: o.get("abandoned", False) for p, o in rows.items()} == {
        MATH_PROMPT: False, HIST_PROMPT: False, f"{MATH_PROMPT} (dropped)": True}
