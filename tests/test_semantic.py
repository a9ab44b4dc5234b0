"""The semantic-router drop-in and the auto_router config migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import HIST_PROMPT, MATH_PROMPT, strategy_name
from litellm_prefill_router import ConfigurationError
from litellm_prefill_router.cli import main
from litellm_prefill_router.semantic import PrefillSemanticRouter, RouteChoice, migrate_auto_router_config


def test_called_with_text_it_returns_a_route_choice_like_semantic_router(bundle_dir: Path) -> None:
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality")
    choice = rl(MATH_PROMPT)
    assert isinstance(choice, RouteChoice) and choice.name == "math-model"
    assert 0.5 < choice.similarity_score <= 1.0 and choice.decision is not None
    assert rl.list_route_names() == ["generalist", "history-model", "math-model"]


async def test_async_call_and_declining_below_min_score(bundle_dir: Path) -> None:
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality")
    assert (await rl.acall(HIST_PROMPT)).name == "history-model"
    strict = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", min_score=1.0)  # no P(correct) reaches 1
    declined = strict(HIST_PROMPT)
    assert declined.name is None and declined.similarity_score is not None
    assert rl("").name is None  # no text: the router declines instead of guessing


async def test_the_drop_in_logs_each_decision_for_stats_feedback_and_replay(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "semantic-{pid}.jsonl"
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", decision_log=str(log))
    choices = [rl(HIST_PROMPT), await rl.acall(MATH_PROMPT), rl("")]
    assert [c.name for c in choices] == ["history-model", "math-model", None]  # "": declined, no text
    written = next(tmp_path.glob("semantic-*.jsonl"))
    lines = [json.loads(x) for x in written.read_text().splitlines()]
    assert [x["route_id"] for x in lines] == [c.id for c in choices] and all(c.id for c in choices)
    assert [x["decision"]["target"] for x in lines[:2]] == ["history-model", "math-model"]
    assert [x["decision"]["declined"] for x in lines] == [False, False, True]
    assert all(x["outcome"] is None for x in lines)  # the caller calls the model
    assert lines[0]["messages"] == [{"role": "user", "content": HIST_PROMPT}]

    assert main(["stats", "--log", str(written), "--json", str(tmp_path / "st.json")]) == 0
    st = json.loads((tmp_path / "st.json").read_text())
    assert (st["calls"], st["decided_only"], st["failures"]) == (3, 3, 0)
    assert set(st["targets"]) == {"history-model", "math-model", "(declined)"}
    assert "3 routed calls (3 decided only" in capsys.readouterr().out

    feedback = tmp_path / "feedback.jsonl"  # the history answer was wrong: feedback names the choice's id
    feedback.write_text(json.dumps({"id": choices[0].id, "thumbs": "down"}) + "\n")
    rows = tmp_path / "rows.jsonl"
    assert main(["feedback", "--log", str(written), "--feedback", str(feedback), "--out", str(rows)]) == 0
    [row] = [json.loads(x) for x in rows.read_text().splitlines()]
    assert row["scores"] == {"history-model": 0.0} and row["prompt"] == lines[0]["messages"]

    assert main(["replay", "--log", str(written), "--bundle", str(bundle_dir), "--json", str(tmp_path / "r.json"),
                 "--quiet"]) == 0
    replayed = json.loads((tmp_path / "r.json").read_text())
    assert (replayed["calls"], replayed["kept"]) == (2, 2)
    assert replayed["skipped"] == {"no text to route on (any bundle falls back)": 1}

    # a log that cannot be written never fails the call
    broken = PrefillSemanticRouter(str(bundle_dir), preset="max-quality",
                                   decision_log=str(tmp_path / "blocked" / "d.jsonl"))
    (tmp_path / "blocked").write_text("a file, not a directory")  # after construction, which checks the path
    assert broken(HIST_PROMPT).name == "history-model"
    assert "could not write decision log" in caplog.text
    with pytest.raises(ConfigurationError, match="blocked is a file, not a directory"):
        PrefillSemanticRouter(str(bundle_dir), decision_log=str(tmp_path / "blocked" / "d.jsonl"))
    with pytest.raises(ConfigurationError, match="unknown placeholders"):
        PrefillSemanticRouter(str(bundle_dir), decision_log=str(tmp_path / "d-{day}.jsonl"))


def test_routes_restrict_the_choice_and_unknown_routes_fail(bundle_dir: Path) -> None:
    rl = PrefillSemanticRouter(str(bundle_dir), routes=["history-model", "generalist"], preset="max-quality")
    assert rl(MATH_PROMPT).name in ("history-model", "generalist")
    with pytest.raises(ConfigurationError, match="not targets"):
        PrefillSemanticRouter(str(bundle_dir), routes=["nope"])


async def test_semantic_routers_call_arguments_work_route_filter_narrows_the_routes(bundle_dir: Path) -> None:
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality")
    assert rl(MATH_PROMPT).name == "math-model"
    narrowed = rl(MATH_PROMPT, route_filter=["history-model", "generalist"])
    assert narrowed.name in ("history-model", "generalist") and narrowed.decision is not None
    assert set(narrowed.decision.candidates) == {"history-model", "generalist"}
    assert (await rl.acall(MATH_PROMPT, route_filter=["generalist"])).name == "generalist"
    assert rl(text=MATH_PROMPT, simulate_static=True).name == "math-model"  # static routes: the same choice
    with pytest.raises(ConfigurationError, match=r"route_filter names \['nope'\], which are not routes"):
        rl(MATH_PROMPT, route_filter=["nope"])
    with pytest.raises(ConfigurationError, match=r"route_filter \[\] leaves no route to choose from"):
        rl(MATH_PROMPT, route_filter=[])  # as semantic-router: no route matches an empty filter
    with pytest.raises(ConfigurationError, match="pass text=... instead of vector=..."):
        await rl.acall(vector=[0.1, 0.2])


async def test_semantic_router_1x_calls_work_limit_ranks_the_routes_and_threshold_sets_the_bar(
        bundle_dir: Path, tmp_path: Path) -> None:
    """semantic-router 1.x (IndexedRouter): ``router(query, limit=1, threshold=None)``, RouteChoice.confidence /
    .calibrated, ``confidence_threshold``; the ranked routes are the policy's order on one prediction."""
    log = tmp_path / "semantic.jsonl"
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", decision_log=str(log))
    one = rl(query=MATH_PROMPT)
    assert (one.name, one.confidence, one.calibrated) == ("math-model", one.similarity_score, True)
    ranked = rl(MATH_PROMPT, limit=None)
    assert [c.name for c in ranked][0] == "math-model" and sorted(c.name for c in ranked) == rl.routes
    p = one.decision.p_correct
    # max-quality: each next route is the most likely of the rest
    assert [c.name for c in ranked] == sorted(rl.routes, key=lambda t: -p[t])
    assert [c.confidence for c in ranked] == [p[c.name] for c in ranked]
    assert all(c.id == ranked[0].id and c.decision is ranked[0].decision for c in ranked)  # one call, one decision
    assert [c.name for c in await rl.acall(MATH_PROMPT, limit=2)] == [c.name for c in ranked[:2]]
    assert [c.name for c in rl(MATH_PROMPT, 2)] == [c.name for c in ranked[:2]]  # 1.x positional: limit
    # a per-call threshold drops the routes under it (a lone pick under it: declined, as semantic-router does)
    bar = (p[ranked[0].name] + p[ranked[1].name]) / 2
    assert [c.name for c in rl(MATH_PROMPT, limit=None, threshold=bar)] == [ranked[0].name]
    assert rl(MATH_PROMPT, None, 1.0).name is None  # 1.x positional: limit, threshold (no route is that sure)
    declined = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", confidence_threshold=1.0)(MATH_PROMPT)
    assert (declined.name, declined.confidence, declined.calibrated) == (None, None, True)
    assert rl("", limit=3) == []  # nothing to route on: declined, no ranked routes
    assert len(log.read_text().splitlines()) == 7  # one line per call, whatever the limit
    with pytest.raises(ConfigurationError, match="limit is how many ranked routes to return"):
        rl(MATH_PROMPT, limit=0)
    with pytest.raises(ConfigurationError, match="threshold is a confidence"):
        rl(MATH_PROMPT, threshold=1.5)
    with pytest.raises(ConfigurationError, match="give the text to route once"):
        rl(MATH_PROMPT, query=HIST_PROMPT)
    with pytest.raises(ConfigurationError, match="min_score .* and confidence_threshold .* are one setting"):
        PrefillSemanticRouter(str(bundle_dir), min_score=0.2, confidence_threshold=0.3)


def _auto_router_config(tmp_path: Path) -> Path:
    (tmp_path / "router.json").write_text(json.dumps({"routes": [
        {"name": "math-model", "utterances": ["solve the integral"], "score_threshold": 0.5},
        {"name": "histories", "utterances": ["who was the king"], "score_threshold": 0.5}]}))
    cfg = {"model_list": [
        {"model_name": "math-model", "litellm_params": {"model": "openai/math-model", "mock_response": "m"}},
        {"model_name": "histories", "litellm_params": {"model": "openai/hist-v2", "mock_response": "h"}},
        {"model_name": "generalist", "litellm_params": {"model": "openai/generalist", "mock_response": "g"}},
        {"model_name": "smart", "litellm_params": {"model": "auto_router/smart", "auto_router_config_path":
                                                   "router.json", "auto_router_default_model": "generalist",
                                                   "auto_router_embedding_model": "text-embedding-3-small"}},
        {"model_name": "other", "litellm_params": {"model": "openai/other-a", "mock_response": "o"}},
        {"model_name": "other", "litellm_params": {"model": "openai/other-b", "mock_response": "o"}}],
        "router_settings": {"routing_strategy": "latency-based-routing", "routing_strategy_args": {"ttl": 60}}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_migration_rewrites_an_auto_router_config_for_prefill(bundle_dir: Path, tmp_path: Path) -> None:
    src = _auto_router_config(tmp_path)
    new, notes = migrate_auto_router_config(yaml.safe_load(src.read_text()), str(bundle_dir),
                                            target_map={"histories": "history-model"}, config_dir=tmp_path)
    smart = [d for d in new["model_list"] if d["model_name"] == "smart"]
    assert {d["model_info"]["prefill_target"] for d in smart} == {"math-model", "history-model", "generalist"}
    assert not any(d["litellm_params"]["model"].startswith("auto_router/") for d in new["model_list"])
    # the router's own strategy keeps routing every other group (before: the whole router switched to prefill)
    assert new["router_settings"]["routing_strategy"] == "latency-based-routing"
    assert new["router_settings"]["routing_strategy_args"] == {"ttl": 60}
    assert new["router_settings"]["routing_groups"] == [
        {"group_name": "prefill-routed", "models": ["smart"], "routing_strategy": "prefill",
         "routing_strategy_args": {"bundle": str(bundle_dir)}}]
    assert "litellm_prefill_router.proxy_hook.proxy_handler_instance" in new["litellm_settings"]["callbacks"]
    assert any("semantic auto_router replaced" in n for n in notes)


def test_migrated_config_routes_through_a_litellm_router(bundle_dir: Path, tmp_path: Path) -> None:
    import litellm

    from litellm_prefill_router import install

    src = _auto_router_config(tmp_path)
    out = tmp_path / "new.yaml"
    assert main(["migrate", "--config", str(src), "--bundle", str(bundle_dir), "--out", str(out),
                 "--map", "histories=history-model"]) == 0
    cfg = yaml.safe_load(out.read_text())
    for d in cfg["model_list"]:
        d["litellm_params"]["api_key"] = "sk-test"
        d.setdefault("model_info", {}).update(input_cost_per_token=1e-7, output_cost_per_token=1e-7)
    install()
    settings = cfg["router_settings"]
    settings["routing_groups"][0]["routing_strategy_args"]["preset"] = "max-quality"
    router = litellm.Router(model_list=cfg["model_list"], **settings)
    resp = router.completion(model="smart", messages=[{"role": "user", "content": HIST_PROMPT}])
    assert resp.choices[0].message.content == "h"
    assert resp._hidden_params["prefill_routing"]["target"] == "history-model"
    other = router.completion(model="other", messages=[{"role": "user", "content": HIST_PROMPT}])
    assert other.choices[0].message.content == "o" and "prefill_routing" not in other._hidden_params
    assert strategy_name(router) == "latency-based-routing"


def test_migrate_refuses_a_config_it_cannot_migrate_and_writes_nothing(bundle_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src, out = _auto_router_config(tmp_path), tmp_path / "new.yaml"
    plain = tmp_path / "plain.yaml"  # no auto_router: before, a routing group routing [] was written
    plain.write_text(yaml.safe_dump({"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a"}}]}))
    for args, said in (
            (["--config", str(plain)], "no auto_router deployment to migrate"),
            (["--config", str(tmp_path / "missing.yaml")], "cannot read the proxy config"),  # a traceback before
            (["--config", str(src), "--map", "histories"], "--map takes model_group=target pairs, got ['histories']"),
            (["--config", str(src), "--map", "histories=history"], "--map names ['history'], which are not targets")):
        assert main(["migrate", *args, "--bundle", str(bundle_dir), "--out", str(out)]) == 2, args
        assert said in capsys.readouterr().err, args
        assert not out.exists()


def test_migration_takes_the_auto_router_out_of_a_routing_group_that_listed_it(bundle_dir: Path,
                                                                               tmp_path: Path) -> None:
    old = yaml.safe_load(_auto_router_config(tmp_path).read_text())
    old["router_settings"]["routing_groups"] = [
        {"group_name": "prefill-routed", "models": ["smart", "other"], "routing_strategy": "least-busy"}]
    new, notes = migrate_auto_router_config(old, str(bundle_dir), target_map={"histories": "history-model"},
                                            config_dir=tmp_path)
    assert new["router_settings"]["routing_groups"] == [
        {"group_name": "prefill-routed", "models": ["other"], "routing_strategy": "least-busy"},
        {"group_name": "prefill-routed-2", "models": ["smart"], "routing_strategy": "prefill",
         "routing_strategy_args": {"bundle": str(bundle_dir)}}]
    assert any("no longer lists ['smart']" in n for n in notes)


def test_a_bundle_rewritten_in_place_is_reloaded_by_the_semantic_drop_in(bundle_copy: Path) -> None:
    import time

    from conftest import always_cheapest, rewrite_bundle

    rl = PrefillSemanticRouter(bundle=str(bundle_copy), preset="max-quality", reload_interval_s=0.05)
    assert rl(HIST_PROMPT).name == "history-model"
    rewrite_bundle(bundle_copy, always_cheapest)
    deadline, name = time.time() + 20, None
    while time.time() < deadline and name != "math-model":
        name = rl(HIST_PROMPT).name
        time.sleep(0.05)
    assert name == "math-model"


def test_a_prompt_seen_again_is_routed_from_the_prediction_cache_unless_the_cache_is_off(bundle_dir: Path) -> None:
    prompt = f"{HIST_PROMPT} - asked twice by the drop-in's cache test"
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality")
    first, again = rl(prompt), rl(prompt)
    assert first.name == again.name == "history-model"
    assert (first.decision.cached, again.decision.cached) == (False, True)
    off = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", prediction_cache_size=0)
    assert [off(prompt).decision.cached for _ in range(2)] == [False, False]
    for bad, said in ((-1, "greater than or equal to 0"), (2.5, "should be a valid integer"),
                      (True, "true/false is not a value")):
        with pytest.raises(ConfigurationError, match=f"settings: prediction_cache_size: .*{said}"):
            PrefillSemanticRouter(str(bundle_dir), prediction_cache_size=bad)


def test_prices_that_are_not_an_input_and_output_price_are_configuration_errors(bundle_dir: Path) -> None:
    for bad in ((1e-7,), (-1e-7, 1e-7), "cheap"):
        with pytest.raises(ConfigurationError, match=r"prices\['math-model'\] must be \(input, output\) USD per token"):
            PrefillSemanticRouter(str(bundle_dir), prices={"math-model": bad})  # type: ignore[dict-item]


def test_a_late_prediction_is_declined_at_the_decision_timeout_like_any_fallback(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", prediction_cache_size=5,
                               decision_timeout_s=0.2)  # a predictor of its own
    predictor = rl.decider.predictor
    real = predictor.probabilities_for_ids
    monkeypatch.setattr(predictor, "probabilities_for_ids", lambda ids: time.sleep(1.0) or real(ids))
    choice = rl(f"{MATH_PROMPT} - the drop-in's timeout test")  # no other test's cached prediction answers it
    assert choice.decision is not None and choice.decision.reason.startswith("fallback: routing timed out")
    assert choice.name is None  # declined, as a semantic router declines: the caller's default route serves it
    assert choice.decision.target == rl.decider.fallback_target
    with pytest.raises(ConfigurationError, match="decision_timeout_s: Input should be greater than 0"):
        PrefillSemanticRouter(str(bundle_dir), decision_timeout_s=0)


def test_the_drop_ins_limits_narrow_its_routes_and_a_call_none_meets_is_declined(bundle_dir: Path) -> None:
    from litellm_prefill_router.config import RequestOverrides

    free = PrefillSemanticRouter(str(bundle_dir), preset="max-quality")(HIST_PROMPT)
    assert free.name == "history-model" and free.decision is not None
    cost = free.decision.cost_usd
    ceiling = (cost["math-model"] + cost["history-model"]) / 2
    capped = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", max_cost_usd=ceiling)
    assert capped(HIST_PROMPT).name == "math-model"
    broke = capped(HIST_PROMPT, overrides=RequestOverrides(max_cost_usd=cost["math-model"] / 10))
    assert broke.name is None and broke.decision is not None
    assert broke.decision.reason.startswith("over budget: ")  # served by the caller's default, as a declined call
    with pytest.raises(ConfigurationError, match="min_p_correct: Input should be less than or equal to 1"):
        PrefillSemanticRouter(str(bundle_dir), min_p_correct=2.0)


async def test_shadow_mode_returns_the_route_serving_today_and_logs_the_routers_choice_for_stats(
        bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.feedback import feedback_rows
    from litellm_prefill_router.log_stats import summarize_log

    log = tmp_path / "semantic.jsonl"
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", decision_log=str(log), shadow=True,
                               shadow_route="generalist")
    choices = [rl(MATH_PROMPT), await rl.acall(HIST_PROMPT)]
    assert [(c.name, c.shadow, c.decision.target) for c in choices if c.decision] == \
        [("generalist", True, "math-model"), ("generalist", True, "history-model")]
    assert choices[0].similarity_score == choices[0].decision.p_correct["generalist"]
    stats = summarize_log(log)
    assert stats["shadow"]["served"] == {"generalist": 2} and stats["decided_only"] == 2
    assert stats["shadow"]["expected_accuracy"]["routed"] > stats["shadow"]["expected_accuracy"]["served"]
    # feedback on a shadow call labels the route that served it, not the router's choice
    rows, _ = feedback_rows(log, {choices[0].id: 1.0})
    assert [r["scores"] for r in rows] == [{"generalist": 1.0}]
    # without a shadow route the caller's own default serves: name None, as a declined call
    default = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", shadow=True)(MATH_PROMPT)
    assert (default.name, default.shadow, default.similarity_score) == (None, True, None)


def test_a_rollout_returns_the_routers_choice_to_its_share_of_users_and_keeps_each_user_in_one_arm(
        bundle_dir: Path) -> None:
    rl = PrefillSemanticRouter(str(bundle_dir), preset="max-quality", rollout=0.5, shadow_route="generalist")
    arms: dict[str, set[str | None]] = {}
    for i in range(24):
        choice = rl(MATH_PROMPT, user=f"user-{i % 8}")
        arms.setdefault(f"user-{i % 8}", set()).add(choice.arm)
        assert choice.name == ("generalist" if choice.arm == "control" else "math-model")
        assert choice.shadow is (choice.arm == "control")
    assert all(len(a) == 1 for a in arms.values()) and {a for s in arms.values() for a in s} == {"router", "control"}


def test_shadow_and_rollout_settings_that_cannot_apply_are_configuration_errors_of_the_drop_in(
        bundle_dir: Path) -> None:
    for bad in ({"rollout": -0.1}, {"shadow": True, "rollout": 0.5}, {"shadow_route": "generalist"},
                {"shadow": True, "shadow_route": "no-such-route"}):
        with pytest.raises(ConfigurationError):
            PrefillSemanticRouter(str(bundle_dir), **bad)  # type: ignore[arg-type]
