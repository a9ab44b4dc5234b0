"""The prefill strategy inside a real litellm.Router with mock_response deployments (and, for what litellm does not
mock, a local OpenAI-compatible endpoint: tests/fake_openai.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

import litellm
import numpy as np
import pytest
from packaging.version import Version

from conftest import (
    HIST_PROMPT,
    MATH_PROMPT,
    PRICES,
    always_cheapest,
    change_settings,
    cheap_group,
    free_port,
    live_model_list,
    model_list,
    read_a_chunk_and_drop,
    rewrite_bundle,
    strategy_name,
    stream_of,
    streamed_text,
    upsert,
)
from litellm_prefill_router import ConfigurationError, PrefillRouter, RequestSettingsError, UnpricedDeploymentError


def user(text: object) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture()
def router(bundle_dir: Path) -> PrefillRouter:
    return PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                         routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})


async def test_routing_follows_the_prompt_and_records_the_decision(router: PrefillRouter) -> None:
    math = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    hist = await router.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert math.choices[0].message.content == "answer from math-model"
    assert hist.choices[0].message.content == "answer from history-model"
    d = math._hidden_params["prefill_routing"]
    assert d["target"] == "math-model" and d["reason"] == "policy"
    assert set(d["p_correct"]) == set(d["cost_usd"]) == {"math-model", "history-model", "generalist"}
    assert d["policy"]["preset"] == "max-quality" and d["latency_ms"] > 0 and d["deployment_id"]
    assert d["model_group"] == "auto"


def test_sync_completion_routes_too(router: PrefillRouter) -> None:
    resp = router.completion(model="auto", messages=user(HIST_PROMPT))
    assert resp.choices[0].message.content == "answer from history-model"


async def test_sync_completion_called_inside_a_running_event_loop_still_routes(router: PrefillRouter) -> None:
    resp = router.completion(model="auto", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content == "answer from math-model"


async def test_streaming_passes_chunks_through_from_the_chosen_deployment_and_the_stream_carries_the_decision(
        router: PrefillRouter) -> None:
    stream = await router.acompletion(model="auto", messages=user(MATH_PROMPT), stream=True)
    assert stream._hidden_params["prefill_routing"]["target"] == "math-model"  # known before the first chunk
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "answer from math-model"
    sync_stream = router.completion(model="auto", messages=user(HIST_PROMPT), stream=True)
    assert sync_stream._hidden_params["prefill_routing"]["target"] == "history-model"
    assert "".join(c.choices[0].delta.content or "" for c in sync_stream) == "answer from history-model"


async def test_plain_litellm_router_accepts_prefill_after_install(bundle_dir: Path) -> None:
    from litellm_prefill_router import install

    install()
    r = litellm.Router(model_list=model_list(), routing_strategy="prefill",
                       routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    resp = await r.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert resp.choices[0].message.content == "answer from history-model"
    assert strategy_name(r) == "prefill"
    change_settings(r, routing_strategy="simple-shuffle")
    resp = await r.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert "prefill_routing" not in resp._hidden_params  # litellm's own strategy routed it
    change_settings(r, routing_strategy="prefill",
                    routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    resp = await r.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert resp.choices[0].message.content == "answer from history-model"
    assert resp._hidden_params["prefill_routing"]["target"] == "history-model"


@pytest.fixture(params=["PrefillRouter", "litellm.Router after install()"])
def any_router(request: pytest.FixtureRequest, bundle_dir: Path) -> litellm.Router:
    from litellm_prefill_router import install

    install()
    cls = PrefillRouter if request.param == "PrefillRouter" else litellm.Router
    return cls(model_list=model_list(), routing_strategy="prefill",
               routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})


def _decision(resp: object) -> dict:
    hidden = resp["_hidden_params"] if isinstance(resp, dict) else resp._hidden_params  # type: ignore[attr-defined]
    return hidden["prefill_routing"]


async def test_responses_api_requests_route_on_their_input_and_carry_the_decision(any_router: litellm.Router) -> None:
    math = await any_router.aresponses(model="auto", input=MATH_PROMPT)
    assert math.output[0].content[0].text == "answer from math-model"
    assert _decision(math)["target"] == "math-model"
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": HIST_PROMPT}]}]
    hist = await any_router.aresponses(model="auto", input=items)
    assert hist.output[0].content[0].text == "answer from history-model"
    assert _decision(hist)["target"] == "history-model"
    # per-request overrides ride in litellm_metadata (the Responses API's own `metadata` goes to the provider)
    pinned = await any_router.aresponses(model="auto", input=MATH_PROMPT,
                                         litellm_metadata={"prefill": {"pin_model": "generalist"}})
    assert pinned.output[0].content[0].text == "answer from generalist"
    assert _decision(pinned)["reason"] == "pinned"
    sync = any_router.responses(model="auto", input=HIST_PROMPT)
    assert sync.output[0].content[0].text == "answer from history-model"
    assert _decision(sync)["target"] == "history-model"


async def test_a_value_usd_policy_routes_by_expected_value_minus_cost_router_wide_and_per_request(
        bundle_dir: Path) -> None:
    def router(**args: object) -> PrefillRouter:
        return PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                             routing_strategy_args={"bundle": str(bundle_dir), **args})

    worthless = await router(value_usd=0.0).acompletion(model="auto", messages=user(HIST_PROMPT))
    d = worthless._hidden_params["prefill_routing"]
    assert d["policy"] == {"kind": "value_usd", "value": 0.0, "preset": None}
    assert d["target"] == min(d["cost_usd"], key=d["cost_usd"].get)  # a right answer worth nothing: the cheapest
    precious = await router(value_usd=0.0).acompletion(model="auto", messages=user(HIST_PROMPT),
                                                       metadata={"prefill": {"value_usd": 100.0}})
    d = precious._hidden_params["prefill_routing"]
    assert d["target"] == max(d["p_correct"], key=d["p_correct"].get) == "history-model"
    with pytest.raises(ConfigurationError, match="give one policy"):
        router(value_usd=0.01, tolerance=0.1)
    with pytest.raises(ConfigurationError, match=r"not \['preset', 'tolerance'\]"):  # the tolerance silently won
        router(preset="balanced", tolerance=0.1)
    with pytest.raises(RequestSettingsError, match=r"this request's policy: give one policy .* not \['preset', "
                                                   r"'lambda'\]"):
        await router().acompletion(model="auto", messages=user(HIST_PROMPT),
                                   metadata={"prefill": {"preset": "balanced", "lambda": 0.2}})


async def test_a_responses_api_request_continuing_a_response_goes_to_the_deployment_that_answered_it(
        bundle_dir: Path) -> None:
    def router(**args: object) -> PrefillRouter:
        return PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                             routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", **args})

    r = router()
    first = await r.aresponses(model="auto", input=MATH_PROMPT)
    assert _decision(first)["target"] == "math-model"
    # the history question alone would go to history-model, which does not have the conversation the id stands for
    follow = await r.aresponses(model="auto", input=HIST_PROMPT, previous_response_id=first.id)
    assert follow.output[0].content[0].text == "answer from math-model"
    d = _decision(follow)
    assert d["reason"] == "pinned: continues a response of math-model (previous_response_id)"
    assert d["deployment_id"] == _decision(first)["deployment_id"] and d["p_correct"] == {}  # no encoder pass
    sync = r.responses(model="auto", input=HIST_PROMPT, previous_response_id=first.id)
    assert sync.output[0].content[0].text == "answer from math-model"
    # an id no deployment of this router answered continues nothing known: routed by the policy
    foreign = await r.aresponses(model="auto", input=HIST_PROMPT, previous_response_id="resp_not_from_litellm")
    assert _decision(foreign)["target"] == "history-model" and _decision(foreign)["reason"] == "policy"
    # responses_affinity: false routes every turn on its own input
    off = await router(responses_affinity=False).aresponses(model="auto", input=HIST_PROMPT,
                                                            previous_response_id=first.id)
    assert _decision(off)["target"] == "history-model"


async def test_a_streamed_responses_turn_continued_by_its_id_stays_on_the_deployment_that_holds_it(
        bundle_dir: Path) -> None:
    """Codex-style: each turn streamed, the next one naming the last response's id (from its response.completed
    event) - against a local OpenAI-compatible Responses endpoint, which gets the provider's own id back."""
    from fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
        first = await r.aresponses(model="auto", input=MATH_PROMPT, stream=True)
        ids = [e.response.id async for e in first if getattr(e, "type", None) == "response.completed"]
        follow = await r.aresponses(model="auto", input=HIST_PROMPT, previous_response_id=ids[0], stream=True)
        assert streamed_text("responses", [e async for e in follow]) == "answer from math-model"
    assert _decision(first)["target"] == "math-model"
    assert _decision(follow)["reason"] == "pinned: continues a response of math-model (previous_response_id)"
    assert [(m["model"], m.get("previous_response_id")) for m in fake.requests] == [
        ("math-model", None), ("math-model", "resp_fake")]


async def test_litellms_session_affinity_keeps_a_chat_session_on_the_deployment_of_its_first_request(
        bundle_dir: Path) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      optional_pre_call_checks=["session_affinity"],
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    targets = []
    for text, session in ((MATH_PROMPT, "s1"), (HIST_PROMPT, "s1"), (HIST_PROMPT, "s2"), (MATH_PROMPT, "s2")):
        resp = await r.acompletion(model="auto", messages=user(text), metadata={"session_id": session})
        targets.append(resp._hidden_params["prefill_routing"]["target"])
    assert targets == ["math-model", "math-model", "history-model", "history-model"]
    d = resp._hidden_params["prefill_routing"]
    assert d["candidates"] == ["history-model"] and d["unavailable_targets"] == ["generalist", "math-model"]


async def test_text_completions_route_on_the_prompt_and_carry_the_decision(any_router: litellm.Router) -> None:
    resp = await any_router.atext_completion(model="auto", prompt=HIST_PROMPT)
    assert resp.choices[0].text == "answer from history-model"
    assert _decision(resp)["target"] == "history-model"


async def test_anthropic_messages_route_on_their_content_blocks_and_carry_the_decision(
        any_router: litellm.Router) -> None:
    resp = await any_router.aanthropic_messages(
        model="auto", max_tokens=16, messages=[{"role": "user", "content": [{"type": "text", "text": MATH_PROMPT}]}])
    assert resp["content"][0]["text"] == "answer from math-model"
    assert _decision(resp)["target"] == "math-model"


async def test_one_conversation_with_a_system_prompt_routes_alike_through_every_api(bundle_dir: Path) -> None:
    """Each API carries the system prompt its own way (a chat message, Anthropic's ``system``, the Responses API's
    ``instructions``, Google GenAI's ``systemInstruction``); the bundle reads the same text through all of them."""
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                  "prediction_cache_size": 0})
    system = "You are a patient tutor who answers about the integral of x squared."
    chat = await router.acompletion(model="auto", messages=[{"role": "system", "content": system},
                                                            *user(HIST_PROMPT)])
    anthropic = await router.aanthropic_messages(model="auto", max_tokens=16, messages=user(HIST_PROMPT),
                                                 system=[{"type": "text", "text": system}])
    responses = await router.aresponses(model="auto", input=HIST_PROMPT, instructions=system)
    google = await router.agenerate_content(model="auto", contents=HIST_PROMPT,
                                            systemInstruction={"parts": [{"text": system}]})
    without = await router.acompletion(model="auto", messages=user(HIST_PROMPT))
    seen = [(_decision(r)["input_tokens"], _decision(r)["p_correct"]) for r in (chat, anthropic, responses, google)]
    assert all(s == seen[0] for s in seen), seen
    assert seen[0][0] > _decision(without)["input_tokens"]


async def test_google_genai_generate_content_routes_on_its_contents_and_carries_the_decision(
        any_router: litellm.Router) -> None:
    math = await any_router.agenerate_content(model="auto",
                                              contents=[{"role": "user", "parts": [{"text": MATH_PROMPT}]}])
    assert math["text"] == "answer from math-model"
    assert _decision(math)["target"] == "math-model" and _decision(math)["reason"] == "policy"
    hist = any_router.generate_content(model="auto", contents=HIST_PROMPT)  # sync, contents a string
    assert hist["text"] == "answer from history-model" and _decision(hist)["target"] == "history-model"
    # a conversation: the model's turn and a function call are text too; the system instruction is read first
    turns = [{"role": "user", "parts": [{"text": "Tell me about the past."}]},
             {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "history"}}}]},
             {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"r": "the king"}}},
                                        {"text": HIST_PROMPT}]}]
    convo = await any_router.agenerate_content(model="auto", contents=turns,
                                               systemInstruction={"parts": [{"text": "You are a historian."}]})
    assert _decision(convo)["target"] == "history-model"
    configured = await any_router.agenerate_content(  # the system instruction in the request's config
        model="auto", contents={"role": "user", "parts": [{"text": HIST_PROMPT}]},
        config={"system_instruction": "You are a historian."})
    assert _decision(configured)["target"] == "history-model"
    assert _decision(configured)["input_tokens"] > _decision(hist)["input_tokens"]  # the same turn, no instruction
    assert _decision(convo)["input_tokens"] > _decision(configured)["input_tokens"]
    image_only = await any_router.agenerate_content(
        model="auto", contents=[{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]}])
    assert _decision(image_only)["reason"] == "fallback: the request has no text to route on"


@pytest.mark.parametrize(("api", "cls"), [("chat", "PrefillRouter"), ("responses", "PrefillRouter"),
                                          ("anthropic", "PrefillRouter"), ("google", "PrefillRouter"),
                                          ("google", "litellm.Router after install()")])
async def test_a_stream_of_every_api_is_routed_carries_its_decision_and_is_logged(
        api: str, cls: str, bundle_dir: Path, tmp_path: Path) -> None:
    """Against a local OpenAI-compatible endpoint (litellm mocks none of these streams but chat's): the stream object
    carries the decision before its first chunk - a Google GenAI stream too, which litellm returns as a bare async
    generator of server-sent events - and each call leaves its decision-log line."""
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging, install
    from litellm_prefill_router.litellm_support import installed_litellm

    install()
    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        router = (PrefillRouter if cls == "PrefillRouter" else litellm.Router)(
            model_list=live_model_list(fake.url), routing_strategy="prefill",
            routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", "decision_log": str(log),
                                   "decision_log_responses": True})
        for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
            stream = await stream_of(router, api, prompt)
            d = stream._hidden_params["prefill_routing"]  # known before the first chunk
            assert d["target"] == target and d["reason"] == "policy"
            assert streamed_text(api, [c async for c in stream]) == f"answer from {target}"
        await flush_logging()
    assert [(r["model"], r["stream"]) for r in fake.requests] == [("math-model", True), ("history-model", True)]
    if api == "google" and Version(installed_litellm()) < Version("1.108"):
        pytest.skip("litellm 1.102's success logging of generate_content fails (\"httpx_response is None\"): no "
                    "decision-log line to check")
    rows = {r["messages"][-1]["content"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert {prompt: (r["decision"]["target"], r["outcome"]["success"]) for prompt, r in rows.items()} == {
        MATH_PROMPT: ("math-model", True), HIST_PROMPT: ("history-model", True)}


async def test_concurrent_streams_of_every_api_each_carry_the_decision_of_the_target_that_answers_them(
        bundle_dir: Path) -> None:
    from fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})

        async def one(i: int) -> tuple[str, str]:
            api = ("chat", "responses", "anthropic", "google")[i % 4]
            stream = await stream_of(r, api, f"{(MATH_PROMPT, HIST_PROMPT)[(i // 4) % 2]} ({i})")
            return stream._hidden_params["prefill_routing"]["target"], streamed_text(api, [c async for c in stream])

        answers = await asyncio.gather(*(one(i) for i in range(32)))
    assert [text for _, text in answers] == [f"answer from {target}" for target, _ in answers]
    assert {target for target, _ in answers} == {"math-model", "history-model"}


async def test_the_decision_log_keeps_the_answer_of_every_apis_call_streamed_or_not(bundle_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """``decision_log_responses: true`` (what ``prefill-router judge`` scores): before, only chat completions' answers
    were kept - a Responses API or text completion call logged ``response: null``."""
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.litellm_support import installed_litellm

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(log), "decision_log_responses": True})
        apis = ["chat", "responses", "anthropic"] + (["google"] if Version(installed_litellm()) >= Version("1.108")
                                                     else [])  # 1.102 logs no generate_content call
        for api in apis:
            stream = await stream_of(r, api, HIST_PROMPT)
            assert streamed_text(api, [c async for c in stream]) == "answer from history-model"
        await r.acompletion(model="auto", messages=user(HIST_PROMPT))
        await r.aresponses(model="auto", input=HIST_PROMPT)
        await r.aanthropic_messages(model="auto", messages=user(HIST_PROMPT), max_tokens=32)
        await r.atext_completion(model="auto", prompt=HIST_PROMPT)
        await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == len(apis) + 4
    assert [row["response"] for row in rows] == ["answer from history-model"] * len(rows)


async def read_some_text_and_drop(stream: Any, api: str) -> list:
    """Read ``stream`` (the only reference: pass it straight from the call) up to its first answer text, then drop
    it; the chunks read."""
    assert stream._hidden_params["prefill_routing"]["target"] == "math-model"
    read: list = []
    async for chunk in stream:
        read.append(chunk)
        if streamed_text(api, read):
            break
    del stream
    gc.collect()
    return read


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic", "google"])
async def test_a_stream_of_every_api_its_reader_drops_is_logged_once_as_abandoned(api: str, bundle_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """A chat UI's stop button, a ``break`` out of the loop: litellm reports no outcome for such a stream, so its
    call had no decision-log line (and no count in the metrics). A stream read to its end keeps its one line."""
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.litellm_support import installed_litellm

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(log)})
        read = await read_some_text_and_drop(await stream_of(r, api, MATH_PROMPT), api)
        whole = await stream_of(r, api, HIST_PROMPT)
        assert streamed_text(api, [c async for c in whole]) == "answer from history-model"
        del whole
        gc.collect()
        await flush_logging()
        await flush_logging()  # nothing new: each call has its one line
    rows = {row["messages"][-1]["content"]: row for row in map(json.loads, log.read_text().splitlines())}
    if api == "google" and Version(installed_litellm()) < Version("1.108"):
        del rows[MATH_PROMPT]["messages"]  # 1.102 logs no generate_content call: only the dropped one has a line
        assert set(rows) == {MATH_PROMPT}
    else:
        assert set(rows) == {MATH_PROMPT, HIST_PROMPT}
        assert rows[HIST_PROMPT]["outcome"]["success"] is True and "abandoned" not in rows[HIST_PROMPT]["outcome"]
    dropped = rows[MATH_PROMPT]
    assert dropped["decision"]["target"] == "math-model"
    assert {k: dropped["outcome"][k] for k in ("success", "abandoned", "savings_usd")} == {
        "success": False, "abandoned": True, "savings_usd": None}
    assert dropped["outcome"]["error"].startswith("the stream was dropped before its end (")
    assert dropped["response_id"] is None and dropped["outcome"]["latency_s"] >= 0
    # what was read is counted, priced at the deployment's price (litellm counts nothing of it): a lower bound
    counted = {k: dropped["outcome"][k] for k in ("prompt_tokens", "completion_tokens", "usage_counted")}
    assert counted["usage_counted"] is True
    assert counted["prompt_tokens"] == litellm.token_counter(model="math-model", messages=user(MATH_PROMPT))
    assert counted["completion_tokens"] >= litellm.token_counter(  # and what litellm read ahead of the reader
        model="math-model", text=streamed_text(api, read), count_response_tokens=True) > 0
    price_in, price_out = PRICES["math-model"]
    assert dropped["outcome"]["response_cost"] == pytest.approx(
        price_in * counted["prompt_tokens"] + price_out * counted["completion_tokens"])


async def test_concurrent_streams_half_of_them_dropped_each_leave_one_line_with_their_own_outcome(
        bundle_dir: Path, tmp_path: Path) -> None:
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.litellm_support import installed_litellm

    def prompt(i: int) -> str:
        return f"{(MATH_PROMPT, HIST_PROMPT)[(i // 4) % 2]} ({i})"

    def dropped(i: int) -> bool:  # each API and prompt, read whole and dropped
        return (i // 8) % 2 == 1

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI(drip={"math-model": 0.05, "history-model": 0.05}) as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(log)})

        async def one(i: int) -> None:
            stream = await stream_of(r, ("chat", "responses", "anthropic", "google")[i % 4], prompt(i))
            async for _ in stream:
                if dropped(i):
                    break

        await asyncio.gather(*(one(i) for i in range(32)))
        gc.collect()
        await flush_logging()
    rows = {row["messages"][-1]["content"]: row["outcome"] for row in map(json.loads, log.read_text().splitlines())}
    logged = [i for i in range(32) if i % 4 != 3 or dropped(i) or Version(installed_litellm()) >= Version("1.108")]
    assert sorted(rows) == sorted(map(prompt, logged))  # 1.102 logs no whole generate_content stream
    assert {i: rows[prompt(i)].get("abandoned", False) for i in logged} == {i: dropped(i) for i in logged}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_sync_stream_its_reader_drops_is_logged_as_abandoned(api: str, bundle_dir: Path, tmp_path: Path) -> None:
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import stream_watch

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(log)})
        stream = r.completion(model="auto", messages=user(MATH_PROMPT), stream=True) if api == "chat" else \
            r.responses(model="auto", input=MATH_PROMPT, stream=True)
        next(iter(stream))
        del stream
        gc.collect()
        stream_watch.flush()
    (row,) = map(json.loads, log.read_text().splitlines())
    assert row["litellm_call_id"] and row["decision"]["target"] == "math-model"
    assert row["outcome"]["abandoned"] is True and row["messages"] == user(MATH_PROMPT)
    assert row["outcome"].get("usage_counted", False) is (api == "chat")  # the chat stream's read part is counted
    assert (row["outcome"]["completion_tokens"] or 0) > 0 and row["outcome"]["response_cost"] > 0 if api == "chat" \
        else row["outcome"]["response_cost"] is None


async def test_a_streamed_chat_call_without_a_usage_chunk_is_logged_with_its_tokens_cost_and_savings(
        bundle_dir: Path, tmp_path: Path) -> None:
    """litellm 1.108 reports such a call with 0 tokens and cost 0 (1.102 and 1.110 count its tokens): its savings
    were 0 and learn_output_tokens skipped it. The router counts them as 1.102 / 1.110 do."""
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        r = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(log)})
        stream = await r.acompletion(model="auto", messages=user(MATH_PROMPT), stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "answer from math-model"
        await flush_logging()
    (row,) = map(json.loads, log.read_text().splitlines())
    o = row["outcome"]
    assert (o["prompt_tokens"], o["completion_tokens"]) == (17, 4)  # litellm 1.102's and 1.110's own count
    assert o["response_cost"] == pytest.approx(PRICES["math-model"][0] * 17 + PRICES["math-model"][1] * 4)
    assert o["savings_usd"] > 0


async def test_a_whole_google_genai_answer_from_a_provider_is_routed_after_its_system_instruction_and_logged(
        bundle_dir: Path, tmp_path: Path) -> None:
    from fake_openai import FakeOpenAI

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.litellm_support import installed_litellm

    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake:
        router = PrefillRouter(model_list=live_model_list(fake.url), routing_strategy="prefill",
                               routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log),
                                                      "decision_log_responses": True})
        whole = await router.agenerate_content(
            model="auto", contents=[{"role": "user", "parts": [{"text": "Why did the king go to war?"}]}],
            systemInstruction={"parts": [{"text": "You are a historian."}]})
        target = _decision(whole)["target"]
        assert whole["candidates"][0]["content"]["parts"][0]["text"] == f"answer from {target}"
        await flush_logging()
    assert fake.requests[0]["messages"][0] == {"role": "system", "content": "You are a historian."}
    if Version(installed_litellm()) < Version("1.108"):
        pytest.skip("litellm 1.102's success logging of generate_content fails (\"httpx_response is None\"): no "
                    "decision-log line to check")
    (row,) = map(json.loads, log.read_text().splitlines())
    assert [m["content"] for m in row["messages"]] == ["You are a historian.", "Why did the king go to war?"]
    assert (row["decision"]["target"], row["response"]) == (target, f"answer from {target}")


async def test_an_embedding_group_beside_the_routed_group_is_served_as_usual(bundle_dir: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    embed = {"model_name": "embed", "litellm_params": {"model": "openai/text-embedding-3-small", "api_key": "sk-test",
                                                       "mock_response": [0.25, 0.5]}}
    r = PrefillRouter(model_list=[*model_list(), embed], routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        out = await r.aembedding(model="embed", input=["the integral", "the king"])
        chat = await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert out.data[0]["embedding"] == [0.25, 0.5]
    assert chat.choices[0].message.content == "answer from math-model"
    assert "inference failed" not in caplog.text


def test_unknown_strategy_names_still_raise(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="Invalid routing_strategy"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefil")


def test_missing_bundle_argument_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="routing_strategy_args"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill")


def test_broken_bundle_fails_at_construction_with_the_file_named(bundle_copy: Path) -> None:
    from litellm_prefill_router import BundleMissingFileError

    (bundle_copy / "trunk.onnx").unlink()
    with pytest.raises(BundleMissingFileError, match="trunk.onnx"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy)})


def test_prefill_target_that_is_not_in_the_bundle_lists_valid_targets(bundle_dir: Path) -> None:
    ml = model_list()
    ml[0]["model_info"]["prefill_target"] = "gpt-9"
    with pytest.raises(ConfigurationError, match="gpt-9.*valid targets"):
        PrefillRouter(model_list=ml, routing_strategy="prefill", routing_strategy_args={"bundle": str(bundle_dir)})


def test_a_negative_or_nan_deployment_price_is_a_configuration_error_naming_the_deployment(bundle_dir: Path) -> None:
    from litellm_prefill_router.router import ROUTER_ACCEPTS_SUBCLASSES

    for bad in (-1e-6, float("nan")):
        ml = model_list()
        ml[0]["model_info"]["input_cost_per_token"] = bad  # a ValueError from deep inside before
        if not ROUTER_ACCEPTS_SUBCLASSES and bad != bad:  # litellm 1.110 refuses a NaN price itself, naming it
            with pytest.raises(ValueError, match="input_cost_per_token is nan"):
                PrefillRouter(model_list=ml, routing_strategy="prefill",
                              routing_strategy_args={"bundle": str(bundle_dir)})
            continue
        with pytest.raises(ConfigurationError, match="deployment 'openai/math-model' \\(model group 'auto'\\): its "
                                                     "model_info price is not USD per token: input_cost_per_token "
                                                     "must be a finite number >= 0"):
            PrefillRouter(model_list=ml, routing_strategy="prefill", routing_strategy_args={"bundle": str(bundle_dir)})


def test_unpriced_deployment_is_an_error_unless_a_default_price_is_set(bundle_dir: Path) -> None:
    ml = model_list()
    for d in ml:  # fresh model names: litellm keeps prices registered by earlier routers in a global map
        d["model_info"].pop("input_cost_per_token")
        d["model_info"].pop("output_cost_per_token")
        d["litellm_params"]["model"] = "openai/unpriced-" + d["model_info"]["prefill_target"]
    with pytest.raises(UnpricedDeploymentError, match="no known price"):
        PrefillRouter(model_list=ml, routing_strategy="prefill", routing_strategy_args={"bundle": str(bundle_dir)})
    r = PrefillRouter(model_list=ml, routing_strategy="prefill", routing_strategy_args={
        "bundle": str(bundle_dir), "default_input_cost_per_token": 1e-6, "default_output_cost_per_token": 1e-6})
    assert {d.price.source for d in r.prefill_strategy._deployments.values() if d} == {"default"}


def test_deployments_are_mapped_by_name_and_unmapped_ones_are_reported(bundle_dir: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    ml = model_list()
    for d in ml:
        d["model_info"].pop("prefill_target")  # litellm_params.model "openai/<target>" maps by name
    ml.append({"model_name": "other", "litellm_params": {"model": "openai/gpt-4o-mini", "mock_response": "x",
                                                         "api_key": "k"}})
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        r = PrefillRouter(model_list=ml, routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir)})
    assert "not mapped" in caplog.text and "gpt-4o-mini" in caplog.text
    assert r.prefill_strategy.unmapped == ["other (openai/gpt-4o-mini)"]
    assert r.completion(model="other", messages=user("hi")).choices[0].message.content == "x"


async def test_request_metadata_overrides_policy_pin_and_candidates(router: PrefillRouter) -> None:
    pinned = await router.acompletion(model="auto", messages=user(MATH_PROMPT),
                                      metadata={"prefill": {"pin_model": "generalist"}})
    assert pinned.choices[0].message.content == "answer from generalist"
    assert pinned._hidden_params["prefill_routing"]["reason"] == "pinned"
    subset = await router.acompletion(model="auto", messages=user(MATH_PROMPT),
                                      metadata={"prefill": {"candidates": ["history-model", "generalist"]}})
    assert subset._hidden_params["prefill_routing"]["target"] in ("history-model", "generalist")
    cheap = await router.acompletion(model="auto", messages=user(HIST_PROMPT), metadata={"prefill": {"tolerance": 1.0}})
    assert cheap.choices[0].message.content == "answer from math-model"  # cheapest target within tau=1
    with pytest.raises(Exception, match="unknown targets"):
        await router.acompletion(model="auto", messages=user(MATH_PROMPT),
                                 metadata={"prefill": {"candidates": ["nope"]}})


@pytest.mark.parametrize(("settings", "said"), [
    ({"tolerence": 0.1}, "tolerence: unknown setting; did you mean 'tolerance'"),
    ({"preset": "cheapest"}, "this request's policy: unknown policy preset 'cheapest'"),
    ({"candidates": ["gpt-9"]}, "requested candidates name unknown targets ['gpt-9']"),
    ({"candidates": []}, "no candidate target is available in model group 'auto' (requested: []"),
    ("cheap", "metadata['prefill'] must be a dict, got str"),
])
async def test_a_requests_bad_routing_settings_fail_it_once_as_a_client_error(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, settings: object, said: str) -> None:
    from litellm_prefill_router import RequestSettingsError
    from litellm_prefill_router.config import parse_overrides as parse

    attempts = []
    monkeypatch.setattr("litellm_prefill_router.strategy.parse_overrides",
                        lambda md: attempts.append(1) or parse(md))  # type: ignore[func-returns-value]
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill", num_retries=3,
                           routing_strategy_args={"bundle": str(bundle_dir)})
    with pytest.raises(RequestSettingsError) as err:
        await router.acompletion(model="auto", messages=user(MATH_PROMPT), metadata={"prefill": settings})
    assert said in str(err.value) and err.value.status_code == 400  # the proxy answers 400, litellm does not retry
    assert isinstance(err.value, ConfigurationError)
    assert len(attempts) == 1  # one attempt: the same request would fail the same way again


@pytest.mark.parametrize("messages", [
    [],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
])
async def test_requests_without_text_go_to_the_fallback_target(router: PrefillRouter, messages: list) -> None:
    resp = await router.acompletion(model="auto", messages=messages)
    d = resp._hidden_params["prefill_routing"]
    assert d["reason"].startswith("fallback: the request has no text")
    assert d["target"] == router.prefill_strategy.fallback_target


@pytest.mark.parametrize(("messages", "expected"), [
    ([{"role": "user", "content": "integral " * 25_000}], "math-model"),
    ([{"role": "user", "content": "the derivative \ud800 of the equation"}], "math-model"),
    # multi-turn with tool traffic is out of the tiny model's training distribution: any target, but by policy
    ([{"role": "user", "content": "the integral of the derivative of the equation"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c1", "content": "the algebra theorem proof sum integral"}], None),
])
async def test_odd_but_valid_inputs_route_by_policy(router: PrefillRouter, messages: list,
                                                    expected: str | None) -> None:
    resp = await router.acompletion(model="auto", messages=messages)
    d = resp._hidden_params["prefill_routing"]
    assert d["reason"] == "policy" and d["target"] in d["candidates"]
    assert expected is None or d["target"] == expected


async def test_hundreds_of_concurrent_requests_all_succeed_with_the_right_route(router: PrefillRouter) -> None:
    prompts = [MATH_PROMPT if i % 2 == 0 else HIST_PROMPT for i in range(300)]
    results = await asyncio.gather(*(router.acompletion(model="auto", messages=user(p)) for p in prompts))
    want = ["answer from math-model" if i % 2 == 0 else "answer from history-model" for i in range(300)]
    assert [r.choices[0].message.content for r in results] == want


async def test_onnx_inference_runs_off_the_event_loop(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow encoder (1.5 s a batch) must not stall other coroutines.

    The stall threshold (0.6 s) sits well below the encoder's 1.5 s, so inference on the loop always fails the
    test, while one-off pauses of the whole process do not: a full GC pass in a process holding torch, litellm and
    everything the suite built (0.3 s and 0.78 s seen on CI) is kept short by freezing the existing objects."""
    import gc
    import threading

    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",  # every request runs the encoder
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                  "prediction_cache_size": 0})
    encoder = router.prefill_strategy.predictor.encoder
    real = type(encoder).__call__
    threads: set[int] = set()

    def slow(self, ids, mask):  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        time.sleep(1.5)
        return real(self, ids, mask)

    # warm-up first: litellm builds the deployment's HTTP client (SSL context: ~0.3 s) on the event loop, and its
    # logging worker (a task on this loop) handles the warm-up call's success callbacks - the first time, slowly
    # (0.69 s once on CI, in the first tick measured below): let it finish before measuring
    from litellm_prefill_router import flush_logging

    await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    await flush_logging(timeout=30)
    # a full GC pass over everything the suite has built by now (bundles, routers, torch) pauses the whole process
    # (0.78 s once on CI): freeze what exists so the collector's passes stay short while we measure
    gc.collect()
    gc.freeze()
    monkeypatch.setattr(type(encoder), "__call__", slow)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(router.acompletion(model="auto", messages=user(MATH_PROMPT))
                                         for _ in range(4)))
    finally:
        stop.set()
        await tick
        gc.unfreeze()
    assert all(r.choices[0].message.content == "answer from math-model" for r in results)
    assert threads and threading.get_ident() not in threads
    assert len(gaps) >= 50 and max(gaps) < 0.6, f"event loop stalled for {max(gaps):.3f}s"


async def test_cooldown_and_fallbacks_still_work(bundle_dir: Path) -> None:
    ml = model_list(**{"math-model": {"mock_response": "litellm.RateLimitError"}})
    ml.append({"model_name": "backup", "litellm_params": {"model": "openai/backup", "api_key": "k",
                                                          "mock_response": "answer from backup"}})
    r = PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=0, allowed_fails=0, cooldown_time=60,
                      fallbacks=[{"auto": ["backup"]}],
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    first = await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert first.choices[0].message.content == "answer from backup"  # math-model failed -> fallback group
    assert "prefill_routing" not in first._hidden_params  # backup's answer is not attributed to math-model
    await asyncio.sleep(0.2)
    second = await r.acompletion(model="auto", messages=user(MATH_PROMPT))  # math-model is cooling down
    d = second._hidden_params["prefill_routing"]
    assert "math-model" not in d["candidates"] and d["unavailable_targets"] == ["math-model"]
    assert second.choices[0].message.content in ("answer from history-model", "answer from generalist")


async def test_with_every_deployment_cooling_down_the_request_fails_with_litellms_no_deployments_error(
        bundle_dir: Path) -> None:
    """The error litellm itself raises (a rate-limit error naming the model group and the cooldown, from its
    healthy-deployments lookup, which the strategy calls through litellm 1.109's select() where it exists), not one
    of ours and not a lost error."""
    from litellm.types.router import RouterRateLimitError

    failing = {name: {"mock_response": "litellm.RateLimitError"} for name in ("math-model", "history-model",
                                                                               "generalist")}
    r = PrefillRouter(model_list=model_list(**failing), routing_strategy="prefill", num_retries=2, retry_after=0,
                      allowed_fails=0, cooldown_time=60, routing_strategy_args={"bundle": str(bundle_dir)})
    with pytest.raises(litellm.RateLimitError):  # each attempt fails and cools its deployment down
        await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    await asyncio.sleep(0.2)
    with pytest.raises(RouterRateLimitError, match="auto"):
        await r.acompletion(model="auto", messages=user(MATH_PROMPT))


async def test_with_pre_call_checks_a_prompt_too_long_for_a_targets_context_window_goes_to_the_next_best(
        bundle_dir: Path) -> None:
    """litellm's pre-call checks drop a deployment whose max_input_tokens the prompt exceeds before the bundle
    chooses, so a long prompt is never sent where it would fail; the decision names the target left out."""
    long_math = " ".join([MATH_PROMPT] * 8)  # ~100 tokens, still a math prompt
    # math-model: a small context window (under a model name of its own: litellm files a deployment's model_info
    # under its model name, process-wide)
    ml = model_list(**{"math-model": {"model": "openai/math-model-40-tokens"}})
    ml[0]["model_info"]["max_input_tokens"] = 40
    args = {"bundle": str(bundle_dir), "preset": "max-quality"}
    checked = PrefillRouter(model_list=ml, routing_strategy="prefill", enable_pre_call_checks=True,
                            routing_strategy_args=args)
    unchecked = PrefillRouter(model_list=model_list(), routing_strategy="prefill", routing_strategy_args=args)

    assert (await unchecked.acompletion(model="auto", messages=user(long_math))).choices[0].message.content \
        == "answer from math-model"  # without the limit the long prompt is math-model's
    short = await checked.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert short.choices[0].message.content == "answer from math-model"
    assert "unavailable_targets" not in short._hidden_params["prefill_routing"]
    long = await checked.acompletion(model="auto", messages=user(long_math))
    d = long._hidden_params["prefill_routing"]
    assert d["target"] != "math-model" and d["reason"] == "policy"
    assert d["unavailable_targets"] == ["math-model"] and "math-model" not in d["candidates"]
    assert long.choices[0].message.content == f"answer from {d['target']}"
    from litellm_prefill_router.records import decision_headers

    assert decision_headers({"metadata": {"prefill_decision": d}})["x-prefill-unavailable"] == "math-model"


def failing_math_router(bundle_dir: Path, *deployments_extra: dict, **args: object) -> PrefillRouter:
    """math-model (the max-quality route of MATH_PROMPT) answers every call with a 500; one litellm retry."""
    ml = model_list(**{"math-model": {"mock_response": "litellm.InternalServerError"}})
    ml.extend(deployments_extra)
    return PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0, allowed_fails=5,
                         routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", **args})


async def test_a_retry_goes_to_the_next_best_target_instead_of_the_one_that_failed(bundle_dir: Path,
                                                                                    tmp_path: Path) -> None:
    healthy = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                            routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    first_choice = (await healthy.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params[
        "prefill_routing"]
    assert first_choice["target"] == "math-model"
    runner_up = max(("history-model", "generalist"), key=lambda t: first_choice["p_correct"][t])

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.log_stats import summarize

    log = tmp_path / "decisions.jsonl"
    resp = await failing_math_router(bundle_dir, decision_log=str(log)).acompletion(
        model="auto", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content == f"answer from {runner_up}"
    d = resp._hidden_params["prefill_routing"]
    assert d["target"] == runner_up and d["reason"] == "retry: math-model failed this request"
    assert "math-model" not in d["candidates"]
    assert [(f["target"], f["error"]) for f in d["failed_attempts"]] == [("math-model", "InternalServerError")]
    await flush_logging()
    rows = [json.loads(x) for x in log.read_text().splitlines()]  # one line per attempt: the failure, then the retry
    assert [(r["decision"]["target"], r["outcome"]["success"]) for r in rows] == [("math-model", False),
                                                                                 (runner_up, True)]
    stats = summarize(rows)
    assert stats["reasons"] == {"policy": 1, "retry": 1}
    # the retry repeats the request's prediction: its novelty is counted once, for the request
    assert all(isinstance(r["decision"]["novelty"], float) for r in rows) and stats["novel"]["calls"] == 1


async def test_a_retry_reuses_the_first_attempts_prediction_instead_of_running_the_encoder_again(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = failing_math_router(bundle_dir, prediction_cache_size=8)
    predictor = r.prefill_strategy.predictor
    calls: list[int] = []
    real = predictor.probabilities_for_ids
    monkeypatch.setattr(predictor, "probabilities_for_ids", lambda ids: calls.append(len(ids)) or real(ids))
    prompt = f"{MATH_PROMPT} - a prompt this test alone sends"
    resp = await r.acompletion(model="auto", messages=user(prompt))
    assert resp._hidden_params["prefill_routing"]["reason"] == "retry: math-model failed this request"
    assert calls == [1]  # two decisions (the failed attempt's and the retry's), one encoder pass
    assert resp._hidden_params["prefill_routing"]["cached"] is True


async def test_a_new_request_sharing_its_metadata_dict_with_a_retried_one_is_not_taken_for_a_retry(
        bundle_dir: Path, tmp_path: Path) -> None:
    """litellm writes its retry breadcrumbs into the caller's metadata dict: an application passing one dict to every
    request must still get each request routed from scratch (before: math-model was skipped as 'failed' forever)."""
    from litellm_prefill_router import flush_logging

    log = tmp_path / "d.jsonl"
    r = failing_math_router(bundle_dir, decision_log=str(log))
    md = {"app": "chat"}
    for _ in range(3):
        resp = await r.acompletion(model="auto", messages=user(MATH_PROMPT), metadata=md)
        assert resp._hidden_params["prefill_routing"]["reason"] == "retry: math-model failed this request"
    await flush_logging()  # litellm's logging reads the shared dict after the next requests have written into it
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["decision"]["target"] == "math-model", x["outcome"]["success"]) for x in rows] == \
        [(True, False), (False, True)] * 3  # every request tried its best target first, then was rerouted


async def test_concurrent_requests_sharing_one_metadata_dict_each_carry_their_own_decision(
        bundle_dir: Path, tmp_path: Path) -> None:
    """An application passing one metadata dict to concurrent requests (litellm writes into it, and its logging
    reads it after the call): each response, decision-log line and retry has its own request's decision (before:
    half the responses and log lines carried another request's, and math requests' retries avoided the deployment
    another request had been served by)."""
    from litellm_prefill_router import flush_logging

    log = tmp_path / "d.jsonl"
    r = failing_math_router(bundle_dir, decision_log=str(log), decision_log_responses=True)
    md = {"app": "chat"}
    prompts = [MATH_PROMPT, HIST_PROMPT] * 4  # 4 failures: math-model is not cooled down (allowed_fails=5)
    resps = await asyncio.gather(*(r.acompletion(model="auto", messages=user(p), metadata=md) for p in prompts))
    await flush_logging()
    for prompt, resp in zip(prompts, resps):
        d = resp._hidden_params["prefill_routing"]
        assert resp.choices[0].message.content == f"answer from {d['target']}"  # the decision of who answered
        assert d["reason"] == ("retry: math-model failed this request" if prompt == MATH_PROMPT else "policy")
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted((x["decision"]["target"], x["outcome"]["success"]) for x in rows if not x["outcome"]["success"]) \
        == [("math-model", False)] * 4
    answered = [x for x in rows if x["outcome"]["success"]]
    assert len(answered) == 8 and all(x["response"] == f"answer from {x['decision']['target']}" for x in answered)
    assert len({x["decision"]["trace_id"] for x in answered}) == 8


def test_sync_completions_from_threads_sharing_one_metadata_dict_each_carry_their_own_decision(
        router: PrefillRouter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    md = {"app": "chat"}
    prompts = [MATH_PROMPT, HIST_PROMPT] * 6
    with ThreadPoolExecutor(6) as pool:
        resps = list(pool.map(lambda p: router.completion(model="auto", messages=user(p), metadata=md), prompts))
    assert [r._hidden_params["prefill_routing"]["target"] for r in resps] == ["math-model", "history-model"] * 6
    assert all(r.choices[0].message.content == f"answer from {r._hidden_params['prefill_routing']['target']}"
               for r in resps)


def test_a_retry_of_a_sync_completion_is_rerouted_too(bundle_dir: Path) -> None:
    resp = failing_math_router(bundle_dir).completion(model="auto", messages=user(MATH_PROMPT))
    d = resp._hidden_params["prefill_routing"]
    assert d["reason"] == "retry: math-model failed this request" and d["target"] != "math-model"
    assert resp.choices[0].message.content == f"answer from {d['target']}"


async def test_a_retry_is_rerouted_for_the_responses_and_anthropic_apis_too(bundle_dir: Path) -> None:
    port = free_port()  # nothing listens on it: math-model's calls are refused
    ml = model_list(**{"math-model": {"api_base": f"http://127.0.0.1:{port}/v1", "max_retries": 0}})
    del ml[0]["litellm_params"]["mock_response"]
    r = PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0, allowed_fails=5,
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    resp = await r.aresponses(model="auto", input=MATH_PROMPT)
    anthropic = await r.aanthropic_messages(model="auto", messages=user(MATH_PROMPT), max_tokens=32)
    for d in (resp._hidden_params["prefill_routing"], anthropic["_hidden_params"]["prefill_routing"]):
        assert d["reason"] == "retry: math-model failed this request" and d["target"] != "math-model"
        assert [f["target"] for f in d["failed_attempts"]] == ["math-model"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deployment_that_times_out_is_retried_on_the_next_best_target(stream: bool, bundle_dir: Path) -> None:
    """math-model's provider takes 3 s; its deployment's timeout is 0.5 s (a local OpenAI-compatible endpoint)."""
    from fake_openai import FakeOpenAI

    with FakeOpenAI(slow={"math-model": 3.0}) as fake:
        ml = live_model_list(fake.url)
        for dep in ml:
            dep["litellm_params"]["timeout"] = 0.5
        r = PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0,
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
        started = time.perf_counter()
        resp = await r.acompletion(model="auto", messages=user(MATH_PROMPT), stream=stream)
        text = "".join([c.choices[0].delta.content or "" async for c in resp if c.choices]) if stream \
            else resp.choices[0].message.content
        took = time.perf_counter() - started
    d = resp._hidden_params["prefill_routing"]
    assert d["reason"] == "retry: math-model failed this request" and d["target"] != "math-model"
    assert [m["model"] for m in fake.requests] == ["math-model", d["target"]]
    assert text == f"answer from {d['target']}" and took < 2.5  # not the slow provider's 3 s


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic", "google"])
async def test_a_stream_of_every_api_whose_first_choice_is_unreachable_is_retried_on_the_next_best_target(
        api: str, bundle_dir: Path) -> None:
    from fake_openai import FakeOpenAI

    port = free_port()  # nothing listens on it: math-model's calls are refused
    with FakeOpenAI() as fake:
        ml = live_model_list(fake.url)
        ml[0]["litellm_params"].update(api_base=f"http://127.0.0.1:{port}/v1", max_retries=0)  # math-model's
        r = PrefillRouter(model_list=ml, routing_strategy="prefill", num_retries=1, retry_after=0, allowed_fails=5,
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
        stream = await stream_of(r, api, MATH_PROMPT)
        d = stream._hidden_params["prefill_routing"]
        assert d["reason"] == "retry: math-model failed this request" and d["target"] != "math-model"
        assert streamed_text(api, [c async for c in stream]) == f"answer from {d['target']}"


async def test_a_stream_that_fails_before_its_first_chunk_is_answered_elsewhere_and_says_by_whom(
        bundle_dir: Path) -> None:
    """math-model's provider opens the stream and sends an error event (an overloaded provider). litellm 1.108+
    reads a stream's first chunk before returning it, so this is a failed attempt like any other: the retry goes to
    the next-best target and the stream carries that decision. litellm 1.102 returns the stream first and answers
    from the group's ``fallbacks`` once the error arrives: the stream then carries no decision of the bundle (which
    does not route that group), not the failed route's."""
    from fake_openai import FakeOpenAI

    from litellm_prefill_router.litellm_support import installed_litellm

    with FakeOpenAI(broken_streams=("math-model",)) as fake:
        cheap = cheap_group()
        cheap["litellm_params"] = {"model": "openai/cheap", "api_key": "sk-test", "api_base": fake.url}
        r = PrefillRouter(model_list=[*live_model_list(fake.url), cheap], routing_strategy="prefill", num_retries=1,
                          retry_after=0, fallbacks=[{"auto": ["cheap"]}],
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
        stream = await r.acompletion(model="auto", messages=user(MATH_PROMPT), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    d = stream._hidden_params.get("prefill_routing")
    if Version(installed_litellm()) >= Version("1.108"):
        assert d is not None and d["reason"] == "retry: math-model failed this request"
        assert [m["model"] for m in fake.requests] == ["math-model", d["target"]]
        assert text == f"answer from {d['target']}"
    else:
        assert [m["model"] for m in fake.requests] == ["math-model", "cheap"]
        assert text == "answer from cheap" and d is None


async def test_a_retry_stays_on_the_chosen_target_when_it_has_another_deployment(bundle_dir: Path) -> None:
    second = {"model_name": "auto", "model_info": {"prefill_target": "math-model", "id": "math-2",
                                                   "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
              "litellm_params": {"model": "openai/math-model-2", "api_key": "k",
                                 "mock_response": "answer from math-model's second deployment"}}
    for _ in range(4):  # the first attempt may already pick the second deployment (simple-shuffle)
        resp = await failing_math_router(bundle_dir, second).acompletion(model="auto", messages=user(MATH_PROMPT))
        assert resp.choices[0].message.content == "answer from math-model's second deployment"
        d = resp._hidden_params["prefill_routing"]
        assert d["target"] == "math-model" and d["reason"] == "policy" and d["deployment_id"] == "math-2"


async def test_retries_go_to_the_same_target_when_rerouting_is_off_or_the_request_pins_it(bundle_dir: Path) -> None:
    with pytest.raises(litellm.InternalServerError, match="LiteLLM Retried: 1 times"):
        await failing_math_router(bundle_dir, reroute_retries=False).acompletion(
            model="auto", messages=user(MATH_PROMPT))
    with pytest.raises(litellm.InternalServerError, match="LiteLLM Retried: 1 times"):
        await failing_math_router(bundle_dir).acompletion(
            model="auto", messages=user(MATH_PROMPT), metadata={"prefill": {"pin_model": "math-model"}})


async def test_inference_failure_sends_the_request_to_the_fallback_deployment(router: PrefillRouter,
                                                                              caplog: pytest.LogCaptureFixture,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(prompt: object, timeout_s: float | None = None) -> None:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(router.prefill_strategy.predictor, "apredict_one", boom)
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        resp = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    d = resp._hidden_params["prefill_routing"]
    assert d["reason"].startswith("fallback: inference failed") and "exploded" in d["reason"]
    assert d["target"] == router.prefill_strategy.fallback_target
    assert "inference failed" in caplog.text


def slow_encoder(router: PrefillRouter, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    encoder = router.prefill_strategy.predictor.encoder
    real = type(encoder).__call__

    def slow(self, ids, mask):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return real(self, ids, mask)

    monkeypatch.setattr(type(encoder), "__call__", slow)


async def test_a_request_whose_prediction_is_late_goes_to_the_fallback_target_at_the_decision_timeout(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # a predictor of its own (no other test shares these settings): its slow encoder calls may outlive the test
    args = {"bundle": str(bundle_dir), "preset": "max-quality", "prediction_cache_size": 0, "max_batch_size": 3}
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={**args, "decision_timeout_s": 0.2})
    fallback = r.prefill_strategy.fallback_target
    assert fallback != "math-model"  # so the test tells a timed-out route from a predicted one
    await r.acompletion(model="auto", messages=user(HIST_PROMPT))  # warm-up: litellm builds its client (~0.3 s)
    slow_encoder(r, monkeypatch, 1.5)
    started = time.perf_counter()
    responses = await asyncio.gather(*(r.acompletion(model="auto", messages=user(MATH_PROMPT)) for _ in range(3)))
    assert time.perf_counter() - started < 1.2  # nobody waited for the 1.5 s encoder
    for resp in responses:
        d = resp._hidden_params["prefill_routing"]
        assert d["target"] == fallback and d["reason"] == "fallback: routing timed out (no prediction within 0.2 s)"
        assert resp.choices[0].message.content == f"answer from {fallback}"
    sync = r.completion(model="auto", messages=user(MATH_PROMPT))
    assert sync._hidden_params["prefill_routing"]["reason"].startswith("fallback: routing timed out")
    warned = [m for m in caplog.messages if "routing timed out" in m]  # a burst is one warning, not one per request
    assert len(warned) == 1 and "for 1 request(s)" in warned[0] and "the encoder is overloaded" in warned[0]

    strict = PrefillRouter(model_list=model_list(), routing_strategy="prefill", num_retries=0,
                           routing_strategy_args={**args, "decision_timeout_s": 0.2, "on_error": "raise"})
    slow_encoder(strict, monkeypatch, 1.5)
    with pytest.raises(Exception, match="prefill routing timed out"):
        await strict.acompletion(model="auto", messages=user(MATH_PROMPT))
    with pytest.raises(ConfigurationError, match="decision_timeout_s"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={**args, "decision_timeout_s": 0})


async def test_on_error_raise_surfaces_inference_failures(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill", num_retries=0,
                      routing_strategy_args={"bundle": str(bundle_dir), "on_error": "raise"})

    async def boom(prompt: object, timeout_s: float | None = None) -> None:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(r.prefill_strategy.predictor, "apredict_one", boom)
    with pytest.raises(Exception, match="prefill routing failed"):
        await r.acompletion(model="auto", messages=user(MATH_PROMPT))


def test_flush_logging_at_the_end_of_each_asyncio_run_has_written_that_runs_decisions(bundle_dir: Path,
                                                                                       tmp_path: Path) -> None:
    """A script that routes inside ``asyncio.run`` and calls flush_logging() before returning finds its decision log
    complete at that point - before, flush_logging returned before litellm had queued the last call's callbacks, the
    line came late (from litellm's exit handler) or, on Python 3.13, was lost with a 10 s wait in the next run."""
    from litellm_prefill_router import flush_logging

    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log)})

    async def route_then_flush(prompt: str) -> tuple[int, float]:
        await r.acompletion(model="auto", messages=user(prompt))
        started = time.perf_counter()
        await flush_logging(timeout=20)
        return (len(log.read_text().splitlines()) if log.exists() else 0), time.perf_counter() - started

    runs = [asyncio.run(route_then_flush(p)) for p in (MATH_PROMPT, HIST_PROMPT, MATH_PROMPT)]
    assert [lines for lines, _ in runs] == [1, 2, 3]
    assert max(waited for _, waited in runs) < 5


async def test_flush_logging_waits_for_a_report_litellm_writes_from_one_of_its_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm 1.102 reports a Responses API call twice - from its executor's threads and on its async worker - and
    the first report writes the line: flush_logging returned while a thread was still writing it (the Responses
    call's line was missing from the log in ~1 of 3 runs)."""
    import threading

    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.decision_logger import DecisionLogger, register_decision_log

    written: list[str] = []

    def slow_write(self: DecisionLogger, kwargs: dict, ok: bool, *args: object) -> None:
        time.sleep(0.5)
        written.append(kwargs["litellm_call_id"])

    monkeypatch.setattr(DecisionLogger, "_write", slow_write)
    logger = register_decision_log()
    thread = threading.Thread(target=logger.log_success_event, args=({"litellm_call_id": "c1"}, None, None, None))
    thread.start()
    time.sleep(0.1)  # the thread is writing
    assert logger.wait_written(0.01) is False
    await flush_logging()
    assert written == ["c1"]
    thread.join()


async def test_decision_log_appends_decision_and_outcome(bundle_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log)})
    await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    await r.acompletion(model="auto", messages=user(HIST_PROMPT))
    for _ in range(50):
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        await asyncio.sleep(0.1)
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(rows) == 2
    assert {r_["decision"]["target"] for r_ in rows} <= {"math-model", "history-model", "generalist"}
    assert all(r_["outcome"]["success"] and r_["outcome"]["latency_s"] is not None for r_ in rows)
    for row in rows:  # saved vs the dearest candidate (generalist) at this call's usage
        base, out = row["decision"]["baseline"], row["outcome"]
        assert base["target"] == "generalist"
        expected = (base["input_cost_per_token"] * out["prompt_tokens"]
                    + base["output_cost_per_token"] * out["completion_tokens"] - out["response_cost"])
        assert out["savings_usd"] == pytest.approx(expected)
        assert (out["savings_usd"] > 0) == (row["decision"]["target"] != "generalist")


async def test_the_decision_log_keeps_every_call_when_litellms_callback_lists_are_full(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A process that built ~100 litellm Routers (each keeps its callbacks registered until discarded) has no room
    left in litellm's callback lists: litellm adds no logger past MAX_CALLBACKS, so the decision log and the metrics
    missed every call (before: 0 of 3 lines). The decision logger now holds its place past the cap, and says so."""
    from litellm.constants import MAX_CALLBACKS

    from litellm_prefill_router import decision_logger, flush_logging

    def another_routers_callback(*args: object, **kwargs: object) -> None:
        return None

    for name in ("success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback"):
        monkeypatch.setattr(litellm, name, [another_routers_callback] * MAX_CALLBACKS)
    monkeypatch.setattr(decision_logger, "_WARNED_FULL", False)
    log = tmp_path / "decisions.jsonl"
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log)})
    assert "litellm's callback lists are full" in caplog.text and "router.discard()" in caplog.text
    for prompt in (MATH_PROMPT, HIST_PROMPT, MATH_PROMPT):
        await r.acompletion(model="auto", messages=user(prompt))
    await flush_logging()
    assert log.exists() and len(log.read_text().splitlines()) == 3


async def test_the_decision_log_has_one_line_per_call_whatever_the_api(bundle_dir: Path, tmp_path: Path) -> None:
    # litellm 1.102 reports each Responses API success twice (same litellm_call_id)
    from litellm_prefill_router import flush_logging

    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log),
                                             "preset": "max-quality"})
    await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    await r.aresponses(model="auto", input=HIST_PROMPT)
    await r.atext_completion(model="auto", prompt=HIST_PROMPT)
    await r.aanthropic_messages(model="auto", max_tokens=16, messages=user(MATH_PROMPT))
    await flush_logging()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [row["decision"]["target"] for row in rows] == ["math-model", "history-model", "history-model",
                                                            "math-model"]
    assert len({row["litellm_call_id"] for row in rows}) == 4
    assert all(row["response_id"] and row["outcome"]["savings_usd"] > 0 for row in rows)


async def test_each_decision_reaches_litellms_standard_logging_payload_as_its_routing_decision(
        router: PrefillRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    # spend logs, Datadog LLM Observability router spans and the proxy's savings figures read this record
    import sys

    from litellm.integrations.custom_logger import CustomLogger

    # a process without the proxy server (other tests' litellm complexity routers import it to price their baseline)
    monkeypatch.delitem(sys.modules, "litellm.proxy.proxy_server", raising=False)

    from litellm_prefill_router import flush_logging

    seen: list[dict] = []

    class Spy(CustomLogger):
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
            seen.append(kwargs["standard_logging_object"]["metadata"]["routing_decision"])

    spy = Spy()
    litellm.callbacks.append(spy)
    try:
        await router.acompletion(model="auto", messages=user(MATH_PROMPT))
        await router.acompletion(model="auto", messages=[])
        await flush_logging()
    finally:
        litellm.callbacks.remove(spy)
    routed, fallback = seen
    assert routed["router_type"] == "quality" and routed["router_model_name"] == "auto"
    assert routed["routed_model"] == "math-model" and routed["cause"] == "classifier_plugin"
    assert set(routed["classifier_probabilities"]) == {"math-model", "history-model", "generalist"}
    assert routed["score"] == routed["classifier_probabilities"]["math-model"] > 0.5
    assert routed["classifier_cost"] == 0.0
    # outside the proxy litellm would import its proxy server (~1.7 s on the event loop) to price the baseline, and
    # price it from the public cost map: left to the decision log's savings_usd (the proxy test checks the baseline)
    assert "savings_baseline_model" not in routed
    assert fallback["cause"] == "default_fallback"
    assert fallback["routed_model"] == router.prefill_strategy.fallback_target


async def test_two_routers_with_their_own_decision_logs_each_write_their_own_file(bundle_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """litellm keeps one callback per class: the logger must still tell the routers' files apart."""
    from litellm_prefill_router import flush_logging

    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    routers = [PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                             routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(p),
                                                    "decision_log_messages": i == 0})
               for i, p in enumerate(logs)]
    await routers[0].acompletion(model="auto", messages=user(MATH_PROMPT))
    for _ in range(2):
        await routers[1].acompletion(model="auto", messages=user(HIST_PROMPT))
    await flush_logging()
    a, b = ([json.loads(x) for x in p.read_text().splitlines()] for p in logs)
    assert len(a) == 1 and len(b) == 2
    assert a[0]["messages"] == user(MATH_PROMPT) and all("messages" not in r for r in b)


async def test_an_unpriced_deployment_added_later_is_left_out_instead_of_failing_requests(
        router: PrefillRouter, caplog: pytest.LogCaptureFixture) -> None:
    router.add_deployment(litellm.types.router.Deployment(
        model_name="auto", litellm_params={"model": "openai/later-added-unpriced", "api_key": "k",
                                           "mock_response": "answer from later"},
        model_info={"id": "later-1", "prefill_target": "generalist"}))
    with caplog.at_level(logging.ERROR, logger="litellm_prefill_router"):
        resp = await router.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content == "answer from math-model"
    assert "left out of prefill routing" in caplog.text


async def test_a_deployment_updated_in_place_is_routed_at_its_new_price_and_target(
        bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the proxy's /model/update (Router.upsert_deployment) keeps a deployment's id: before, the strategy kept routing
    # it at the price it had when first seen - a silent wrong route after a price change
    ml = model_list()
    for d in ml:
        d["model_info"]["id"] = f"id-{d['model_info']['prefill_target']}"
    r = PrefillRouter(model_list=ml, routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "tolerance": 1.0})  # the cheapest

    async def route() -> dict:
        return (await r.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]

    before = await route()
    assert before["target"] == "math-model"
    math = next(d for d in ml if d["model_info"]["prefill_target"] == "math-model")

    def updated(**model_info: object) -> litellm.types.router.Deployment:
        return litellm.types.router.Deployment(model_name="auto", litellm_params=math["litellm_params"],
                                               model_info={**math["model_info"], **model_info})

    upsert(r, updated(input_cost_per_token=1e-3, output_cost_per_token=1e-3))
    after = await route()
    assert after["cost_usd"]["math-model"] > 100 * before["cost_usd"]["math-model"]
    assert after["target"] != "math-model"
    upsert(r, updated(prefill_target="no-such-target"))
    with caplog.at_level(logging.ERROR, logger="litellm_prefill_router"):
        left_out = await route()
    assert "math-model" not in left_out["candidates"] and "left out of prefill routing" in caplog.text


def test_building_the_strategy_imports_litellms_lazy_logging_modules_so_later_requests_do_not_stall(
        bundle_dir: Path) -> None:
    # litellm imports its custom-logger registry inside the success logging of the first request, on the event
    # loop (~0.4 s); the plain router below shows that (the control), the prefill router has done it at start-up
    import os
    import subprocess
    import sys

    code = f"""
import asyncio, sys
import litellm
from litellm_prefill_router import PrefillRouter, flush_logging
from litellm_prefill_router.composition import LAZY_LITELLM_MODULES
from conftest import model_list
def loaded(): return [m for m in LAZY_LITELLM_MODULES if m in sys.modules]
async def one(r, model):
    await r.acompletion(model=model, messages=[{{"role": "user", "content": "What is 2 + 2?"}}])
    await flush_logging()
before = loaded()
plain = litellm.Router(model_list=model_list())
asyncio.run(one(plain, "auto"))
after_plain_request = loaded()
for m in LAZY_LITELLM_MODULES: sys.modules.pop(m, None)
r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                  routing_strategy_args={{"bundle": {str(bundle_dir)!r}}})
print(before, after_plain_request, loaded(), sep="|")
async def back_to_back():  # no request's logging drags in the proxy server (a 1.7 s import on the event loop)
    for _ in range(3):
        resp = await r.acompletion(model="auto", messages=[{{"role": "user", "content": "What is 2 + 2?"}}])
    await flush_logging()
asyncio.run(back_to_back())
print("litellm.proxy.proxy_server" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    before, after_plain_request, after_prefill_construction = r.stdout.strip().splitlines()[-2].split("|")
    assert r.stdout.strip().splitlines()[-1] == "False"
    assert before == "[]"
    assert after_prefill_construction == str(importable_lazy_modules())
    # the control: on Python 3.11 a plain router's first request imports them (on the loop); on 3.12 its logging had
    # not imported them yet when the loop ended - either way the prefill router has them before any request
    assert after_plain_request in ("[]", after_prefill_construction)


def test_the_litellm_import_warm_up_tolerates_a_litellm_without_the_module() -> None:
    from litellm_prefill_router.composition import LAZY_LITELLM_MODULES, warm_litellm_imports

    missing = "litellm.no_such_module_in_this_version"
    assert warm_litellm_imports((missing,)) == [missing]
    assert warm_litellm_imports() == [m for m in LAZY_LITELLM_MODULES if m not in importable_lazy_modules()]


def importable_lazy_modules() -> list[str]:
    """The lazily imported litellm modules this environment can import: all of them with the proxy extra; litellm
    1.110's logger registry imports the proxy's hooks (fastapi), so without the extra litellm has none to import."""
    import importlib

    from litellm_prefill_router.composition import LAZY_LITELLM_MODULES

    found = []
    for name in LAZY_LITELLM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        found.append(name)
    return found


def test_intra_op_spinning_from_routing_strategy_args_reaches_the_onnxruntime_sessions(bundle_dir: Path) -> None:
    from test_predictor import spin_waits

    for args, spins in (({}, False), ({"intra_op_spinning": True}, True)):
        r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), **args})
        pred = r.prefill_strategy.predictor
        assert (spin_waits(pred.encoder.session), spin_waits(pred.trunk.session)) == (spins, spins)


def test_max_encoder_batch_size_from_routing_strategy_args_reaches_the_predictor(bundle_dir: Path) -> None:
    default = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                            routing_strategy_args={"bundle": str(bundle_dir)})
    grouped = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                            routing_strategy_args={"bundle": str(bundle_dir), "max_encoder_batch_size": 3})
    assert grouped.prefill_strategy.predictor.max_encoder_batch_size == 3
    # the fp32 test bundle batches its encoder up to max_batch_size by default; settings never share a predictor
    assert default.prefill_strategy.predictor.max_encoder_batch_size == 16
    assert default.prefill_strategy.predictor is not grouped.prefill_strategy.predictor
    with pytest.raises(ConfigurationError, match="max_encoder_batch_size"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "max_encoder_batch_size": 0})


async def test_a_bundle_rewritten_in_place_is_reloaded_without_losing_requests(bundle_copy: Path) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality",
                                             "reload_interval_s": 0.05})
    old_predictor = r.prefill_strategy.predictor
    before = await r.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert before.choices[0].message.content == "answer from history-model"
    rewrite_bundle(bundle_copy, always_cheapest)
    answers: list[str] = []
    deadline = time.time() + 20
    while time.time() < deadline and (not answers or answers[-1] != "answer from math-model"):
        batch = await asyncio.gather(*(r.acompletion(model="auto", messages=user(HIST_PROMPT)) for _ in range(8)))
        answers += [b.choices[0].message.content for b in batch]
        await asyncio.sleep(0.05)
    assert answers[-1] == "answer from math-model"  # the new presets are served
    assert set(answers) <= {"answer from history-model", "answer from math-model"}  # every request answered
    assert r.prefill_strategy.predictor is not old_predictor
    assert r.prefill_strategy.reload_if_changed() is False  # nothing changed since


async def test_each_decision_names_the_bundle_version_and_stats_splits_calls_by_it_across_a_reload(
        bundle_copy: Path, tmp_path: Path) -> None:
    from litellm_prefill_router import flush_logging, load_bundle
    from litellm_prefill_router.log_stats import summarize_log

    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality",
                                             "decision_log": str(log)})
    first = load_bundle(bundle_copy).version
    before = [await r.acompletion(model="auto", messages=user(HIST_PROMPT)) for _ in range(3)]
    rewrite_bundle(bundle_copy, always_cheapest)  # retrained and written over the served directory
    assert r.prefill_strategy.reload_if_changed() is True
    second = load_bundle(bundle_copy).version
    after = [await r.acompletion(model="auto", messages=user(HIST_PROMPT)) for _ in range(2)]
    await flush_logging()
    assert first != second and len(first) == 12
    for resp, version in [(b, first) for b in before] + [(a, second) for a in after]:
        decision = resp._hidden_params["prefill_routing"]
        assert (decision["bundle"], decision["bundle_version"]) == (str(bundle_copy), version)
    bundles = summarize_log(log)["bundles"]
    assert list(bundles) == [first, second]  # in the order they first decided a call
    assert [(b["calls"], b["targets"]) for b in bundles.values()] == [(3, {"history-model": 3}), (2, {"math-model": 2})]
    assert bundles[first]["last_ts"] <= bundles[second]["first_ts"]


def test_a_broken_new_bundle_is_not_served_and_a_fixed_one_is(bundle_copy: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality"})
    strategy = r.prefill_strategy

    def rename_a_target(fields: dict) -> None:  # the deployments name "generalist", which is gone
        for t in fields["targets"]:
            if t["name"] == "generalist":
                t["name"] = "generalist-v2"

    rewrite_bundle(bundle_copy, rename_a_target)
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        assert strategy.reload_if_changed() is False
        assert strategy.reload_if_changed() is False  # the same broken files are not retried
    assert "could not be loaded" in caplog.text and "generalist" in caplog.text
    assert "generalist" in strategy.targets  # still serving the old bundle
    hist = r.completion(model="auto", messages=user(HIST_PROMPT))
    assert hist.choices[0].message.content == "answer from history-model"

    def fix(fields: dict) -> None:
        for t in fields["targets"]:
            t["name"] = t["name"].replace("generalist-v2", "generalist")
        always_cheapest(fields)

    rewrite_bundle(bundle_copy, fix)
    assert strategy.reload_if_changed() is True
    assert r.completion(model="auto", messages=user(HIST_PROMPT)).choices[0].message.content == \
        "answer from math-model"


def test_reload_is_off_unless_asked_for(bundle_copy: Path) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "preset": "max-quality"})
    rewrite_bundle(bundle_copy, always_cheapest)
    for _ in range(3):
        assert r.completion(model="auto", messages=user(HIST_PROMPT)).choices[0].message.content == \
            "answer from history-model"
    with pytest.raises(ConfigurationError, match="reload_interval_s"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_copy), "reload_interval_s": 0})


async def test_stats_sums_up_a_decision_log_routes_failures_cost_and_savings(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.cli import main

    log = tmp_path / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill", num_retries=0,
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log),
                                             "preset": "max-quality"})
    for prompt in (MATH_PROMPT, MATH_PROMPT, HIST_PROMPT):
        await r.acompletion(model="auto", messages=user(prompt))
    await r.acompletion(model="auto", messages=[])  # no text: fallback
    with pytest.raises(Exception, match="provider down"):
        await r.acompletion(model="auto", messages=user(HIST_PROMPT), mock_response=Exception("provider down"))
    await read_a_chunk_and_drop(await r.acompletion(  # the reader stops: an abandoned call, not a failure
        model="auto", messages=user(MATH_PROMPT + " in words"), stream=True, mock_response="one two three four"))
    await flush_logging()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert main(["stats", "--log", str(log), "--json", str(tmp_path / "stats.json")]) == 0
    out = capsys.readouterr().out
    st = json.loads((tmp_path / "stats.json").read_text())
    assert (st["calls"], st["failures"], st["abandoned"]) == (6, 1, 1)
    assert "6 routed calls, 1 failed, 1 abandoned (streams dropped before their end)" in out
    assert st["targets"]["math-model"]["abandoned"] == 1
    header, *_ = [line for line in out.splitlines() if line.lstrip().startswith("target")]
    assert header.split()[:6] == ["target", "calls", "share", "failed", "abandoned", "cost"]
    assert st["targets"]["math-model"]["calls"] == 3 and st["targets"]["history-model"]["failures"] == 1
    assert st["reasons"]["policy"] == 5 and st["reasons"]["fallback: the request has no text to route on"] == 1
    ok = [x for x in rows if x["outcome"]["success"]]
    (dropped,) = [x for x in rows if x["outcome"].get("abandoned")]
    assert dropped["outcome"]["response_cost"] > 0  # what its reader read (counted): in the cost, not the savings
    assert st["cost_usd"] == pytest.approx(sum(x["outcome"]["response_cost"] for x in [*ok, dropped]))
    assert st["savings_usd"] == pytest.approx(sum(x["outcome"]["savings_usd"] for x in ok))
    assert 0 < st["savings_fraction"] < 1 and "saved" in out
    assert main(["stats", "--log", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


async def test_a_dated_decision_log_starts_a_file_per_utc_day_and_stats_feedback_read_them_together(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime, timezone

    from litellm_prefill_router import flush_logging, jsonl
    from litellm_prefill_router.cli import main

    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                             "decision_log": str(tmp_path / "logs" / "decisions-{date}.jsonl")})
    ids = []
    for day, prompt in ((22, MATH_PROMPT), (22, HIST_PROMPT), (23, HIST_PROMPT)):  # 23:59 and 00:01 UTC
        when = datetime(2026, 11, day, 23 if day == 22 else 0, 59 if day == 22 else 1, tzinfo=timezone.utc)
        monkeypatch.setattr(jsonl, "_now", lambda when=when: when)
        resp = await r.acompletion(model="auto", messages=user(prompt))
        await flush_logging()  # the line is written by litellm's logging worker: before the clock moves on
        ids.append(resp._hidden_params["litellm_call_id"])
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["decisions-2026-11-22.jsonl", "decisions-2026-11-23.jsonl"]
    assert [len(f.read_text().splitlines()) for f in files] == [2, 1]
    assert main(["stats", "--log", *map(str, files), "--json", str(tmp_path / "st.json")]) == 0
    st = json.loads((tmp_path / "st.json").read_text())
    assert st["calls"] == 3 and st["log"] == [str(f) for f in files]
    feedback = tmp_path / "fb.jsonl"
    feedback.write_text("".join(json.dumps({"id": i, "thumbs": "up"}) + "\n" for i in ids))
    out = tmp_path / "rows.jsonl"
    assert main(["feedback", "--log", *map(str, files), "--feedback", str(feedback), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3
    assert main(["stats", "--log", str(files[0]), str(tmp_path / "logs" / "decisions-2026-11-24.jsonl")]) == 2
    assert "decisions-2026-11-24.jsonl does not exist" in capsys.readouterr().err


def test_a_decision_log_path_with_an_unknown_placeholder_is_refused(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown placeholders \['\{day\}'\].*\{date\}"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": "logs/{day}.jsonl"})


def test_a_decision_log_this_process_could_not_write_is_refused_at_construction(bundle_dir: Path,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for path, said in ((tmp_path, "is a directory; name a file in it, e.g. "),  # every line was a traceback before
                       (tmp_path / "a-file" / "decisions.jsonl", "a-file is a file, not a directory")):
        with pytest.raises(ConfigurationError, match=said):
            PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(path)})
    nested = tmp_path / "logs" / "{date}" / "decisions-{pid}.jsonl"  # directories still to be made: fine
    PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                  routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(nested)})
    assert not (tmp_path / "logs").exists()  # checked without creating anything


def test_a_decision_log_on_a_read_only_file_system_is_refused_even_for_root(bundle_dir: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:  # what a read-only mount answers, whoever asks
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # os.access says yes to root there: it was accepted
    with pytest.raises(ConfigurationError, match="may not create the directory .*Read-only file system"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(tmp_path / "d.jsonl")})


async def test_a_decision_log_that_stops_being_writable_is_reported_once_and_no_call_is_lost(
        bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from litellm_prefill_router import flush_logging

    log = tmp_path / "logs" / "decisions.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(log)})
    (tmp_path / "logs").write_text("")  # e.g. the disk's mount went away: the directory cannot be made
    with caplog.at_level("WARNING", logger="litellm_prefill_router"):
        answers = [await r.acompletion(model="auto", messages=user(p)) for p in (MATH_PROMPT, HIST_PROMPT)]
        await flush_logging()
        failures = [x for x in caplog.records if "could not write decision log" in x.getMessage()]
        assert len(failures) == 1 and all(a.choices[0].message.content for a in answers)  # once, not per call
        (tmp_path / "logs").unlink()
        await r.acompletion(model="auto", messages=user(MATH_PROMPT))
        await flush_logging()
    assert "is written again" in caplog.text and len(log.read_text().splitlines()) == 1


async def test_the_cost_estimate_never_assumes_a_longer_answer_than_the_request_allows(router: PrefillRouter) -> None:
    manifest = router.prefill_strategy.manifest
    plain = (await router.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    capped = (await router.acompletion(model="auto", messages=user(MATH_PROMPT), max_tokens=3)
              )._hidden_params["prefill_routing"]
    responses = (await router.aresponses(model="auto", input=MATH_PROMPT, max_output_tokens=3)
                 )._hidden_params["prefill_routing"]
    n_in = capped["input_tokens"]
    for t, (pin, pout) in PRICES.items():
        expected = manifest.target(t).expected_output_tokens
        assert expected > 3
        assert plain["cost_usd"][t] == pytest.approx(pin * n_in + pout * expected)
        assert capped["cost_usd"][t] == pytest.approx(pin * n_in + pout * 3)
        assert responses["cost_usd"][t] == pytest.approx(capped["cost_usd"][t])


async def test_shadow_mode_records_the_route_but_serves_as_before(bundle_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.cli import main
    from litellm_prefill_router.records import decision_headers

    log = tmp_path / "shadow.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", "shadow": True,
                                             "shadow_target": "generalist", "decision_log": str(log)})
    for prompt, would in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
        resp = await r.acompletion(model="auto", messages=user(prompt))
        assert resp.choices[0].message.content == "answer from generalist"  # served as before
        d = resp._hidden_params["prefill_routing"]
        assert d["target"] == would and d["shadow"] and d["served_target"] == "generalist"
        headers = decision_headers({"metadata": {"prefill_decision": d}})
        assert headers["x-prefill-target"] == would and headers["x-prefill-served-target"] == "generalist"
    await flush_logging()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["decision"]["target"] for x in rows] == ["math-model", "history-model"]
    assert all(x["outcome"]["savings_usd"] is None for x in rows)  # nothing was routed, so nothing was saved
    assert main(["stats", "--log", str(log), "--json", str(tmp_path / "s.json")]) == 0
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["shadow"]["calls"] == 2 and st["shadow"]["served"] == {"generalist": 2}
    assert 0 < st["shadow"]["estimated_cost_routed_usd"] < st["shadow"]["estimated_cost_served_usd"]
    # the bundle's mean P(correct) of the routes against that of what was served: the specialists beat generalist
    expected = st["shadow"]["expected_accuracy"]
    assert expected["calls"] == 2 and expected["routed"] == pytest.approx(
        np.mean([x["decision"]["p_correct"][x["decision"]["target"]] for x in rows]))
    assert expected["routed"] > expected["served"] == pytest.approx(
        np.mean([x["decision"]["p_correct"]["generalist"] for x in rows]))
    text = capsys.readouterr().out
    assert "shadow mode: 2 calls served as before by generalist 2" in text
    assert f"expected accuracy (the bundle's mean P(correct), 2 calls): the routes {expected['routed']:.3f}" in text

    shuffled = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                             routing_strategy_args={"bundle": str(bundle_dir), "shadow": True})
    d = (await shuffled.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    assert d["shadow"] and d["served_target"] in ("math-model", "history-model", "generalist")


async def test_a_canary_rollout_serves_its_share_by_the_router_keeps_each_user_in_one_arm_and_stats_compares_them(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router import flush_logging
    from litellm_prefill_router.cli import main
    from litellm_prefill_router.records import decision_headers

    log = tmp_path / "rollout.jsonl"
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality", "rollout": 0.5,
                                             "shadow_target": "generalist", "decision_log": str(log)})
    users = [f"user-{i}" for i in range(30)]
    resps = [await r.acompletion(model="auto", messages=user(MATH_PROMPT), user=u) for u in users]
    arms = {u: resp._hidden_params["prefill_routing"]["arm"] for u, resp in zip(users, resps)}
    n_router = sum(a == "router" for a in arms.values())
    assert 5 <= n_router <= 25  # a hash of each user id: about half (fixed by the ids: 30 draws at 0.5)
    for u, resp in zip(users, resps):
        d = resp._hidden_params["prefill_routing"]
        assert d["target"] == "math-model"  # decided alike in both arms
        if arms[u] == "router":
            assert resp.choices[0].message.content == "answer from math-model" and not d.get("shadow")
        else:  # the control arm is served as before, and says so
            assert resp.choices[0].message.content == "answer from generalist" and d["shadow"]
            assert decision_headers({"metadata": {"prefill_decision": d}})["x-prefill-arm"] == "control"
    for u in users[:6]:  # a user comes back: the same arm
        again = await r.acompletion(model="auto", messages=user(HIST_PROMPT), user=u)
        assert again._hidden_params["prefill_routing"]["arm"] == arms[u]
    await flush_logging()
    assert main(["stats", "--log", str(log), "--json", str(tmp_path / "s.json")]) == 0
    st = json.loads((tmp_path / "s.json").read_text())
    back = sum(arms[u] == "router" for u in users[:6])
    assert st["arms"]["router"]["calls"] == n_router + back
    assert st["arms"]["control"]["calls"] == 30 - n_router + 6 - back
    assert st["arms"]["router"]["failure_rate"] == st["arms"]["control"]["failure_rate"] == 0.0
    # the router's arm went to the cheap specialists, the control arm to generalist (0.9 USD/Mtok)
    assert st["arms"]["router"]["cost_per_call_usd"] < st["arms"]["control"]["cost_per_call_usd"]
    assert "rollout arms (router: served by the router's choice; control: served as before)" in capsys.readouterr().out
    # users' feedback (or a judge's scores) joined by call id: quality per arm and per target that answered
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(json.dumps({"id": x["litellm_call_id"],
                                            "thumbs": "down" if x["decision"].get("shadow") else "up"}) + "\n"
                                for x in rows))
    assert main(["stats", "--log", str(log), "--feedback", str(feedback), "--json", str(tmp_path / "f.json")]) == 0
    st = json.loads((tmp_path / "f.json").read_text())
    assert (st["arms"]["router"]["mean_score"], st["arms"]["control"]["mean_score"]) == (1.0, 0.0)
    assert st["arms"]["router"]["scored"] + st["arms"]["control"]["scored"] == len(rows) == st["feedback"]["scored"]
    assert st["feedback"]["by_served_target"]["generalist"]["mean_score"] == 0.0  # the control arm's answers
    assert "feedback: 36 calls scored" in capsys.readouterr().out


def test_a_rollout_arm_is_drawn_once_per_request_and_by_user_when_one_is_named() -> None:
    from litellm_prefill_router.composition import request_arm

    assert request_arm({}, 1.0) is None  # no rollout: no arm
    first = request_arm({"litellm_trace_id": "t1"}, 0.5)
    # a retry of the request (same trace id) keeps its arm
    assert all(request_arm({"litellm_trace_id": "t1"}, 0.5) == first for _ in range(20))
    # an application that passes one metadata dict to every request: each request (trace id) draws its own arm
    assert {request_arm({"litellm_trace_id": f"t{i}"}, 0.5) for i in range(2, 200)} == {"router", "control"}
    assert {request_arm({"user": "u-7"}, 0.5) for _ in range(20)} == {request_arm({"user": "u-7"}, 0.5)}
    assert request_arm({"user": 7}, 0.5) == request_arm({"user": "7"}, 0.5)  # a numeric user id is an id too
    assert request_arm({"user": "u-7"}, 0.0) == "control" and request_arm({}, 0.0) == "control"


async def test_requests_sharing_one_metadata_dict_are_still_split_between_the_rollout_arms(bundle_dir: Path) -> None:
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "rollout": 0.5})
    md = {"app": "chat"}  # litellm writes into the caller's dict; the arm must not stick to it
    arms = {(await r.acompletion(model="auto", messages=user(MATH_PROMPT), metadata=md))
            ._hidden_params["prefill_routing"]["arm"] for _ in range(24)}
    assert arms == {"router", "control"}


def test_shadow_settings_are_checked_at_construction(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="shadow: true or rollout"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "shadow_target": "generalist"})
    with pytest.raises(ConfigurationError, match="rollout applies without it"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "shadow": True, "rollout": 0.2})
    with pytest.raises(ConfigurationError, match="rollout"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "rollout": 1.5})
    with pytest.raises(ConfigurationError, match="shadow_target 'generalist' has no deployment"):
        PrefillRouter(model_list=model_list(targets=("math-model", "history-model")), routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "shadow": True, "shadow_target": "generalist"})


async def test_a_proxy_keys_and_teams_prefill_metadata_is_an_admin_policy_that_wins_over_the_request(
        router: PrefillRouter) -> None:
    # the LiteLLM proxy copies the calling key's and team's metadata into each request's metadata under these names
    async def route(metadata: dict) -> dict:
        resp = await router.acompletion(model="auto", messages=user(MATH_PROMPT), metadata=metadata)
        return resp._hidden_params["prefill_routing"]

    free_tier = {"user_api_key_team_metadata": {"prefill": {"candidates": ["history-model", "generalist"]}}}
    d = await route({**free_tier, "prefill": {"candidates": ["math-model", "generalist"]}})
    assert d["candidates"] == ["generalist"]  # the request can only narrow the team's candidates
    d = await route({"user_api_key_metadata": {"prefill": {"tolerance": 1.0}},
                     "prefill": {"preset": "max-quality"}})
    assert d["policy"]["kind"] == "tolerance" and d["policy"]["value"] == 1.0 and d["target"] == "math-model"
    d = await route({"user_api_key_team_metadata": {"prefill": {"pin_model": "history-model"}},
                     "user_api_key_metadata": {"prefill": {"pin_model": "generalist"}}})
    assert d["target"] == "generalist" and d["reason"] == "pinned"  # the key is more specific than the team
    d = await route({"prefill": {"pin_model": "generalist"}})  # no admin layer: the request decides
    assert d["target"] == "generalist"
    with pytest.raises(Exception, match="user_api_key_metadata"):
        await route({"user_api_key_metadata": {"prefill": "min-cost"}})
