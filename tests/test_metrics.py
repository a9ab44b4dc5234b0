"""Prometheus metrics of routing (``metrics: true``): counted from each finished call, in the default registry."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    HIST_PROMPT,
    MATH_PROMPT,
    PRICES,
    always_cheapest,
    model_list,
    read_a_chunk_and_drop,
    rewrite_bundle,
    tier_router,
)
from litellm_prefill_router import ConfigurationError, PrefillRouter, flush_logging

REGISTRY = pytest.importorskip("prometheus_client", reason="the `metrics` extra is not installed").REGISTRY


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sample(name: str, **labels: str) -> float:
    """The current value of one series of the default registry (0 where it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counting(*series: tuple[str, dict[str, str]]) -> Callable[[], list[float]]:
    """How much each series grew since this call: the registry is process-wide, so tests compare before/after."""
    before = [sample(name, **labels) for name, labels in series]
    return lambda: [round(sample(name, **labels) - b, 12) for (name, labels), b in zip(series, before)]


def metered_router(bundle_dir: Path, group: str, **args: object) -> PrefillRouter:
    ml = model_list(group=group, **{"math-model": {"mock_response": "litellm.InternalServerError"}}) \
        if args.pop("failing_math", False) else model_list(group=group)
    return PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0, allowed_fails=5,
                         routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", "metrics": True,
                                                **args})


async def test_a_stream_its_reader_drops_is_counted_as_abandoned_not_as_a_success_or_a_failure(
        bundle_dir: Path) -> None:
    g = {"model_group": "left", "target": "math-model"}
    grew = counting(*(("prefill_router_calls_total", {**g, "outcome": o}) for o in ("abandoned", "success", "failure")),
                    ("prefill_router_cost_usd_total", g), ("prefill_router_estimated_cost_usd_total", g))
    r = metered_router(bundle_dir, "left")
    await read_a_chunk_and_drop(await r.acompletion(model="left", messages=user(MATH_PROMPT), stream=True,
                                                    mock_response="one two three"))
    await flush_logging()
    *calls, cost, estimated = grew()
    assert calls == [1, 0, 0]
    # what was read is spent; the decision's estimate is a whole answer's, so it is not set beside a part's cost
    assert cost > 0 and estimated == 0


async def test_routed_calls_are_counted_by_target_reason_and_outcome_with_latency_p_correct_cost_and_savings(
        bundle_dir: Path) -> None:
    g = {"model_group": "metered"}
    grew = counting(
        ("prefill_router_decisions_total", {**g, "target": "math-model", "reason": "policy"}),
        ("prefill_router_decisions_total", {**g, "target": "history-model", "reason": "policy"}),
        ("prefill_router_decisions_total", {**g, "target": "generalist", "reason": "pinned"}),
        ("prefill_router_calls_total", {**g, "target": "math-model", "outcome": "success"}),
        ("prefill_router_calls_total", {**g, "target": "history-model", "outcome": "success"}),
        ("prefill_router_calls_total", {**g, "target": "generalist", "outcome": "success"}),
        ("prefill_router_decision_seconds_count", g),
        ("prefill_router_chosen_p_correct_count", {**g, "target": "math-model"}),
        ("prefill_router_chosen_p_correct_count", {**g, "target": "generalist"}),
        ("prefill_router_cost_usd_total", {**g, "target": "history-model"}),
        ("prefill_router_savings_usd", g))
    r = metered_router(bundle_dir, "metered")
    answers = [await r.acompletion(model="metered", messages=user(p)) for p in (MATH_PROMPT, MATH_PROMPT, HIST_PROMPT)]
    pinned = await r.acompletion(model="metered", messages=user(MATH_PROMPT),
                                 metadata={"prefill": {"pin_model": "generalist"}})
    await flush_logging()
    policy_math, policy_hist, pins, math_ok, hist_ok, gen_ok, timed, p_math, p_pinned, hist_cost, saved = grew()
    assert (policy_math, policy_hist, pins) == (2, 1, 1)
    assert (math_ok, hist_ok, gen_ok) == (2, 1, 1)
    assert timed == 4  # every decision's latency, the pinned one's too
    assert p_math == 2 and p_pinned == 0  # a pinned route has no prediction
    usage = answers[2].usage
    assert hist_cost == pytest.approx(PRICES["history-model"][0] * usage.prompt_tokens
                                      + PRICES["history-model"][1] * usage.completion_tokens)
    # savings against the dearest candidate (generalist): the three policy routes saved, the pinned one (to the
    # dearest) saved nothing
    dear = PRICES["generalist"]
    expected = sum((dear[0] - PRICES[t][0]) * a.usage.prompt_tokens
                   + (dear[1] - PRICES[t][1]) * a.usage.completion_tokens
                   for t, a in zip(("math-model", "math-model", "history-model"), answers))
    assert saved == pytest.approx(expected) and saved > 0
    assert pinned.choices[0].message.content == "answer from generalist"
    assert sample("prefill_router_decision_seconds_bucket", le="+Inf", **g) >= 4


async def test_a_retried_call_counts_a_failed_call_and_its_rerouted_retry(bundle_dir: Path) -> None:
    g = {"model_group": "metered-retry"}
    grew = counting(
        ("prefill_router_decisions_total", {**g, "target": "math-model", "reason": "policy"}),
        ("prefill_router_calls_total", {**g, "target": "math-model", "outcome": "failure"}),
        ("prefill_router_decisions_total", {**g, "target": "history-model", "reason": "retry"}),
        ("prefill_router_decisions_total", {**g, "target": "generalist", "reason": "retry"}),
        ("prefill_router_calls_total", {**g, "target": "history-model", "outcome": "success"}),
        ("prefill_router_calls_total", {**g, "target": "generalist", "outcome": "success"}),
        ("prefill_router_prediction_cache_hits_total", g))
    # a predictor of its own (a cache size no other test uses), so the first attempt is not a cache hit
    resp = await metered_router(bundle_dir, "metered-retry", failing_math=True, prediction_cache_size=7).acompletion(
        model="metered-retry", messages=user(MATH_PROMPT))
    await flush_logging()
    policy, failed, retry_hist, retry_gen, ok_hist, ok_gen, cache_hits = grew()
    assert (policy, failed) == (1, 1)
    assert (retry_hist + retry_gen, ok_hist + ok_gen) == (1, 1)
    assert cache_hits == 1  # the retry's decision reused the first attempt's prediction
    assert resp._hidden_params["prefill_routing"]["reason"] == "retry: math-model failed this request"


async def test_a_router_without_metrics_counts_nothing(bundle_dir: Path) -> None:
    g = {"model_group": "unmetered"}
    grew = counting(("prefill_router_decisions_total", {**g, "target": "math-model", "reason": "policy"}),
                    ("prefill_router_calls_total", {**g, "target": "math-model", "outcome": "success"}))
    r = PrefillRouter(model_list=model_list(group="unmetered"), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    await r.acompletion(model="unmetered", messages=user(MATH_PROMPT))
    await flush_logging()
    assert grew() == [0, 0]


def test_bundle_reloads_are_counted_loaded_and_failed(bundle_copy: Path) -> None:
    r = PrefillRouter(model_list=model_list(group="metered-reload"), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality", "metrics": True})
    labels = {"bundle": str(bundle_copy)}
    grew = counting(("prefill_router_bundle_reloads_total", {**labels, "outcome": "loaded"}),
                    ("prefill_router_bundle_reloads_total", {**labels, "outcome": "failed"}))

    def rename_generalist(to: str) -> Callable[[dict], None]:  # a deployment maps "generalist"
        def edit(fields: dict) -> None:
            for t in fields["targets"]:
                t["name"] = to if t["name"].startswith("generalist") else t["name"]
            always_cheapest(fields)
        return edit

    rewrite_bundle(bundle_copy, rename_generalist("generalist-v2"))  # cannot be served
    assert r.prefill_strategy.reload_if_changed() is False
    assert grew() == [0, 1]
    rewrite_bundle(bundle_copy, rename_generalist("generalist"))
    assert r.prefill_strategy.reload_if_changed() is True
    assert grew() == [1, 1]


async def test_decisions_are_counted_by_the_bundle_version_that_made_them_across_a_reload(bundle_copy: Path) -> None:
    from litellm_prefill_router import load_bundle

    r = PrefillRouter(model_list=model_list(group="metered-versions"), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality", "metrics": True})
    first = load_bundle(bundle_copy).version
    await r.acompletion(model="metered-versions", messages=user(HIST_PROMPT))
    await r.acompletion(model="metered-versions", messages=user(MATH_PROMPT))
    rewrite_bundle(bundle_copy, always_cheapest)
    assert r.prefill_strategy.reload_if_changed() is True
    second = load_bundle(bundle_copy).version
    await r.acompletion(model="metered-versions", messages=user(HIST_PROMPT))
    await flush_logging()
    g = {"model_group": "metered-versions"}
    assert sample("prefill_router_bundle_decisions_total", **g, bundle_version=first) == 2
    assert sample("prefill_router_bundle_decisions_total", **g, bundle_version=second) == 1


def test_metrics_without_prometheus_client_fail_at_construction_naming_the_extra(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm_prefill_router.metrics as metrics

    monkeypatch.setattr(metrics, "_METRICS", None)  # as in a process that has not registered them yet
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    with pytest.raises(ConfigurationError, match=r"litellm-prefill-router\[metrics\]"):
        metered_router(bundle_dir, "no-prometheus")


def test_a_row_the_metrics_cannot_count_is_reported_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from litellm_prefill_router.metrics import observe_call

    observe_call({"decision": {}, "outcome": {}})  # no target
    assert "could not count a call in the routing metrics" in caplog.text


async def test_a_shadow_call_counts_its_decision_under_the_would_be_target_and_its_call_under_the_served_one(
        bundle_dir: Path) -> None:
    g = {"model_group": "metered-shadow"}
    grew = counting(("prefill_router_decisions_total", {**g, "target": "math-model", "reason": "policy"}),
                    ("prefill_router_calls_total", {**g, "target": "generalist", "outcome": "success"}),
                    ("prefill_router_calls_total", {**g, "target": "math-model", "outcome": "success"}))
    r = metered_router(bundle_dir, "metered-shadow", shadow=True, shadow_target="generalist")
    resp = await r.acompletion(model="metered-shadow", messages=user(MATH_PROMPT))
    await flush_logging()
    assert resp.choices[0].message.content == "answer from generalist"
    assert grew() == [1, 1, 0]


def test_the_example_grafana_dashboard_queries_only_metrics_the_router_exports_and_shows_each_of_them() -> None:
    import dataclasses
    import json
    import re

    from litellm_prefill_router.metrics import router_metrics

    exported: dict[str, set[str]] = {}  # metric family -> the series names a query may use
    metrics = router_metrics()
    for f in dataclasses.fields(metrics):
        (family,) = getattr(metrics, f.name).describe()
        names = {"counter": {f"{family.name}_total"}, "gauge": {family.name},
                 "histogram": {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}}[family.type]
        exported[family.name] = names
    dashboard = json.loads((Path(__file__).parents[1] / "examples" / "grafana" / "prefill-router-dashboard.json")
                           .read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for q in queries for name in re.findall(r"prefill_router_[a-z_]+", q)}
    assert used <= set().union(*exported.values()), used - set().union(*exported.values())
    assert [family for family, names in exported.items() if not names & used] == []  # every metric has a panel


async def test_a_canary_rollouts_calls_and_cost_are_counted_by_arm(bundle_dir: Path) -> None:
    g = {"model_group": "metered-rollout"}
    grew = counting(("prefill_router_rollout_calls_total", {**g, "arm": "router", "outcome": "success"}),
                    ("prefill_router_rollout_calls_total", {**g, "arm": "control", "outcome": "success"}),
                    ("prefill_router_rollout_cost_usd_total", {**g, "arm": "router"}),
                    ("prefill_router_rollout_cost_usd_total", {**g, "arm": "control"}))
    r = metered_router(bundle_dir, "metered-rollout", rollout=0.5, shadow_target="generalist")
    arms = [(await r.acompletion(model="metered-rollout", messages=user(MATH_PROMPT), user=f"u{i}"))
            ._hidden_params["prefill_routing"]["arm"] for i in range(12)]
    await flush_logging()
    router_ok, control_ok, router_cost, control_cost = grew()
    assert (router_ok, control_ok) == (arms.count("router"), arms.count("control")) and router_ok and control_ok
    # the router's arm went to math-model (0.2 USD/Mtok), the control arm to generalist (0.9)
    assert 0 < router_cost / router_ok < control_cost / control_ok


async def test_prompts_unlike_the_training_data_are_counted_as_novel(bundle_dir: Path) -> None:
    g = {"model_group": "metered-novel"}
    r = metered_router(bundle_dir, "metered-novel")
    long_prompt = " ".join([MATH_PROMPT] * 4)  # four times as long as any training prompt
    before = sum(sample("prefill_router_novel_prompts_total", **g, target=t)
                 for t in ("math-model", "history-model", "generalist"))
    novelty = []
    for text in (MATH_PROMPT, long_prompt):
        resp = await r.acompletion(model="metered-novel", messages=user(text))
        novelty.append(resp._hidden_params["prefill_routing"]["novelty"])
    await flush_logging()
    after = sum(sample("prefill_router_novel_prompts_total", **g, target=t)
                for t in ("math-model", "history-model", "generalist"))
    assert novelty[0] <= 1.0 < novelty[1] and after - before == 1


async def test_decisions_are_counted_by_policy_so_a_dashboard_shows_autotunes_setting_as_it_changes(
        bundle_dir: Path) -> None:
    g = {"model_group": "metered-policy"}
    r = metered_router(bundle_dir, "metered-policy", autotune={"savings": 0.2, "min_calls": 20, "window": 20})
    tuner = r.prefill_strategy.autotuner
    for i in range(20):
        await r.acompletion(model="metered-policy", messages=user(f"{MATH_PROMPT} {'again ' * i}"))
    await flush_logging()  # the 20 calls counted before the counts are read
    tuner.wait()
    tuned = tuner.policy("metered-policy")
    assert tuned is not None
    grew = counting(("prefill_router_policy_decisions_total", {**g, "policy": "preset=max-quality"}),
                    ("prefill_router_policy_decisions_total", {**g, "policy": tuned.describe()}),
                    ("prefill_router_policy_decisions_total", {**g, "policy": "preset=min-cost"}))
    await r.acompletion(model="metered-policy", messages=user(HIST_PROMPT))
    await r.acompletion(model="metered-policy", messages=user(HIST_PROMPT),
                        metadata={"prefill": {"preset": "min-cost"}})
    await flush_logging()
    assert tuned.describe().endswith(" (autotuned)") and grew() == [0, 1, 1]


async def test_answer_lengths_and_cost_estimates_are_counted_beside_what_calls_cost(bundle_dir: Path) -> None:
    g = {"model_group": "metered-lengths", "target": "math-model"}
    grew = counting(("prefill_router_answer_tokens_count", g), ("prefill_router_answer_tokens_sum", g),
                    ("prefill_router_estimated_cost_usd_total", g), ("prefill_router_cost_usd_total", g))
    r = PrefillRouter(model_list=model_list(group="metered-lengths", **{"math-model": {"mock_response": "word " * 40}}),
                      routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", "metrics": True})
    resp = await r.acompletion(model="metered-lengths", messages=user(MATH_PROMPT))
    await flush_logging()
    n, tokens, estimated, actual = grew()
    d = resp._hidden_params["prefill_routing"]
    assert (n, tokens) == (1, 20)  # the mock answer's completion tokens
    assert estimated == pytest.approx(d["cost_usd"]["math-model"]) and actual == pytest.approx(resp._hidden_params[
        "response_cost"])
    assert estimated / actual > 5  # the bundle assumes 256-token answers


async def test_a_tier_classifiers_calls_are_counted_under_its_complexity_router(bundle_dir: Path) -> None:
    from litellm_prefill_router.tier_classifier import PrefillTierClassifier

    g = {"model_group": "tiered"}
    grew = counting(("prefill_router_decisions_total", {**g, "target": "math-model", "reason": "policy"}),
                    ("prefill_router_calls_total", {**g, "target": "math-model", "outcome": "success"}))
    classifier = PrefillTierClassifier(str(bundle_dir), {"SIMPLE": "history-model", "MEDIUM": "math-model"},
                                       preset="max-quality", metrics=True)
    import litellm
    tiers = [{"model_name": f"tier-{t}", "litellm_params": {"model": f"openai/tier-{t}", "api_key": "sk-test",
                                                             "mock_response": "ok"}} for t in ("SIMPLE", "MEDIUM")]
    r = litellm.Router(model_list=[*tiers, tier_router("tiered", classifier,
                                                       {t: f"tier-{t}" for t in ("SIMPLE", "MEDIUM")})])
    await r.acompletion(model="tiered", messages=user(MATH_PROMPT))
    await flush_logging()
    assert grew() == [1, 1]
