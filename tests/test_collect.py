"""Collection, judges, feedback and continued training - the whole loop offline, through a real
litellm.Router with mock_response deployments that are right on some prompts and wrong on others."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import litellm
import numpy as np
import pytest
import yaml

import tiny
from conftest import HIST_PROMPT, MATH_PROMPT, needs_training_extra
from conftest import model_list as router_model_list
from litellm_prefill_router.cli import main
from litellm_prefill_router.collect import CollectError, CollectOptions, Collector, load_prompts, load_router_config
from litellm_prefill_router.collection_client import CollectionClient
from litellm_prefill_router.judges import JudgeError, parse_judge, parse_judge_score

ANSWERS = {"math-model": "Let me think. The result is 42.", "history-model": "It happened in 1066.",
           "generalist": "I am not sure."}


def _config(path: Path, answers: dict[str, str] | None = None, judge_reply: str | None = None) -> Path:
    model_list = []
    for t, text in (answers or ANSWERS).items():
        p = tiny.PRICES.get(t, (1e-7, 1e-7))
        model_list.append({"model_name": t, "litellm_params": {"model": f"openai/{t}", "api_key": "sk-test",
                                                               "mock_response": text},
                           "model_info": {"input_cost_per_token": p[0], "output_cost_per_token": p[1]}})
    if judge_reply is not None:
        model_list.append({"model_name": "judge", "litellm_params": {"model": "openai/judge", "api_key": "sk-test",
                                                                     "mock_response": judge_reply},
                           "model_info": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}})
    path.write_text(yaml.safe_dump({"model_list": model_list}))
    return path


def _prompts(path: Path, n: int = 120, seed: int = 3) -> Path:
    with path.open("w") as f:
        for r in tiny.synthetic_rows(n, seed):
            f.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "benchmark": r["benchmark"],
                                "reference": "42" if r["benchmark"] == "math" else "1066"}) + "\n")
    return path


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.with_name(out.name + ".calls.jsonl").read_text().splitlines()]


class CountingClient:
    """The real CollectionClient, counting what it sends (and optionally failing the first attempt)."""

    def __init__(self, inner: CollectionClient, fail_first_with: type[Exception] | None = None) -> None:
        self.inner, self.fail_first_with = inner, fail_first_with
        self.sent: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def complete(self, group: str, messages: list[dict], **params):
        key = (group, messages[0]["content"])
        first = key not in self.sent
        self.sent.append(key)
        if first and self.fail_first_with is not None:
            raise self.fail_first_with(message="slow down", llm_provider="openai", model=group)
        return await self.inner.complete(group, messages, **params)


# ----------------------------------------------------------------------------------------------- judges

@pytest.mark.parametrize("spec, answer, reference, expected", [
    ("exact", "  The Eiffel Tower! ", "eiffel tower", 1.0),
    ("exact", "Eiffel", "eiffel tower", 0.0),
    ("choice", "After thinking, the answer is (C).", "C", 1.0),
    ("choice", "Answer: b", "B", 1.0),
    ("choice", "B. Because the others are wrong", "(C)", 0.0),
    ("choice", "I cannot decide", "A", 0.0),
    ("numeric", "She pays 3 * 4 = 12 dollars.\n#### 1,200", "#### 1200", 1.0),
    ("numeric", "so the total is 17.", "The answer is 17", 1.0),
    ("numeric", "so the total is 18.", "#### 17", 0.0),
    ("numeric", "no digits here", "#### 17", 0.0),
    ("regex", "It is 1066, the Norman conquest", "1066", 1.0),
    ("regex:^yes\\b", "Yes, definitely", None, 1.0),
    ("python:judge_funcs:mentions_reference", "we got 42 in the end", "42", 1.0),
    ("python:judge_funcs.mentions_reference", "we got 41", "42", 0.0),
])
def test_judges_score_answers_against_the_reference(spec: str, answer: str, reference: str | None,
                                                    expected: float) -> None:
    assert asyncio.run(parse_judge(spec).score(answer, reference, "q")) == expected


def test_judges_without_a_reference_give_no_score_and_bad_specs_are_named() -> None:
    assert asyncio.run(parse_judge("numeric").score("42", None, "q")) is None
    for spec, msg in [("fuzzy", "unknown judge"), ("regex:([", "invalid regular expression"),
                      ("python:nowhere.mod:fn", "cannot import"), ("llm", "unknown judge")]:
        with pytest.raises(JudgeError, match=msg.replace("(", "\\(")):
            parse_judge(spec)
    with pytest.raises(JudgeError, match="max tokens must be >= 1"):
        parse_judge("llm:judge", max_tokens=0)
    with pytest.raises(JudgeError, match="must lie in"):
        asyncio.run(parse_judge("python:judge_funcs:out_of_range").score("a", "b", "q"))


@pytest.mark.parametrize("reply, score", [("SCORE: 0.8", 0.8), ("score = 7/10", 0.7), ("Score: 9", 0.9),
                                          ("I think it is right", None), ("SCORE: 1", 1.0)])
def test_llm_judge_replies_are_parsed_to_a_unit_score(reply: str, score: float | None) -> None:
    assert parse_judge_score(reply) == (pytest.approx(score) if score is not None else None)


# ----------------------------------------------------------------------------------------------- collect

def test_collect_labels_each_target_per_prompt_and_the_trained_router_prefers_the_right_one(
        tmp_path: Path, tiny_encoder: Path) -> None:
    cfg, prompts, out = _config(tmp_path / "router.yaml"), _prompts(tmp_path / "prompts.jsonl"), tmp_path / "data.jsonl"
    assert main(["collect", "--prompts", str(prompts), "--config", str(cfg), "--out", str(out), "--judge", "numeric",
                 "--quiet"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 120
    for r in rows:
        math = r["benchmark"] == "math"
        assert r["scores"] == {"math-model": float(math), "history-model": float(not math), "generalist": 0.0}
        assert set(r["costs"]) == set(ANSWERS) and all(c > 0 for c in r["costs"].values())
        assert all(n > 0 for n in r["output_tokens"].values())
    prices = json.loads(out.with_suffix(".models.json").read_text())
    assert prices["generalist"]["input_cost_per_token"] == tiny.PRICES["generalist"][0]

    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training.pipeline import TrainOptions, train
    from litellm_prefill_router.training.trunk import TrunkConfig

    bundle, _ = train(out, tmp_path / "bundle", TrainOptions(encoder=str(tiny_encoder), max_tokens=64, seeds=2,
                                                             keep=1, quantize=False, progress=False,
                                                             trunk=TrunkConfig(max_epochs=60)))
    pred = PrefillPredictor(bundle.directory)
    p = pred.predict(["please explain the integral of the equation", "tell me why the king went to war"])
    names = [t.name for t in pred.bundle.manifest.targets]
    assert names[int(np.argmax(p[0]))] == "math-model"
    assert names[int(np.argmax(p[1]))] == "history-model"


def test_collect_stops_before_the_cost_ceiling_and_a_rerun_sends_only_what_is_missing(tmp_path: Path) -> None:
    cfg, prompts, out = _config(tmp_path / "router.yaml"), _prompts(tmp_path / "p.jsonl", 30), tmp_path / "d.jsonl"
    model_list = load_router_config(cfg)
    recs = load_prompts(prompts)
    first = CountingClient(CollectionClient(model_list))
    ceiling = 5e-4
    s1 = asyncio.run(Collector(recs, first, out, CollectOptions(judge="numeric", max_cost=ceiling, concurrency=4,
                                                               max_tokens=64, progress=False)).run())
    assert s1.stopped_by_budget and s1.exit_code == 3 and 0 < s1.answered < 90
    log = _log(out)
    assert sum(r["cost"] for r in log) <= ceiling
    assert len([json.loads(x) for x in out.read_text().splitlines()]) > 0  # partial data is usable
    second = CountingClient(CollectionClient(model_list))
    s2 = asyncio.run(Collector(recs, second, out, CollectOptions(judge="numeric", concurrency=4, max_tokens=64,
                                                                progress=False)).run())
    assert s2.exit_code == 0 and s2.skipped_done == s1.answered and s2.answered == 90 - s1.answered
    assert not set(first.sent) & set(second.sent)  # nothing sent twice
    keys = [(r["id"], r["target"]) for r in _log(out) if r["ok"]]
    assert len(keys) == len(set(keys)) == 90


def test_a_group_priced_differently_per_deployment_reserves_the_dearest_and_records_the_cheapest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # one model behind two providers, 100x apart: whichever serves a call, the ceiling holds
    deps = [{"model_name": "math-model", "litellm_params": {"model": f"openai/math-{name}", "api_key": "sk-test",
                                                            "mock_response": ANSWERS["math-model"]},
             "model_info": {"input_cost_per_token": price, "output_cost_per_token": price}}
            for name, price in (("cheap", 1e-7), ("dear", 1e-5))]
    recs = load_prompts(_prompts(tmp_path / "p.jsonl", 10))
    out, ceiling = tmp_path / "d.jsonl", 5e-4
    with caplog.at_level("WARNING", logger="litellm_prefill_router.collect"):
        summary = asyncio.run(Collector(recs, CollectionClient(deps), out, CollectOptions(
            judge="numeric", max_cost=ceiling, concurrency=1, max_tokens=64, progress=False)).run())
    assert "different prices" in caplog.text
    # a call's worst case on the dear deployment (~75 tokens x 1e-5 = 7.5e-4) is over the ceiling, so nothing is
    # sent; reserved at the cheap price (7.5e-6) all ten would go and two dear-served calls would cross it
    assert summary.stopped_by_budget and summary.answered == 0 and summary.spent_usd == 0
    prices = json.loads(out.with_suffix(".models.json").read_text())
    assert prices["math-model"] == {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}  # what routing uses


def test_collect_retries_rate_limits_with_backoff_and_records_calls_that_keep_failing(tmp_path: Path) -> None:
    answers = {**ANSWERS, "flaky": "litellm.RateLimitError"}  # litellm raises a real RateLimitError
    cfg, out = _config(tmp_path / "router.yaml", answers), tmp_path / "d.jsonl"
    recs = load_prompts(_prompts(tmp_path / "p.jsonl", 6))
    client = CountingClient(CollectionClient(load_router_config(cfg)), fail_first_with=litellm.RateLimitError)
    s = asyncio.run(Collector(recs, client, out, CollectOptions(judge="numeric", max_retries=2, backoff_base_s=0.01,
                                                               backoff_max_s=0.05, progress=False)).run())
    log = _log(out)
    ok = [r for r in log if r["ok"]]
    bad = [r for r in log if not r["ok"]]
    assert len(ok) == 18 and all(r["attempts"] == 2 for r in ok)  # first attempt rate-limited, second answered
    assert len(bad) == 6 and all(r["attempts"] == 3 and "RateLimitError" in r["error"] for r in bad)
    assert s.failed == 6 and s.exit_code == 4
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all("flaky" not in r["scores"] for r in rows)


def test_collect_does_not_retry_a_bad_request(tmp_path: Path) -> None:
    cfg, out = _config(tmp_path / "router.yaml"), tmp_path / "d.jsonl"
    recs = load_prompts(_prompts(tmp_path / "p.jsonl", 2))
    client = CountingClient(CollectionClient(load_router_config(cfg)), fail_first_with=litellm.BadRequestError)
    s = asyncio.run(Collector(recs, client, out, CollectOptions(targets=["math-model"], progress=False)).run())
    assert s.failed == 2 and all(r["attempts"] == 1 for r in _log(out))


def test_collect_llm_judge_grades_through_a_litellm_deployment_and_is_not_a_target(tmp_path: Path) -> None:
    cfg, out = _config(tmp_path / "router.yaml", judge_reply="SCORE: 0.75"), tmp_path / "d.jsonl"
    rc = main(["collect", "--prompts", str(_prompts(tmp_path / "p.jsonl", 4)), "--config", str(cfg), "--out",
               str(out), "--judge", "llm:judge", "--quiet"])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["scores"] == {t: 0.75 for t in ANSWERS} for r in rows)
    # the judge's own calls are costed from their responses and count against the ceiling
    assert all(c["judge_cost"] > 0 for c in _log(out))


class FullBillingClient(CountingClient):
    """The real CollectionClient, but each call is billed as if the model used every token the request allows (the
    deployment's price x (prompt tokens + max_tokens)): the most a provider can charge for it. A call without
    max_tokens cannot be bounded and fails the test."""

    def __init__(self, inner: CollectionClient) -> None:
        super().__init__(inner)
        self.params: list[dict] = []

    async def complete(self, group: str, messages: list[dict], **params):
        self.params.append({"group": group, **params})
        res = await super().complete(group, messages, **params)
        price = self.inner.prices(group)[0]
        bill = (price.input_cost_per_token * self.inner.count_tokens(group, messages)
                + price.output_cost_per_token * params["max_tokens"])
        return dataclasses.replace(res, cost=bill)


def test_the_cost_ceiling_holds_with_an_llm_judge_and_a_long_rubric_and_its_replies_are_capped(
        tmp_path: Path) -> None:
    # the judge reads a ~1,600-token rubric at 1e-5/token (~0.02 USD a call). Before, the reservation counted the
    # rubric as 200 tokens and the judge's reply as 64 while its calls had no limit at all.
    model_list = load_router_config(_config(tmp_path / "router.yaml", judge_reply="SCORE: 1"))
    for dep in model_list:
        if dep["model_name"] == "judge":
            dep["model_info"] = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
    rubric = "Grade strictly. " * 400 + "Question: {prompt}\nReference: {reference}\nAnswer: {answer}\nSCORE?"
    client = FullBillingClient(CollectionClient(model_list))
    out, ceiling = tmp_path / "d.jsonl", 0.1
    s = asyncio.run(Collector(load_prompts(_prompts(tmp_path / "p.jsonl", 10)), client, out, CollectOptions(
        judge="llm:judge", rubric=rubric, max_cost=ceiling, concurrency=2, max_tokens=64, judge_max_tokens=32,
        progress=False)).run())
    spent = sum((r.get("cost") or 0.0) + (r.get("judge_cost") or 0.0) for r in _log(out))
    assert s.stopped_by_budget and s.answered >= 2 and spent == pytest.approx(s.spent_usd)
    assert spent <= ceiling
    judged = [kw for kw in client.params if kw["group"] == "judge"]
    assert judged and all(kw["max_tokens"] == 32 and kw["temperature"] == 0 for kw in judged)
    assert all(kw["max_tokens"] == 64 for kw in client.params if kw["group"] != "judge")


class FlakyJudgeClient(CountingClient):
    """The real CollectionClient whose judge model group fails: with ``error`` on every call while ``down``, else
    with a rate limit on the first attempt of each judge call (``flaky``)."""

    def __init__(self, inner: CollectionClient, error: type[Exception] | None = None, flaky: bool = False) -> None:
        super().__init__(inner)
        self.error, self.flaky, self.judge_attempts = error, flaky, 0

    async def complete(self, group: str, messages: list[dict], **params):
        if group == "judge":
            self.judge_attempts += 1
            if self.error is not None:
                raise self.error(message="judge unavailable", llm_provider="openai", model=group)
            if self.flaky and self.judge_attempts % 2 == 1:
                raise litellm.RateLimitError(message="slow down", llm_provider="openai", model=group)
        return await super().complete(group, messages, **params)


def test_an_llm_judge_is_retried_on_rate_limits_like_the_targets(tmp_path: Path) -> None:
    model_list = load_router_config(_config(tmp_path / "router.yaml", judge_reply="SCORE: 1"))
    client = FlakyJudgeClient(CollectionClient(model_list), flaky=True)
    out = tmp_path / "d.jsonl"
    s = asyncio.run(Collector(load_prompts(_prompts(tmp_path / "p.jsonl", 2)), client, out, CollectOptions(
        judge="llm:judge", backoff_base_s=0.01, backoff_max_s=0.02, progress=False)).run())
    assert s.exit_code == 0 and client.judge_attempts == 12  # 6 answers, each judged on the second attempt
    assert all(r["score"] == 1.0 and r["judge_error"] is None for r in _log(out))


def test_answers_whose_judge_failed_are_judged_on_the_next_run_without_asking_the_targets_again(
        tmp_path: Path) -> None:
    # before: an answer whose judge failed (a wrong key, an outage) counted as done, so no run labelled it again
    model_list = load_router_config(_config(tmp_path / "router.yaml", judge_reply="SCORE: 0.5"))
    recs, out = load_prompts(_prompts(tmp_path / "p.jsonl", 4)), tmp_path / "d.jsonl"
    down = FlakyJudgeClient(CollectionClient(model_list), error=litellm.AuthenticationError)
    first = asyncio.run(Collector(recs, down, out, CollectOptions(judge="llm:judge", progress=False)).run())
    assert first.answered == 12 and all(r["score"] is None and "AuthenticationError" in r["judge_error"]
                                        for r in _log(out))
    assert all(r["scores"] == {} for r in map(json.loads, out.read_text().splitlines()))
    up = FlakyJudgeClient(CollectionClient(model_list))
    second = asyncio.run(Collector(recs, up, out, CollectOptions(judge="llm:judge", progress=False)).run())
    assert second.rejudged == 12 and second.answered == 0 and second.exit_code == 0
    assert {group for group, _ in up.sent} == {"judge"}  # no target was asked again
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["scores"] == {t: 0.5 for t in ANSWERS} and set(r["costs"]) == set(ANSWERS) for r in rows)
    log = _log(out)
    judge_costs = sum(r["judge_cost"] for r in log if r.get("rejudged"))
    assert second.spent_usd == pytest.approx(first.spent_usd + judge_costs) and judge_costs > 0
    third = asyncio.run(Collector(recs, up, out, CollectOptions(judge="llm:judge", progress=False)).run())
    assert third.rejudged == 0 and third.skipped_done == 12 and third.spent_usd == pytest.approx(second.spent_usd)


def test_answers_collected_without_a_judge_are_scored_by_a_later_run_with_one_without_asking_the_targets_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # before: answers collected with no judge counted as done, so a later run with --judge never labelled them
    model_list = load_router_config(_config(tmp_path / "router.yaml"))
    recs, out = load_prompts(_prompts(tmp_path / "p.jsonl", 4)), tmp_path / "d.jsonl"
    with caplog.at_level("WARNING"):
        first = asyncio.run(Collector(recs, CountingClient(CollectionClient(model_list)), out,
                                      CollectOptions(progress=False)).run())
    assert first.answered == 12 and "4 prompts (e.g. " in caplog.text and "have no judge" in caplog.text
    assert all(r["scores"] == {} for r in map(json.loads, out.read_text().splitlines()))  # no label yet
    later = CountingClient(CollectionClient(model_list))
    second = asyncio.run(Collector(recs, later, out, CollectOptions(judge="regex", progress=False)).run())
    assert second.rejudged == 12 and second.answered == 0 and later.sent == []  # judged locally, nothing sent
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert all(set(r["scores"]) == set(ANSWERS) for r in rows.values())
    math = next(r for r in rows.values() if r["benchmark"] == "math")
    assert math["scores"] == {"math-model": 1.0, "history-model": 0.0, "generalist": 0.0}
    third = asyncio.run(Collector(recs, later, out, CollectOptions(judge="regex", progress=False)).run())
    assert third.rejudged == 0 and third.skipped_done == 12


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "hi"}', "id"), ('{"id": "a", "prompt": ""}', "prompt is empty"), ("not json", "valid"),
])
def test_bad_prompt_files_fail_with_the_line_number(tmp_path: Path, line: str, message: str) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "ok", "prompt": "fine"}\n' + line + "\n")
    with pytest.raises(CollectError, match=f"p.jsonl:2.*{message}"):
        load_prompts(p)


def test_collect_refuses_to_overwrite_a_dataset_it_did_not_write(tmp_path: Path) -> None:
    model_list = load_router_config(_config(tmp_path / "router.yaml"))
    recs, base = load_prompts(_prompts(tmp_path / "p.jsonl", 2)), tmp_path / "routing.jsonl"
    base.write_text('{"id": "mine", "prompt": "x", "scores": {"a": 1}}\n')  # e.g. the base dataset's own file
    with pytest.raises(CollectError, match="routing.jsonl exists and is not the output of an earlier collect"):
        Collector(recs, CollectionClient(model_list), base, CollectOptions(progress=False))
    assert base.read_text().startswith('{"id": "mine"')  # before: rewritten with the collected rows only
    new = tmp_path / "new.jsonl"
    for _ in range(2):  # its own output is rebuilt by a rerun, as before
        asyncio.run(Collector(recs, CollectionClient(model_list), new, CollectOptions(progress=False)).run())
    assert len(new.read_text().splitlines()) == 2


def test_collect_refuses_unknown_targets_and_a_ceiling_it_cannot_price(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "router.yaml")
    recs = load_prompts(_prompts(tmp_path / "p.jsonl", 2))
    client = CollectionClient(load_router_config(cfg))
    with pytest.raises(CollectError, match="not model groups"):
        Collector(recs, client, tmp_path / "d.jsonl", CollectOptions(targets=["gpt-9"]))
    raw = yaml.safe_load(cfg.read_text())
    raw["model_list"].append({"model_name": "mystery", "litellm_params": {"model": "openai/mystery-model-x",
                                                                          "api_key": "k", "mock_response": "x"}})
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(CollectError, match="mystery"):
        Collector(recs, CollectionClient(load_router_config(cfg)), tmp_path / "d.jsonl", CollectOptions(max_cost=1.0))


# ----------------------------------------------------------------------------------------------- feedback loop

async def _route(bundle_dir: Path, log: Path, prompts: list[str]) -> list:
    from conftest import model_list
    from litellm_prefill_router import PrefillRouter

    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log),
                                                  "preset": "max-quality"})
    from litellm_prefill_router import flush_logging

    out = [await router.acompletion(model="auto", messages=[{"role": "user", "content": p}]) for p in prompts]
    await flush_logging()  # success callbacks (the decision log) run after the response returns
    return out


async def test_feedback_on_routed_calls_retrains_the_bundle_to_avoid_a_target_users_dislike(
        bundle_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    needs_training_extra()
    from litellm_prefill_router.predictor import PrefillPredictor

    hist = [r["prompt"] for r in tiny.synthetic_rows(160, seed=11) if r["benchmark"] == "hist"]
    log = tmp_path / "decisions.jsonl"
    responses = await _route(bundle_dir, log, hist)
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(logged) == len(hist) and all(r["messages"] and r["response_id"] for r in logged)
    to_hist = [r for r in responses
               if r._hidden_params["prefill_routing"]["target"] == "history-model"]
    assert len(to_hist) >= 0.8 * len(hist)
    # users dislike every history-model answer: feedback by response id (what an app has at hand)
    fb = tmp_path / "feedback.jsonl"
    fb.write_text("".join(json.dumps({"id": r.id, "thumbs": "down"}) + "\n" for r in to_hist) +
                  json.dumps({"id": "never-logged", "score": 1.0}) + "\n")
    rows_path = tmp_path / "rows.jsonl"
    assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(rows_path)]) == 0
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
    assert len(rows) == len(to_hist) and all(r["scores"] == {"history-model": 0.0} for r in rows)

    out = tmp_path / "bundle-v2"
    assert main(["train", "--data", str(tiny_data), "--add", str(rows_path), "--continue-from", str(bundle_dir),
                 "--out", str(out), "--seeds", "2", "--keep", "1"]) == 0
    probe = [r["prompt"] for r in tiny.synthetic_rows(40, seed=99) if r["benchmark"] == "hist"]
    j = [t.name for t in PrefillPredictor(bundle_dir).bundle.manifest.targets].index("history-model")
    before = PrefillPredictor(bundle_dir).predict(probe)[:, j].mean()
    after = PrefillPredictor(out).predict(probe)[:, j].mean()
    assert after < before - 0.15, (before, after)
    new = json.loads((out / "manifest.json").read_text())
    old = json.loads((bundle_dir / "manifest.json").read_text())
    assert new["files"]["encoder.onnx"] == old["files"]["encoder.onnx"]  # the encoder is reused as is
    assert new["creator"]["continued_from"] == str(bundle_dir.resolve())


def test_feedback_on_a_shadow_call_labels_the_target_that_answered_not_the_would_be_route(tmp_path: Path) -> None:
    from litellm_prefill_router.feedback import feedback_rows

    def row(call_id: str, served: str | None) -> dict:
        return {"litellm_call_id": call_id, "messages": [{"role": "user", "content": "q"}],
                "decision": {"target": "math-model", "shadow": True, "served_target": served, "arm": "control"},
                "outcome": {"success": True, "response_cost": 0.002}}

    log, fb = tmp_path / "log.jsonl", tmp_path / "fb.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in (row("c1", "generalist"), row("c2", None))))
    fb.write_text(json.dumps({"id": "c1", "thumbs": "down"}) + "\n" + json.dumps({"id": "c2", "score": 1.0}) + "\n")
    rows, st = feedback_rows(log, fb)
    assert [(r["id"], r["scores"], r["costs"]) for r in rows] == [("c1", {"generalist": 0.0}, {"generalist": 0.002})]
    assert st.unmapped_answers == 1  # served by a deployment no target maps: no label to give


def test_feedback_that_names_no_logged_call_writes_nothing_and_says_which_ids_to_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, fb, out = tmp_path / "log.jsonl", tmp_path / "fb.jsonl", tmp_path / "rows.jsonl"
    log.write_text(json.dumps({"litellm_call_id": "c1", "decision": {"target": "generalist", "reason": "policy"},
                               "outcome": {"success": True}, "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    fb.write_text(json.dumps({"id": "chat-42", "thumbs": "up"}) + "\n")  # e.g. an id from another system
    assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(out)]) == 1
    assert ("no training rows, nothing written to" in (err := capsys.readouterr().err)
            and "no feedback id (e.g. chat-42) names a logged call: an id is a call's litellm_call_id" in err)
    assert not out.exists()  # no empty --add file and no retrain command to follow
    fb.write_text(json.dumps({"id": "c1", "thumbs": "up"}) + "\n")
    assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(out)]) == 0
    assert f"wrote 1 rows to {out}" in capsys.readouterr().out


def test_feedback_refuses_to_replace_a_dataset_or_collect_output_but_rewrites_its_own_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, fb = tmp_path / "log.jsonl", tmp_path / "fb.jsonl"
    log.write_text(json.dumps({"litellm_call_id": "c1", "decision": {"target": "generalist", "reason": "policy"},
                               "outcome": {"success": True}, "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    fb.write_text(json.dumps({"id": "c1", "thumbs": "up"}) + "\n")
    base = tmp_path / "routing.jsonl"  # the base dataset: each row scores every target
    base.write_text(json.dumps({"id": "q1", "prompt": "x", "split": "train",
                                "scores": {"math-model": 1, "generalist": 0}}) + "\n")
    collected = tmp_path / "collected.jsonl"  # collect's output, rebuilt from its call log
    collected.write_text(json.dumps({"id": "q2", "prompt": "y", "split": "train", "scores": {"generalist": 1}}) + "\n")
    (tmp_path / "collected.jsonl.calls.jsonl").write_text("")
    for out, why in ((base, "line 1 is not a feedback row (split 'train', 2 targets' scores)"),
                     (collected, "it is the output of collect")):
        before = out.read_text()
        assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(out)]) == 2
        assert f"{out} exists and is not the output of an earlier feedback run ({why}" in capsys.readouterr().err
        assert out.read_text() == before  # before: replaced by the feedback rows
    own = tmp_path / "rows.jsonl"
    for _ in range(2):  # a rerun rewrites its own earlier rows, as before
        assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(own)]) == 0
    assert [json.loads(x)["scores"] for x in own.read_text().splitlines()] == [{"generalist": 1.0}]


def test_feedback_lines_need_exactly_one_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, fb = tmp_path / "log.jsonl", tmp_path / "fb.jsonl"
    log.write_text("")
    fb.write_text(json.dumps({"id": "a", "score": 1.0, "thumbs": "up"}) + "\n")
    assert main(["feedback", "--log", str(log), "--feedback", str(fb), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "fb.jsonl:1" in capsys.readouterr().err


async def test_a_judge_run_later_scores_logged_answers_and_feeds_the_feedback_rows(
        bundle_dir: Path, tmp_path: Path) -> None:
    from conftest import HIST_PROMPT, MATH_PROMPT, model_list
    from litellm_prefill_router import PrefillRouter, flush_logging
    from litellm_prefill_router.feedback import feedback_rows, judge_log

    log = tmp_path / "decisions.jsonl"
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log),
                                                  "decision_log_responses": True, "preset": "max-quality"})
    for p in (MATH_PROMPT, HIST_PROMPT, MATH_PROMPT):
        await router.acompletion(model="auto", messages=[{"role": "user", "content": p}])
    await flush_logging()
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert all(r["response"] == f"answer from {r['decision']['target']}" for r in logged)
    # the user's own judge, run days later: only answers from math-model are acceptable
    lines = await judge_log(log, parse_judge("regex:from math-model"))
    assert [x["score"] for x in lines] == [float(r["decision"]["target"] == "math-model") for r in logged]
    rows, stats = feedback_rows(log, {x["id"]: x["score"] for x in lines})
    assert stats.rows == 3 and [r["scores"] for r in rows] == [{r["decision"]["target"]: x["score"]}
                                                               for r, x in zip(logged, lines)]
    with pytest.raises(Exception, match="needs a reference"):
        await judge_log(log, parse_judge("numeric"))


def test_judge_command_grades_logged_answers_with_an_llm_judge(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text("".join(json.dumps({
        "litellm_call_id": f"call-{i}", "decision": {"target": "math-model"},
        "outcome": {"success": ok}, "messages": [{"role": "user", "content": "what is 6 x 7"}],
        "response": "42"}) + "\n" for i, ok in enumerate([True, True, False])))
    cfg = _config(tmp_path / "router.yaml", judge_reply="SCORE: 8/10")
    out = tmp_path / "fb.jsonl"
    assert main(["judge", "--log", str(log), "--judge", "llm:judge", "--config", str(cfg), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{"id": "call-0", "score": 0.8, "judge": "llm:judge"},
                     {"id": "call-1", "score": 0.8, "judge": "llm:judge"}]  # the failed call has no answer


def test_judge_command_keeps_going_when_the_judge_fails_on_some_answers_and_a_rerun_judges_only_those(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # before: the first failing answer aborted the run with a traceback and every score so far was lost
    log = tmp_path / "decisions.jsonl"
    answers = ["fine", "BROKEN one", "fine again", "BROKEN two"]
    log.write_text("".join(json.dumps({"litellm_call_id": f"call-{i}", "decision": {"target": "math-model"},
                                       "outcome": {"success": True}, "messages": [{"role": "user", "content": "q"}],
                                       "response": a}) + "\n" for i, a in enumerate(answers)))
    out, judge = tmp_path / "fb.jsonl", "python:judge_funcs:fails_on_marked"
    monkeypatch.setenv("JUDGE_BROKEN", "1")
    assert main(["judge", "--log", str(log), "--judge", judge, "--out", str(out)]) == 4
    assert "failed on 2 answers" in capsys.readouterr().err
    assert [x["id"] for x in map(json.loads, out.read_text().splitlines())] == ["call-0", "call-2"]
    monkeypatch.delenv("JUDGE_BROKEN")
    assert main(["judge", "--log", str(log), "--judge", judge, "--out", str(out)]) == 0
    assert "scored 2 of 2 logged answers" in capsys.readouterr().out  # only the two that failed
    assert sorted(x["id"] for x in map(json.loads, out.read_text().splitlines())) == [f"call-{i}" for i in range(4)]
    assert main(["judge", "--log", str(log), "--judge", judge, "--out", str(out)]) == 0  # all scored already
    assert "scored 0 of 0 logged answers with" in (said := capsys.readouterr().out) and "nothing new for" in said


def test_judge_command_on_a_log_without_answers_fails_saying_how_to_log_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before: "scored 0 logged answers ...; wrote fb.jsonl", exit 0, and no file
    log, out = tmp_path / "decisions.jsonl", tmp_path / "fb.jsonl"
    log.write_text("".join(json.dumps({"litellm_call_id": f"call-{i}", "decision": {"target": "math-model"},
                                       "outcome": {"success": True}}) + "\n" for i in range(3)))
    assert main(["judge", "--log", str(log), "--judge", "regex:yes", "--out", str(out), "--quiet"]) == 1
    assert ("its 3 successful calls were logged without their answers: set "
            "routing_strategy_args.decision_log_responses: true") in capsys.readouterr().err
    assert not out.exists()


def test_judge_command_refuses_a_judge_group_the_config_does_not_have(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text("")
    cfg = _config(tmp_path / "router.yaml", judge_reply="SCORE: 1")
    assert main(["judge", "--log", str(log), "--judge", "llm:grader", "--config", str(cfg), "--out",
                 str(tmp_path / "fb.jsonl")]) == 2
    assert "model group 'grader' is not in" in capsys.readouterr().err


@pytest.mark.parametrize("headers, low, high", [({"retry-after": "7"}, 7.0, 7.0), ({}, 0.0, 0.0),
                                                 ({"retry-after": "soon"}, 0.0, 0.0)])
def test_retry_after_reads_the_server_header_of_retryable_errors(headers: dict, low: float, high: float) -> None:
    import httpx

    resp = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://127.0.0.1/v1/chat"))
    err = litellm.RateLimitError(message="slow down", llm_provider="openai", model="m", response=resp)
    assert low <= CollectionClient.retry_after(err) <= high
    assert CollectionClient.retry_after(ValueError("bad")) is None


def test_retry_after_understands_the_http_date_form() -> None:
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    import httpx

    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    resp = httpx.Response(503, headers={"retry-after": when}, request=httpx.Request("POST", "http://127.0.0.1/"))
    err = litellm.ServiceUnavailableError(message="busy", llm_provider="openai", model="m", response=resp)
    assert 25 <= CollectionClient.retry_after(err) <= 31


def _new_target_rows(path: Path, n: int = 120, score=lambda topic: float(topic == "math"), price: bool = True) -> Path:
    """Rows labelling only a model added to the fleet, ``math-pro``: right on math, wrong on history."""
    with path.open("w") as f:
        for r in tiny.synthetic_rows(n, seed=21):
            f.write(json.dumps({"id": f"new-{r['id']}", "prompt": r["prompt"], "benchmark": r["benchmark"],
                                "scores": {"math-pro": score(r["benchmark"])}}) + "\n")
    if price:  # as `prefill-router collect` writes it beside its rows
        path.with_suffix(".models.json").write_text(json.dumps(
            {"math-pro": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}}))
    return path


async def test_continue_from_adds_a_new_target_and_the_router_sends_it_what_it_answers_well(
        bundle_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    needs_training_extra()
    from litellm_prefill_router import PrefillRouter
    from litellm_prefill_router.predictor import PrefillPredictor

    rows = _new_target_rows(tmp_path / "math-pro.jsonl")
    out = tmp_path / "bundle-v2"
    assert main(["train", "--data", str(tiny_data), "--add", str(rows), "--continue-from", str(bundle_dir),
                 "--out", str(out), "--seeds", "2", "--keep", "1"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    old = json.loads((bundle_dir / "manifest.json").read_text())
    assert [t["name"] for t in m["targets"]] == [t["name"] for t in old["targets"]] + ["math-pro"]
    new = m["targets"][-1]
    assert new["input_cost_per_token"] == new["output_cost_per_token"] == 1e-7
    assert 0.4 < new["prior_accuracy"] < 0.6 and m["files"]["encoder.onnx"] == old["files"]["encoder.onnx"]

    probe = tiny.synthetic_rows(40, seed=99)
    p = PrefillPredictor(out).predict([r["prompt"] for r in probe])[:, -1]
    math = np.array([r["benchmark"] == "math" for r in probe])
    assert p[math].mean() > 0.7 and p[~math].mean() < 0.3, (p[math].mean(), p[~math].mean())

    targets = ("math-model", "history-model", "generalist", "math-pro")
    router = PrefillRouter(model_list=router_model_list(targets, prices={"math-pro": (1e-7, 1e-7)}),
                           routing_strategy="prefill", routing_strategy_args={"bundle": str(out), "tolerance": 0.1})
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": MATH_PROMPT}])
    assert resp.choices[0].message.content == "answer from math-pro"  # as likely right as math-model, cheaper
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT}])
    assert resp.choices[0].message.content == "answer from history-model"


def test_a_full_train_learns_a_new_target_from_added_rows_and_fills_its_missing_cells_by_prediction(
        tiny_data: Path, tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.predictor import PrefillPredictor

    rows = _new_target_rows(tmp_path / "math-pro.jsonl")  # 120 prompts of ~420 label it; all are train rows
    out = tmp_path / "bundle"
    assert main(["train", "--data", str(tiny_data), "--add", str(rows), "--encoder", str(tiny_encoder), "--out",
                 str(out), "--seeds", "1", "--keep", "1", "--max-tokens", "64", "--layers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "cells have no label" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in m["targets"]][-1] == "math-pro"
    assert m["targets"][-1]["input_cost_per_token"] == 1e-7
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["unlabelled_cells"] > 0 and report["test"]["auc"]["math-pro"] != report["test"]["auc"][
        "math-pro"]  # NaN: no test row labels it
    for preset in report["test"]["presets"].values():  # a missing cell is not counted as a wrong answer
        assert 0.5 < preset["router_accuracy"] <= 1.0 and preset["best_single_accuracy"] == preset[
            "best_single_accuracy"]
    probe = tiny.synthetic_rows(40, seed=99)
    p = PrefillPredictor(out).predict([r["prompt"] for r in probe])[:, -1]
    math = np.array([r["benchmark"] == "math" for r in probe])
    assert p[math].mean() > 0.7 and p[~math].mean() < 0.3, (p[math].mean(), p[~math].mean())

    one_sided = _new_target_rows(tmp_path / "always.jsonl", score=lambda topic: 1.0)
    assert main(["train", "--data", str(tiny_data), "--add", str(one_sided), "--encoder", str(tiny_encoder),
                 "--out", str(tmp_path / "b"), "--seeds", "1", "--keep", "1", "--max-tokens", "64"]) == 2
    assert "target 'math-pro' needs right and wrong answers" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_new_target_is_refused_without_a_price_enough_labels_or_both_outcomes(
        bundle_dir: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_training_extra()
    base = ["--data", str(tiny_data), "--seeds", "1", "--keep", "1"]
    rows = _new_target_rows(tmp_path / "unpriced.jsonl", price=False)
    assert main(["train", *base, "--add", str(rows), "--continue-from", str(bundle_dir),
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "['math-pro'] have no price" in err and "--models-json" in err

    rows = _new_target_rows(tmp_path / "always.jsonl", score=lambda topic: 1.0)
    assert main(["train", *base, "--add", str(rows), "--continue-from", str(bundle_dir),
                 "--out", str(tmp_path / "c")]) == 2
    assert "needs right and wrong answers" in capsys.readouterr().err

    rows = _new_target_rows(tmp_path / "few.jsonl", n=10)
    assert main(["train", *base, "--add", str(rows), "--continue-from", str(bundle_dir),
                 "--out", str(tmp_path / "d")]) == 2
    assert "'math-pro' has 10 training labels" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "bcd")


def test_continue_from_refuses_data_that_leaves_a_bundle_target_unlabelled(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_training_extra()
    # only math-model and history-model labelled: refitting would leave the generalist head untrained (junk routes)
    data = tmp_path / "partial.jsonl"
    with data.open("w") as f:
        for r in tiny.synthetic_rows(120, seed=5):
            f.write(json.dumps({**r, "scores": {k: v for k, v in r["scores"].items() if k != "generalist"}}) + "\n")
    (tmp_path / "partial.models.json").write_text(json.dumps(
        {t: {"input_cost_per_token": p[0], "output_cost_per_token": p[1]} for t, p in tiny.PRICES.items()}))
    out = tmp_path / "v2"
    assert main(["train", "--data", str(data), "--continue-from", str(bundle_dir), "--out", str(out),
                 "--seeds", "1", "--keep", "1"]) == 2
    err = capsys.readouterr().err
    assert "bundle target 'generalist'" in err and "pass the data the bundle was trained on" in err
    assert not out.exists()


def _answers_log(path: Path, answers: list[str]) -> Path:
    path.write_text("".join(json.dumps({"litellm_call_id": f"call-{i}", "decision": {"target": "math-model"},
                                        "outcome": {"success": True}, "messages": [{"role": "user", "content": "q"}],
                                        "response": a}) + "\n" for i, a in enumerate(answers)))
    return path


def test_judge_command_judges_answers_concurrently_with_an_async_judge(tmp_path: Path) -> None:
    import judge_funcs

    log = _answers_log(tmp_path / "decisions.jsonl", [f"answer {i}" for i in range(12)])
    out = tmp_path / "fb.jsonl"
    judge_funcs.IN_FLIGHT["most"] = 0
    assert main(["judge", "--log", str(log), "--judge", "python:judge_funcs:slow_service", "--out", str(out),
                 "--concurrency", "4", "--quiet"]) == 0
    assert judge_funcs.IN_FLIGHT["most"] == 4
    assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == sorted(f"call-{i}" for i in range(12))


def test_an_interrupted_judge_run_keeps_the_scores_it_had_and_a_rerun_judges_the_rest(tmp_path: Path) -> None:
    # before: the scores were written once, at the end - Ctrl-C an hour into a judge run lost all of them
    log = _answers_log(tmp_path / "decisions.jsonl", ["a", "b", "STOP here", "d"])
    out, judge = tmp_path / "fb.jsonl", "python:judge_funcs:interrupted_on_marked"
    with pytest.raises(KeyboardInterrupt):
        main(["judge", "--log", str(log), "--judge", judge, "--out", str(out), "--concurrency", "1", "--quiet"])
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["call-0", "call-1"]
    _answers_log(log, ["a", "b", "c", "d"])  # the same calls; this time nobody interrupts
    assert main(["judge", "--log", str(log), "--judge", judge, "--out", str(out), "--quiet"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"call-{i}" for i in range(4)]
