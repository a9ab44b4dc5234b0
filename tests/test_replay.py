"""`prefill-router replay`: a decision log written by a real LiteLLM router, decided again offline with the bundle
that wrote it (every route kept), with a retrained bundle (the calls it routes differently, priced and scored), and
with a log that has no messages (a clear error)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import (
    HIST_PROMPT,
    MATH_PROMPT,
    always_cheapest,
    model_list,
    rewrite_bundle,
)
from litellm_prefill_router import PrefillRouter, flush_logging
from litellm_prefill_router.cli import main
from litellm_prefill_router.policy import RoutingPolicy
from litellm_prefill_router.predictor import PrefillPredictor
from litellm_prefill_router.replay import ReplayError, policy_from_args, replay


async def served_log(bundle: Path, log: Path, **args: object) -> list[str]:
    """Three history prompts, two maths prompts and one call pinned to generalist through a router on ``bundle``;
    the response ids, in order."""
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle), "preset": "max-quality", "decision_log": str(log),
                                             **args})
    ids = []
    for text in [HIST_PROMPT, HIST_PROMPT + " in 1450", HIST_PROMPT + " at sea", MATH_PROMPT, MATH_PROMPT + " twice"]:
        resp = await r.acompletion(model="auto", messages=[{"role": "user", "content": text}])
        ids.append(resp.id)
    pinned = await r.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT}],
                                 metadata={"prefill": {"pin_model": "generalist"}})
    ids.append(pinned.id)
    await flush_logging()
    return ids


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_replaying_a_log_with_the_bundle_that_wrote_it_keeps_every_route(bundle_dir: Path,
                                                                               tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    await served_log(bundle_dir, log)
    logged = records(log)
    assert [rec["decision"]["target"] for rec in logged] == ["history-model"] * 3 + ["math-model"] * 2 + ["generalist"]
    r = replay(logged, PrefillPredictor(bundle_dir))
    assert (r["calls"], r["pinned"], r["kept"], r["moved"], r["agreement"], r["skipped"]) == (5, 1, 5, 0, 1.0, {})
    assert r["routes"] == {"history-model": {"before": 3, "after": 3}, "math-model": {"before": 2, "after": 2}}
    assert r["estimated_cost_after_usd"] == pytest.approx(r["estimated_cost_before_usd"])
    assert r["policy"] == "as logged"

    # --value-usd 0 (a right answer worth nothing): every replayed call goes to its cheapest candidate
    predictor = PrefillPredictor(bundle_dir)
    policy = policy_from_args(None, None, None, predictor, value_usd=0.0)  # as `replay --value-usd 0` reads it
    assert policy == RoutingPolicy("value_usd", 0.0)
    cheapest = replay(logged, predictor, policy=policy)
    assert cheapest["policy"] == "value_usd=0" and cheapest["routes"]["math-model"]["after"] == 5  # the cheapest


async def test_the_log_keeps_the_system_prompt_every_api_routed_on_so_replay_predicts_what_was_served(
        bundle_dir: Path, tmp_path: Path) -> None:
    """litellm logs the Anthropic API's messages without their ``system`` and the Responses API's without their
    ``instructions``; the log writes what the bundle read instead. A chat call's log keeps its messages as sent."""
    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                             "decision_log": str(log)})
    system = "You are a patient tutor who answers about the integral of x squared."
    chat_messages = [{"role": "system", "content": system},
                     {"role": "user", "content": [{"type": "text", "text": HIST_PROMPT}]}]
    chat = await r.acompletion(model="auto", messages=chat_messages)
    md: dict = {}  # the request's metadata, which litellm hands to its logging integrations
    await r.aanthropic_messages(model="auto", max_tokens=16, system=system, litellm_metadata=md,
                                messages=[{"role": "user", "content": HIST_PROMPT + " at sea"}])
    await r.aresponses(model="auto", input=HIST_PROMPT + " in 1450", instructions=system)
    await flush_logging()
    assert md["prefill_decision"]["target"] and system not in json.dumps(md, default=str)  # kept off it
    logged = records(log)
    assert len(logged) == 3 and chat._hidden_params["prefill_routing"]["target"] == logged[0]["decision"]["target"]
    assert logged[0]["messages"] == chat_messages  # as sent: content parts kept
    assert [rec["messages"][0] for rec in logged[1:]] == [{"role": "system", "content": system}] * 2
    predictor = PrefillPredictor(bundle_dir)
    for rec in logged:  # the logged text is what was routed on: the same prediction
        p = predictor.predict_one(rec["messages"]).p_correct
        assert dict(zip(predictor.targets, p.tolist())) == pytest.approx(rec["decision"]["p_correct"], abs=1e-5)
    assert replay(logged, predictor)["kept"] == 3


async def test_replaying_with_a_retrained_bundle_moves_the_calls_it_routes_differently_priced_and_scored(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "decisions.jsonl"
    ids = await served_log(bundle_dir, log)
    retrained = tmp_path / "retrained"
    shutil.copytree(bundle_dir, retrained)
    rewrite_bundle(retrained, always_cheapest)  # its max-quality preset now picks the cheapest: math-model
    feedback = tmp_path / "feedback.jsonl"  # users disliked the history-model answers, liked the maths ones
    feedback.write_text("".join(json.dumps({"id": i, "thumbs": "down" if n < 3 else "up"}) + "\n"
                                for n, i in enumerate(ids[:5])))
    out, plot = tmp_path / "replay.json", tmp_path / "replay.png"
    args = ["replay", "--log", str(log), "--bundle", str(retrained), "--feedback", str(feedback), "--json", str(out),
            "--quiet"]
    if importlib.util.find_spec("matplotlib") is None:  # the serving install (scripts/test_runtime_on.sh)
        assert main([*args, "--plot", str(plot)]) == 2
        assert "--plot needs matplotlib" in capsys.readouterr().err
        assert main(args) == 0
    else:
        assert main([*args, "--plot", str(plot)]) == 0
        assert plot.stat().st_size > 0
    r = json.loads(out.read_text())
    assert (r["calls"], r["pinned"], r["kept"], r["moved"]) == (5, 1, 2, 3)  # the maths calls stay
    assert r["top_moves"] == [{"from": "history-model", "to": "math-model", "calls": 3}]
    assert r["routes"]["math-model"] == {"before": 2, "after": 5}
    assert r["estimated_cost_after_usd"] < r["estimated_cost_before_usd"]
    assert r["feedback"] == {"kept": {"scored": 2, "mean_score": 1.0}, "moved": {"scored": 3, "mean_score": 0.0}}
    text = capsys.readouterr().out
    assert "same route for 2 (40.0%), another for 3" in text and "history-model -> math-model 3" in text

    # an explicit policy replaces each call's logged one: tolerance 1 sends every unpinned call to the cheapest
    pred = PrefillPredictor(bundle_dir)
    cheapest = replay(records(log), pred, policy=policy_from_args(None, 1.0, None, pred))
    assert cheapest["routes"]["math-model"]["after"] == 5 and cheapest["policy"] == "tolerance=1"


async def test_a_log_without_messages_cannot_be_replayed_and_the_error_says_how_to_fix_it(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "decisions.jsonl"
    await served_log(bundle_dir, log, decision_log_messages=False)
    with pytest.raises(ReplayError, match="decision_log_messages: true"):
        replay(records(log), PrefillPredictor(bundle_dir))
    assert main(["replay", "--log", str(log), "--bundle", str(bundle_dir), "--quiet"]) == 2
    assert "no call of the decision log can be replayed" in capsys.readouterr().err
    assert main(["replay", "--log", str(tmp_path / "missing.jsonl"), "--bundle", str(bundle_dir)]) == 2


def test_the_routed_messages_of_calls_never_logged_are_forgotten_after_newer_ones() -> None:
    from litellm_prefill_router.decision_logger import RoutedMessages

    kept = RoutedMessages(size=2)
    records_ = [{"target": t} for t in ("a", "b", "c")]
    for i, rec in enumerate(records_):
        kept.keep(rec, [{"role": "user", "content": str(i)}])
    assert kept.take(records_[0]) is None  # the oldest, forgotten
    assert kept.take({"target": "b"}) is None  # an equal record is not the same call's
    assert kept.take(records_[1]) == [{"role": "user", "content": "1"}] and kept.take(records_[1]) is None
