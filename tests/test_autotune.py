"""``autotune``: a router that tunes its own policy to a goal on the calls it decides, as it serves - the same setting
`prefill-router tune` picks on its decision log, used for the calls that follow."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from conftest import HIST_PROMPT, MATH_PROMPT, model_list
from langchain_integration import PrefillRouterRunnable
from litellm_prefill_router import ConfigurationError, PrefillRouter, flush_logging
from litellm_prefill_router.autotune import Autotuner
from litellm_prefill_router.log_stats import summarize
from litellm_prefill_router.policy import RoutingDecision, RoutingPolicy
from litellm_prefill_router.records import DECISION_KEY, decision_headers
from litellm_prefill_router.router import prefill_strategies
from litellm_prefill_router.tuning import tune

WORDS = "the of and integral king war equation empire derivative dynasty sum river".split()


def prompts(n: int) -> list[str]:
    """``n`` different maths and history prompts (P(correct) and costs vary from one to the next)."""
    return [(MATH_PROMPT if i % 2 else HIST_PROMPT) + " " + " ".join(WORDS[(i * 7 + j) % 12] for j in range(i % 9))
            for i in range(n)]


def serve(bundle_dir: Path, log: Path, texts: list[str], autotune: dict | None, metadata: dict | None = None,
          wait_after: int | None = None, wait_each: bool = False) -> tuple[list[dict], PrefillRouter]:
    """Send ``texts`` through a PrefillRouter (mock deployments) one after the other; the decisions, in order. With
    ``wait_after`` (or ``wait_each``), the autotune started by that call (by any call) is waited for before the next
    call."""
    args = {"bundle": str(bundle_dir), "preset": "max-quality", "decision_log": str(log)}
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={**args, **({"autotune": autotune} if autotune else {})})
    tuner = prefill_strategies(router)["router"].autotuner

    async def run() -> list[dict]:
        out = []
        for i, text in enumerate(texts, 1):
            resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": text}],
                                            metadata=dict(metadata or {}))
            out.append(resp._hidden_params["prefill_routing"])
            if (i == wait_after or wait_each) and tuner is not None:
                tuner.wait()
        await flush_logging()
        return out

    return asyncio.run(run()), router


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_router_tunes_its_policy_on_its_own_calls_and_routes_the_next_calls_by_the_setting_tune_picks(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.cli import main

    texts = prompts(30)
    # what the 20 first calls cost at every setting: a budget between the cheapest and the dearest setting
    serve(bundle_dir, tmp_path / "plain.jsonl", texts[:20], None)
    front = tune(lines(tmp_path / "plain.jsonl"), savings=0.0)["frontier"]
    assert len(front) > 1, "the test prompts should leave settings to choose between"
    budget = (front[0]["cost_per_1k_usd"] + front[-1]["cost_per_1k_usd"]) / 2
    decisions, router = serve(bundle_dir, tmp_path / "auto.jsonl", texts,
                              {"budget_usd_per_1k": budget, "min_calls": 20, "every": 50, "window": 20},
                              wait_after=20)
    logged = lines(tmp_path / "auto.jsonl")
    assert len(logged) == 30
    expected = tune(logged[:20], budget_usd_per_1k=budget)["chosen"]
    assert expected["cost_per_1k_usd"] < front[-1]["cost_per_1k_usd"]  # cheaper than max-quality on these calls
    # the first 20 calls by the configured preset, the next ones by the setting tune picks on those 20
    assert all(d["policy"] == {"kind": "tolerance", "value": 0.0, "preset": "max-quality"} for d in decisions[:20])
    tuned = {"kind": expected["kind"], "value": expected["value"], "preset": None, "autotuned": True}
    assert all(d["policy"] == tuned for d in decisions[20:])
    assert [rec["decision"]["policy"] for rec in logged[20:]] == [tuned] * 10
    status = prefill_strategies(router)["router"].autotuner.status()["auto"]
    assert status["goal_met"] and status["calls"] == 20
    assert status["cost_per_1k_usd"] == pytest.approx(expected["cost_per_1k_usd"], rel=1e-6)
    # each call routed by that setting goes where that setting sends it
    policy = RoutingPolicy(expected["kind"], expected["value"])
    for d in decisions[20:]:
        cands = list(d["candidates"])
        assert d["target"] == cands[policy.choose([d["p_correct"][t] for t in cands],
                                                  [d["cost_usd"][t] for t in cands])]
    # the proxy header and `stats` say the setting was autotuned
    headers = decision_headers({"metadata": {DECISION_KEY: decisions[25]}})
    assert headers is not None
    assert headers["x-prefill-policy"] == f"{expected['kind']}={expected['value']:g} (autotuned)"
    assert summarize(logged)["policies"] == {"preset=max-quality": 20, headers["x-prefill-policy"]: 10}
    runs = summarize(logged)["autotune"]  # `stats` lists the settings in logged order
    assert runs == {"auto": [{"policy": headers["x-prefill-policy"], "first_ts": logged[20]["ts"], "calls": 10}]}
    (tmp_path / "cli.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    assert main(["stats", "--log", str(tmp_path / "cli.jsonl")]) == 0
    assert f"autotune in 'auto', in logged order: {expected['kind']}={expected['value']:g} from " in \
        capsys.readouterr().out


def test_requests_that_set_their_own_policy_keep_it_and_are_not_tuned_on(bundle_dir: Path, tmp_path: Path) -> None:
    decisions, router = serve(bundle_dir, tmp_path / "d.jsonl", prompts(25),
                              {"savings": 0.5, "min_calls": 20, "every": 5, "window": 50},
                              metadata={"prefill": {"preset": "min-cost"}})
    tuner = prefill_strategies(router)["router"].autotuner
    tuner.wait()
    assert tuner.status() == {} and tuner.policy("auto") is None
    assert all(d["policy"]["preset"] == "min-cost" and "autotuned" not in d["policy"] for d in decisions)


def test_a_goal_no_setting_meets_routes_by_the_nearest_setting_and_warns(
        bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        decisions, router = serve(bundle_dir, tmp_path / "d.jsonl", prompts(22),
                                  {"budget_usd_per_1k": 1e-9, "min_calls": 20, "window": 20}, wait_after=20)
    cheapest = tune(lines(tmp_path / "d.jsonl")[:20], savings=0.0)["frontier"][0]
    status = prefill_strategies(router)["router"].autotuner.status()["auto"]
    assert not status["goal_met"]
    assert status["cost_per_1k_usd"] == pytest.approx(cheapest["cost_per_1k_usd"], rel=1e-6)
    assert decisions[-1]["policy"]["autotuned"] and decisions[-1]["policy"]["kind"] == cheapest["kind"]
    assert ("autotune: no setting (tolerance, lambda or value_usd) meets cost <= 1e-09 USD per 1k requests on the "
            "last 20 calls") in caplog.text


def decision(version: str, p: float, group: str = "auto") -> RoutingDecision:
    return RoutingDecision(target="cheap", reason="policy", policy=RoutingPolicy(),
                           p_correct={"cheap": p, "dear": min(1.0, p + 0.2)}, cost_usd={"cheap": 1e-5, "dear": 1e-4},
                           candidates=("cheap", "dear"), model_group=group, bundle_version=version)


def test_each_model_group_is_tuned_apart_and_a_reloaded_bundle_starts_a_new_window_keeping_the_last_setting() -> None:
    tuner = Autotuner({"min_expected_accuracy": 0.55, "min_calls": 20, "every": 10, "window": 40})
    for i in range(20):
        tuner.observe(decision("v1", 0.3 + i / 100))
    tuner.wait()
    first = tuner.policy("auto")
    assert first is not None and first.autotuned and tuner.policy("other") is None
    assert tuner.status()["auto"]["goal_met"]
    for i in range(19):  # another bundle version: the window starts again and is not full enough to tune
        tuner.observe(decision("v2", 0.9))
    tuner.wait()
    assert tuner.policy("auto") == first and tuner.status()["auto"]["calls"] == 20
    tuner.observe(decision("v2", 0.9))  # 20 calls of the new version: tuned on them alone
    tuner.wait()
    assert tuner.status()["auto"]["calls"] == 20 and tuner.status()["auto"]["expected_accuracy"] == pytest.approx(0.9)
    for reason in ("pinned", "fallback: routing timed out"):  # no policy chose these: never tuned on
        tuner.observe(RoutingDecision(target="dear", reason=reason, policy=RoutingPolicy(), model_group="x"))
    assert "x" not in tuner.status()


@pytest.mark.parametrize("autotune, error", [
    ({"savings": 0.5, "budget_usd_per_1k": 1.0}, "autotune needs exactly one goal"),
    ({}, "autotune needs exactly one goal"),
    ({"savings": 1.0}, "savings"),
    ({"savings": 0.5, "min_calls": 500, "window": 100}, r"min_calls \(500\) is more than window \(100\) holds"),
    ({"savings": 0.5, "every": 0}, "every"),
])
def test_autotune_settings_are_checked_at_construction(bundle_dir: Path, autotune: dict, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "autotune": autotune})


def test_a_langchain_runnable_tunes_its_policy_on_its_calls_too(bundle_dir: Path) -> None:
    models = {t: FakeListChatModel(responses=["ok"] * 100) for t in ("math-model", "history-model", "generalist")}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   autotune={"savings": 0.3, "min_calls": 20, "window": 20})
    texts = prompts(22)
    first = [router.decide(t) for t in texts[:20]]
    assert router.autotuner is not None
    router.autotuner.wait()
    after = [router.decide(t) for t in texts[20:]]
    assert not any(d.policy.autotuned for d in first) and all(d.policy.autotuned for d in after)
    assert router.autotuner.status()[router.get_name()]["calls"] == 20



def test_a_failed_tune_keeps_the_setting_routing_now_and_the_next_calls_tune_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import litellm_prefill_router.autotune as autotune

    tuner = Autotuner({"savings": 0.5, "min_calls": 20, "every": 5, "window": 40})
    for i in range(20):
        tuner.observe(decision("v1", 0.5))
    tuner.wait()
    first = tuner.policy("auto")

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(autotune, "sweep", broken)
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        for i in range(5):
            tuner.observe(decision("v1", 0.5))
        tuner.wait()
    assert "autotune of model group 'auto' failed (ValueError: boom); routing stays tolerance=" in caplog.text
    assert tuner.policy("auto") == first
    monkeypatch.undo()
    for i in range(5):
        tuner.observe(decision("v1", 0.7))
    tuner.wait()
    assert tuner.status()["auto"]["expected_accuracy"] > 0.5  # tuned again, on the newer calls


def test_a_restarted_router_starts_from_the_setting_its_latest_logged_calls_give(
        bundle_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "decisions-{pid}.jsonl"
    settings = {"savings": 0.3, "min_calls": 20, "every": 100, "window": 20}
    serve(bundle_dir, log, prompts(25), settings)
    (written,) = tmp_path.glob("decisions-*.jsonl")
    logged = lines(written)
    expected = tune(logged[-20:], savings=0.3)["chosen"]  # the last 20 calls, as the restarted router reads them
    # lines the window leaves out: another bundle version's, a request's own policy, a pinned call
    other = [{**rec, "decision": {**rec["decision"], **change}} for rec, change in zip(logged[:3], (
        {"bundle_version": "0123456789ab"}, {"policy": {"kind": "tolerance", "value": 0.5, "preset": None}},
        {"reason": "pinned"}))]
    (tmp_path / "decisions-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    os.utime(tmp_path / "decisions-1.jsonl", ns=(0, 0))  # an older file: read after the newest one
    decisions, router = serve(bundle_dir, log, prompts(1), settings)
    status = prefill_strategies(router)["router"].autotuner.status()["auto"]
    assert status["calls"] == 20 and status["cost_per_1k_usd"] == pytest.approx(expected["cost_per_1k_usd"], rel=1e-6)
    assert decisions[0]["policy"] == {"kind": expected["kind"], "value": expected["value"], "preset": None,
                                      "autotuned": True}  # from the first call on
    # 26 logged calls of this version now: a window of 60 takes every one of them and none of the other lines
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill", routing_strategy_args={
        "bundle": str(bundle_dir), "preset": "max-quality", "decision_log": str(log),
        "autotune": {**settings, "window": 60}})
    assert prefill_strategies(router)["router"].autotuner.status()["auto"]["calls"] == 26
    # seed_from_log: false starts from the configured policy
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill", routing_strategy_args={
        "bundle": str(bundle_dir), "preset": "max-quality", "decision_log": str(log),
        "autotune": {**settings, "seed_from_log": False}})
    assert prefill_strategies(router)["router"].autotuner.status() == {}


def test_a_langchain_runnable_starts_from_its_logged_calls_too(bundle_dir: Path, tmp_path: Path) -> None:
    models = {t: FakeListChatModel(responses=["ok"] * 100) for t in ("math-model", "history-model", "generalist")}

    def runnable(cache_size: int) -> PrefillRouterRunnable:  # another cache size: not the first one's shared loader
        return PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                     decision_log=str(tmp_path / "lc.jsonl"), prediction_cache_size=cache_size,
                                     autotune={"savings": 0.3, "min_calls": 20, "window": 20, "every": 100})

    first = runnable(7)
    for text in prompts(20):
        first.invoke(text)
    assert len(lines(tmp_path / "lc.jsonl")) == 20
    restarted = runnable(8)
    assert restarted.autotuner is not None and restarted.autotuner is not first.autotuner
    assert restarted.autotuner.status()[restarted.get_name()]["calls"] == 20
    assert restarted.decide(MATH_PROMPT).policy.autotuned


def test_the_semantic_router_drop_in_tunes_its_policy_and_starts_from_its_log(bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router import PrefillSemanticRouter

    settings = {"savings": 0.3, "min_calls": 20, "window": 20, "every": 100}
    log = str(tmp_path / "semantic.jsonl")
    router = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", decision_log=log, autotune=settings)
    first = [router(t).decision for t in prompts(20)]
    assert router.autotuner is not None
    router.autotuner.wait()
    assert not any(d.policy.autotuned for d in first if d) and router(MATH_PROMPT).decision.policy.autotuned
    restarted = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", decision_log=log, autotune=settings)
    assert restarted.autotuner.status()["semantic router"]["calls"] == 20
    with pytest.raises(ConfigurationError, match="exactly one goal"):
        PrefillSemanticRouter(str(bundle_dir), autotune={"window": 100})


def test_logs_are_read_from_their_last_line_back_skipping_broken_lines_and_missing_files(tmp_path: Path) -> None:
    from litellm_prefill_router.jsonl import logs_of, records_from_end

    old, new = tmp_path / "d-1.jsonl", tmp_path / "d-2.jsonl"
    old.write_text("".join(json.dumps({"i": i, "pad": "x" * (i * 7 % 300)}) + "\n" for i in range(200)) + '{"cut sh')
    new.write_text('{"i": 1000}\n\n')
    os.utime(old, ns=(0, 0))
    files = logs_of(str(tmp_path / "d-{pid}.jsonl"))
    assert files == [new, old]  # the latest written first
    got = [r["i"] for r in records_from_end([tmp_path / "missing.jsonl", *files], block=97)]
    assert got == [1000, *range(199, -1, -1)]


def test_simulating_autotune_on_a_log_replays_what_the_live_router_did(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.autotune import simulate
    from litellm_prefill_router.cli import main

    texts = prompts(40)
    serve(bundle_dir, tmp_path / "plain.jsonl", texts[:20], None)
    front = tune(lines(tmp_path / "plain.jsonl"), savings=0.0)["frontier"]
    settings = {"budget_usd_per_1k": (front[0]["cost_per_1k_usd"] + front[-1]["cost_per_1k_usd"]) / 2,
                "min_calls": 20, "every": 10, "window": 20}
    decisions, _ = serve(bundle_dir, tmp_path / "live.jsonl", texts, settings, wait_each=True)
    logged = lines(tmp_path / "live.jsonl")
    sim = simulate(logged, settings)
    assert sim["calls"] == 40 and sim["first_tune_after_call"] == 20 and sim["changes"]
    for change in sim["changes"]:  # the live router routed the next call by the same setting
        policy = decisions[change["after_call"]]["policy"]
        assert change["setting"] == f"{policy['kind']}={policy['value']:g} (autotuned)"
    # and every call where the live router sent it: the simulated cost is the logged routes' cost
    live_cost = sum(d["cost_usd"][d["target"]] for d in decisions) / 40 * 1000
    assert sim["overall"]["cost_per_1k_usd"] == pytest.approx(live_cost, rel=1e-9)
    assert len(sim["by_tenth"]) == 10 and sim["after_first_tune"]["calls"] == 20
    (tmp_path / "cli.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    assert main(["tune", "--log", str(tmp_path / "cli.jsonl"), "--budget-usd-per-1k",
                 str(settings["budget_usd_per_1k"]), "--simulate-autotune", "--min-calls", "20", "--every", "10",
                 "--window", "20"]) == 0
    assert "over the 40 logged calls, in order: first tune after call 20" in capsys.readouterr().out
    # too few calls for a first tune, or settings autotune refuses: an error naming the fix (exit 2)
    assert main(["tune", "--log", str(tmp_path / "cli.jsonl"), "--savings", "0.5", "--simulate-autotune"]) == 2
    assert "needs min_calls=200 policy-decided calls before its first tune; the log has 40" in \
        capsys.readouterr().err
    assert main(["tune", "--log", str(tmp_path / "cli.jsonl"), "--savings", "0.5", "--simulate-autotune",
                 "--min-calls", "30", "--window", "20"]) == 2


def test_check_shows_the_setting_a_restarted_router_starts_from(bundle_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from litellm_prefill_router.cli import main

    log = tmp_path / "d.jsonl"
    settings = {"savings": 0.3, "min_calls": 20, "every": 100, "window": 20}
    serve(bundle_dir, log, prompts(20), settings)
    expected = tune(lines(log), savings=0.3)["chosen"]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"model_list": model_list(), "router_settings": {
        "routing_strategy": "prefill", "routing_strategy_args": {"bundle": str(bundle_dir), "preset": "max-quality",
                                                                 "decision_log": str(log), "autotune": settings}}}))
    assert main(["check", "--config", str(cfg), "--json", str(tmp_path / "check.json")]) == 0
    setting = f"{expected['kind']}={expected['value']:g} (autotuned)"
    assert f"starting from {setting} in 'auto' (decision log)" in capsys.readouterr().out
    (strategy,) = json.loads((tmp_path / "check.json").read_text())["strategies"]
    assert strategy["autotune_start"] == {"auto": setting} and strategy["answer_lengths_start"] is None
