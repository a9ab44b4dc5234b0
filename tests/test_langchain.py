"""PrefillRouterRunnable with fake chat models, and ChatLiteLLMRouter over a PrefillRouter."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tracers.context import collect_runs
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from conftest import HIST_PROMPT, MATH_PROMPT, model_list
from langchain_integration import PrefillRouterRunnable
from litellm_prefill_router import ConfigurationError

TARGETS = ["math-model", "history-model", "generalist"]


@pytest.fixture()
def runnable(bundle_dir: Path) -> PrefillRouterRunnable:
    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 100) for t in TARGETS}
    return PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality")


def test_invoke_routes_strings_messages_prompt_values_and_dicts(runnable: PrefillRouterRunnable) -> None:
    assert runnable.invoke(MATH_PROMPT).content == "answer from math-model"
    assert runnable.invoke([SystemMessage("be brief"), HumanMessage(HIST_PROMPT)]).content == \
        "answer from history-model"
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    assert (prompt | runnable).invoke({"q": MATH_PROMPT}).content == "answer from math-model"


def test_dict_inputs_are_routed_on_their_prompt_key_and_passed_through(bundle_dir: Path) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chains = {t: prompt | FakeListChatModel(responses=[f"chain {t}"] * 10) for t in TARGETS}
    r = PrefillRouterRunnable(runnables=chains, bundle=str(bundle_dir), preset="max-quality")
    assert r.invoke({"question": HIST_PROMPT}).content == "chain history-model"
    with pytest.raises(ConfigurationError, match="cannot find the prompt"):
        r.invoke({"unrelated": 1})


async def test_a_dict_input_reaches_chat_model_targets_as_its_prompt(bundle_dir: Path) -> None:
    # a chat model takes no dict: before, LangChain's "Invalid input type <class 'dict'>" on every call
    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 10) for t in TARGETS}
    r = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality")
    assert r.invoke({"question": HIST_PROMPT, "user": "u1"}).content == "answer from history-model"
    assert (await r.ainvoke({"messages": [("human", MATH_PROMPT)]})).content == "answer from math-model"
    assert "".join(c.content for c in r.stream({"input": HIST_PROMPT})) == "answer from history-model"
    assert "".join([c.content async for c in r.astream({"query": MATH_PROMPT})]) == "answer from math-model"
    from langchain_integration.inputs import takes_dicts

    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | models["generalist"]
    assert takes_dicts(chain) and not takes_dicts(models["generalist"].bind(stop=["x"]))
    assert not takes_dicts(models["generalist"].with_fallbacks([models["math-model"]]))


async def test_async_batch_and_streaming_twins(runnable: PrefillRouterRunnable) -> None:
    assert (await runnable.ainvoke(HIST_PROMPT)).content == "answer from history-model"
    assert [m.content for m in runnable.batch([MATH_PROMPT, HIST_PROMPT])] == \
        ["answer from math-model", "answer from history-model"]
    assert [m.content for m in await runnable.abatch([HIST_PROMPT, MATH_PROMPT])] == \
        ["answer from history-model", "answer from math-model"]
    assert "".join(c.content for c in runnable.stream(MATH_PROMPT)) == "answer from math-model"
    assert "".join([c.content async for c in runnable.astream(HIST_PROMPT)]) == "answer from history-model"


async def test_a_stream_its_caller_stops_reading_is_logged_as_abandoned_not_as_a_failure(bundle_dir: Path,
                                                                                          tmp_path: Path) -> None:
    """Before, the GeneratorExit of a closed stream was logged as the call's failure."""
    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 100) for t in TARGETS}  # streamed by character
    log = tmp_path / "lc.jsonl"
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   decision_log=str(log), decision_log_responses=True)
    sync = router.stream(MATH_PROMPT)
    assert next(sync).content == "a"
    sync.close()
    agen = router.astream(HIST_PROMPT)
    assert [(await agen.__anext__()).content, (await agen.__anext__()).content] == ["a", "n"]
    await agen.aclose()
    assert "".join([c.content async for c in router.astream(HIST_PROMPT)]) == "answer from history-model"
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["decision"]["target"], r["outcome"]["success"], r["outcome"].get("abandoned"), r["outcome"]["error"])
            for r in rows] == [
        ("math-model", False, True, "the stream was dropped before its end (1 chunk read from it)"),
        ("history-model", False, True, "the stream was dropped before its end (2 chunks read from it)"),
        ("history-model", True, None, None)]
    assert [r["response"] for r in rows] == ["a", "an", "answer from history-model"]  # what was read
    # feedback on a partial answer is not learned from, and says so
    from litellm_prefill_router.feedback import feedback_rows

    learned, stats = feedback_rows(log, {r["run_id"]: 1.0 for r in rows})
    assert [row["id"] for row in learned] == [rows[2]["run_id"]]
    assert (stats.abandoned_calls, stats.failed_calls) == (2, 0)


def test_tracing_has_one_router_run_with_the_decision_and_a_tagged_child(runnable: PrefillRouterRunnable) -> None:
    with collect_runs() as cb:
        runnable.invoke(MATH_PROMPT)
    (root,) = cb.traced_runs
    assert root.name == "PrefillRouterRunnable"
    md = root.extra["metadata"]
    assert md["prefill_route"] == "math-model" and md["prefill_decision"]["reason"] == "policy"
    (child,) = root.child_runs
    assert "route:math-model" in child.tags and child.outputs is not None


def test_policy_is_configurable_per_call(runnable: PrefillRouterRunnable) -> None:
    configurable = runnable.configurable_fields(tolerance=ConfigurableField(id="tolerance"))
    cheap = configurable.with_config(configurable={"tolerance": 1.0})
    assert cheap.invoke(HIST_PROMPT).content == "answer from math-model"  # cheapest within tau = 1
    assert runnable.invoke(MATH_PROMPT, config={"metadata": {"prefill": {"pin_model": "generalist"}}}).content == \
        "answer from generalist"


def test_calls_with_configurable_fields_reuse_the_loaded_bundle_and_a_rewritten_one_is_loaded_afresh(
        bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm_prefill_router.predictor as predictor_module
    from conftest import always_cheapest, rewrite_bundle

    loads: list[object] = []
    real_load = predictor_module.load_bundle
    monkeypatch.setattr(predictor_module, "load_bundle", lambda b, **kw: loads.append(b) or real_load(b, **kw))
    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 100) for t in TARGETS}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_copy), preset="max-quality")
    configurable = router.configurable_fields(tolerance=ConfigurableField(id="tolerance"))
    assert len(loads) == 1
    # LangChain builds a new PrefillRouterRunnable for each configured call: it must not load the bundle again
    for _ in range(3):
        assert configurable.invoke(HIST_PROMPT, config={"configurable": {"tolerance": 0.0}}).content == \
            "answer from history-model"
        assert configurable.invoke(HIST_PROMPT, config={"configurable": {"tolerance": 1.0}}).content == \
            "answer from math-model"
    assert len(loads) == 3  # once for each setting: the runnable's own, tolerance 0 and tolerance 1
    rewrite_bundle(bundle_copy, always_cheapest)  # retrained: max-quality now picks the cheapest
    fresh = PrefillRouterRunnable(runnables=models, bundle=str(bundle_copy), preset="max-quality")
    assert fresh.invoke(HIST_PROMPT).content == "answer from math-model"
    assert len(loads) == 4


def test_a_misspelt_setting_fails_instead_of_routing_with_the_default_policy(bundle_dir: Path) -> None:
    from pydantic import ValidationError

    models = {t: FakeListChatModel(responses=["x"]) for t in TARGETS}
    with pytest.raises(ValidationError, match="tolerence\n  Extra inputs are not permitted"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), tolerence=0.2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="tolerance\n  Value error, true/false is not a value of this setting"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), tolerance=True)  # read as 1.0 before
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), tolerance=0.2)
    assert router.configurable_fields(tolerance=ConfigurableField(id="t")).with_config(
        configurable={"t": 0.0}).invoke(HIST_PROMPT).content == "x"  # configured copies are still built


def test_mapping_is_validated_against_the_bundle_targets(bundle_dir: Path) -> None:
    fake = FakeListChatModel(responses=["x"])
    with pytest.raises(ConfigurationError, match=r"no runnable for bundle targets \['history-model', 'generalist'\]"
                       r"|no runnable for bundle targets \['generalist', 'history-model'\]"):
        PrefillRouterRunnable(runnables={"math-model": fake}, bundle=str(bundle_dir))
    with pytest.raises(ConfigurationError, match="gpt-9.*are not targets"):
        PrefillRouterRunnable(runnables={"gpt-9": fake, **{t: fake for t in TARGETS}}, bundle=str(bundle_dir))
    partial = PrefillRouterRunnable(runnables={"math-model": fake, "generalist": fake}, bundle=str(bundle_dir),
                                    allow_partial=True)
    assert partial.decide(HIST_PROMPT).target in ("math-model", "generalist")


def test_targets_given_as_model_strings_are_the_chat_models_init_chat_model_builds(bundle_dir: Path) -> None:
    """``runnables={target: "provider:model"}``, as langchain's init_chat_model reads it (langchain and the
    provider's package installed: the dev extra has langchain, the langchain extra langchain-litellm)."""
    pytest.importorskip("langchain.chat_models")
    litellm_chat = pytest.importorskip("langchain_litellm")
    router = PrefillRouterRunnable(runnables={t: f"litellm:openai/{t}" for t in TARGETS}, bundle=str(bundle_dir),
                                   preset="max-quality")
    assert {t: (type(r), r.model) for t, r in router.runnables.items()} == {  # type: ignore[attr-defined]
        t: (litellm_chat.ChatLiteLLM, f"openai/{t}") for t in TARGETS}
    answer = router.invoke(MATH_PROMPT, mock_response="from the mock")  # the call's kwargs reach litellm
    assert answer.content == "from the mock" and router.decide(MATH_PROMPT).target == "math-model"
    # a string beside a chat model; a string init_chat_model cannot build is named with the target
    mixed = PrefillRouterRunnable(runnables={"math-model": "litellm:openai/math-model",
                                             **{t: FakeListChatModel(responses=["x"]) for t in TARGETS[1:]}},
                                  bundle=str(bundle_dir))
    assert isinstance(mixed.runnables["generalist"], FakeListChatModel)
    with pytest.raises(ConfigurationError, match=r"runnables\['math-model'\] = 'nosuchprovider:x': init_chat_model "
                                                 r"could not build it \(ValueError"):
        PrefillRouterRunnable(runnables={"math-model": "nosuchprovider:x", **{t: "litellm:openai/x" for t in
                                                                             TARGETS[1:]}}, bundle=str(bundle_dir))


async def test_chat_litellm_targets_answer_from_a_provider_and_the_log_keeps_their_usage_and_answers(
        bundle_dir: Path, tmp_path: Path) -> None:
    """Each target a ChatLiteLLM on a local OpenAI-compatible endpoint: invoke and stream are routed, and the decision
    log has the provider's usage, the call's cost and the answer."""
    litellm_chat = pytest.importorskip("langchain_litellm")
    from fake_openai import FakeOpenAI

    log = tmp_path / "lc.jsonl"
    with FakeOpenAI() as fake:
        router = PrefillRouterRunnable(
            runnables={t: litellm_chat.ChatLiteLLM(model=f"openai/{t}", api_base=fake.url, api_key="sk-test")
                       for t in TARGETS},
            bundle=str(bundle_dir), preset="max-quality", decision_log=str(log), decision_log_responses=True)
        answer = await router.ainvoke(MATH_PROMPT)
        streamed = "".join([str(c.content) async for c in router.astream(HIST_PROMPT)])
    assert (answer.content, streamed) == ("answer from math-model", "answer from history-model")
    assert [m["model"] for m in fake.requests] == ["math-model", "history-model"]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["decision"]["target"], r["response"], r["outcome"]["prompt_tokens"], r["outcome"]["completion_tokens"])
            for r in rows] == [("math-model", "answer from math-model", 5, 3),
                               ("history-model", "answer from history-model", 5, 3)]
    assert all(r["outcome"]["response_cost"] > 0 and r["outcome"]["savings_usd"] > 0 for r in rows)


def test_chat_litellm_router_over_a_prefill_router(bundle_dir: Path) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("langchain-litellm 0.9+ needs Python 3.11 (the langchain extra leaves it out on 3.10)")
    from langchain_litellm import ChatLiteLLMRouter

    from litellm_prefill_router import PrefillRouter

    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    chat = ChatLiteLLMRouter(router=router, model_name="auto")
    assert chat.invoke(MATH_PROMPT).content == "answer from math-model"
    assert chat.invoke(HIST_PROMPT).content == "answer from history-model"


class ToolCallingFake(BaseChatModel):
    """A chat model that answers with its name, or - with tools bound - calls the first tool with its name."""

    target: str

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:  # type: ignore[no-untyped-def]
        tools = kwargs.get("tools") or []
        results = [m.content for m in messages if isinstance(m, ToolMessage)]
        if tools and not results:
            msg = AIMessage(content="", tool_calls=[{"name": tools[0]["function"]["name"],
                                                     "args": {"target": self.target}, "id": "call-1"}])
        else:
            msg = AIMessage(content=f"answer from {self.target}" + (f" using {results[-1]}" if results else ""))
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def bind_tools(self, tools, **kwargs):  # type: ignore[no-untyped-def,override]
        kwargs.pop("tool_choice", None)
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


class Answer(BaseModel):
    """Which model answered."""

    target: str


class CappedChat(ToolCallingFake):
    """A fake chat model with the answer-length field real chat models have (ChatOpenAI, ChatAnthropic, ...)."""

    max_tokens: int | None = None


def test_the_cost_estimate_stays_under_each_targets_own_answer_limit(bundle_dir: Path) -> None:
    models = {"math-model": CappedChat(target="math-model", max_tokens=3),  # the model's own field
              "history-model": ToolCallingFake(target="history-model").bind(max_tokens=5),  # a bound argument
              "generalist": ToolCallingFake(target="generalist")}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality")
    decider = router._decider
    prices = router._prices(decider)

    def assert_costs(decision, caps: dict) -> None:  # type: ignore[no-untyped-def]
        for t in TARGETS:
            out = min(decider.manifest.target(t).expected_output_tokens, caps.get(t, float("inf")))
            assert decision.cost_usd[t] == pytest.approx(
                prices[t].input_cost_per_token * decision.input_tokens + prices[t].output_cost_per_token * out)

    assert min(decider.manifest.target(t).expected_output_tokens for t in TARGETS) > 5
    assert_costs(router.decide(MATH_PROMPT), {"math-model": 3, "history-model": 5})
    # a call's own limit (router.bind(max_tokens=4) or invoke(..., max_tokens=4)) caps every target
    assert_costs(router.decide(MATH_PROMPT, max_tokens=4), {"math-model": 3, "history-model": 4, "generalist": 4})
    with collect_runs() as cb:
        router.bind(max_tokens=4).invoke(MATH_PROMPT)
    (run,) = cb.traced_runs
    decision = run.extra["metadata"]["prefill_decision"]
    assert decision["cost_usd"]["generalist"] == pytest.approx(
        router.decide(MATH_PROMPT, max_tokens=4).cost_usd["generalist"])
    # through with_structured_output's sequence: the model's own field still limits its calls; langchain drops a
    # bound max_tokens there (the structured call of history-model is not limited), so its estimate is not capped
    assert router.with_structured_output(Answer)._output_caps({}) == {"math-model": 3}


def test_bind_tools_binds_every_target_and_routes_on_the_input(bundle_dir: Path) -> None:
    router = PrefillRouterRunnable(runnables={t: ToolCallingFake(target=t) for t in TARGETS}, bundle=str(bundle_dir),
                                   preset="max-quality")
    with_tools = router.bind_tools([Answer])
    out = with_tools.invoke([HumanMessage(MATH_PROMPT)])
    assert out.tool_calls[0]["name"] == "Answer" and out.tool_calls[0]["args"] == {"target": "math-model"}
    assert with_tools.invoke(HIST_PROMPT).tool_calls[0]["args"] == {"target": "history-model"}
    assert router.invoke(HIST_PROMPT).content == "answer from history-model"  # the original is unchanged
    structured = router.with_structured_output(Answer)
    assert structured.invoke(MATH_PROMPT) == Answer(target="math-model")
    assert structured.invoke(HIST_PROMPT) == Answer(target="history-model")


def test_bind_tools_on_targets_that_cannot_bind_tools_names_the_target(runnable: PrefillRouterRunnable) -> None:
    with pytest.raises(ConfigurationError, match="target 'math-model' .*FakeListChatModel.* bind_tools"):
        runnable.bind_tools([Answer])


def test_the_router_is_the_model_of_a_langchain_tool_calling_agent(bundle_dir: Path) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def lookup(target: str) -> str:
        """Look up notes on a topic."""
        return f"notes for {target}"

    router = PrefillRouterRunnable(runnables={t: ToolCallingFake(target=t) for t in TARGETS}, bundle=str(bundle_dir),
                                   preset="max-quality")
    agent = create_agent(model=router, tools=[lookup])
    messages = agent.invoke({"messages": [HumanMessage(MATH_PROMPT)]})["messages"]
    # model turn (routed on the question) -> tool call -> tool result -> model turn (routed on the conversation)
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert messages[1].tool_calls[0]["name"] == "lookup" and messages[1].tool_calls[0]["args"] == {
        "target": "math-model"}
    assert messages[2].content == "notes for math-model"
    assert messages[3].content == "answer from math-model using notes for math-model"


def test_a_bundle_rewritten_in_place_is_reloaded_by_the_runnable(bundle_copy: Path) -> None:
    import time

    from conftest import always_cheapest, rewrite_bundle

    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 1000) for t in TARGETS}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_copy), preset="max-quality",
                                   reload_interval_s=0.05)
    assert router.invoke(HIST_PROMPT).content == "answer from history-model"
    rewrite_bundle(bundle_copy, always_cheapest)
    deadline, answer = time.time() + 20, ""
    while time.time() < deadline and answer != "answer from math-model":
        answer = router.invoke(HIST_PROMPT).content
        time.sleep(0.05)
    assert answer == "answer from math-model"


class UsageChat(BaseChatModel):
    """A chat model that answers with a fixed text and reports token usage, as provider chat models do (or fails)."""

    text: str
    fail: bool = False

    @property
    def _llm_type(self) -> str:
        return "usage-chat"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.fail:
            raise ConnectionError("provider down")
        message = AIMessage(self.text, id=f"resp-{len(messages)}",
                            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_the_decision_log_of_the_runnable_feeds_stats_feedback_and_judge(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.cli import main

    models = {t: UsageChat(text=f"answer from {t}", fail=t == "generalist") for t in TARGETS}
    log = tmp_path / "lc-{date}.jsonl"
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   decision_log=str(log), decision_log_responses=True)
    with collect_runs() as cb:
        router.invoke(MATH_PROMPT)
    asyncio.run(router.ainvoke([HumanMessage(HIST_PROMPT)]))  # the CLI below runs its own event loops
    assert "".join(c.content for c in router.stream(MATH_PROMPT)) == "answer from math-model"
    with pytest.raises(ConnectionError):
        router.invoke(MATH_PROMPT, config={"metadata": {"prefill": {"pin_model": "generalist"}}})
    (path,) = tmp_path.glob("lc-*.jsonl")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["decision"]["target"] for r in rows] == ["math-model", "history-model", "math-model", "generalist"]
    assert rows[0]["run_id"] == str(cb.traced_runs[0].id)  # the id LangSmith feedback names
    price = router._prices(router._decider)["math-model"]
    first = rows[0]["outcome"]
    assert first["success"] and first["prompt_tokens"] == 10 and first["completion_tokens"] == 5
    assert first["response_cost"] == pytest.approx(price.input_cost_per_token * 10 + price.output_cost_per_token * 5)
    assert rows[0]["decision"]["baseline"]["target"] == "generalist" and first["savings_usd"] > 0
    assert rows[0]["response"] == "answer from math-model" and rows[1]["messages"][0]["content"] == HIST_PROMPT
    assert rows[0]["messages"] == [{"role": "user", "content": MATH_PROMPT}]
    assert not rows[3]["outcome"]["success"] and "provider down" in rows[3]["outcome"]["error"]

    assert main(["stats", "--log", str(path), "--json", str(tmp_path / "st.json")]) == 0
    st = json.loads((tmp_path / "st.json").read_text())
    assert st["calls"] == 4 and st["failures"] == 1 and st["savings_fraction"] > 0
    fb = tmp_path / "fb.jsonl"
    fb.write_text(json.dumps({"id": rows[1]["run_id"], "thumbs": "down"}) + "\n")
    out = tmp_path / "rows.jsonl"
    assert main(["feedback", "--log", str(path), "--feedback", str(fb), "--out", str(out)]) == 0
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["scores"] == {"history-model": 0.0} and row["prompt"][0]["content"] == HIST_PROMPT
    judged = tmp_path / "judged.jsonl"
    assert main(["judge", "--log", str(path), "--judge", "regex:from math", "--out", str(judged)]) == 0
    assert [json.loads(x)["score"] for x in judged.read_text().splitlines()] == [1.0, 0.0, 1.0]


def test_a_decision_log_that_cannot_be_written_does_not_fail_the_call(bundle_dir: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    models = {t: UsageChat(text=f"answer from {t}") for t in TARGETS}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   decision_log=str(blocker / "log.jsonl"))
    blocker.write_text("a file where the log's directory should be")  # after construction, which checks the path
    assert router.invoke(MATH_PROMPT).content == "answer from math-model"
    assert "could not write decision log" in caplog.text
    with pytest.raises(Exception, match="not-a-dir is a file, not a directory"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), decision_log=str(blocker / "log.jsonl"))
    with pytest.raises(Exception, match="unknown placeholders"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), decision_log="x-{hour}.jsonl")


class BrokenStreamChat(UsageChat):
    """Streams its first chunk, then the connection breaks."""

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        yield ChatGenerationChunk(message=AIMessageChunk(content="half an answer"))
        raise ConnectionError("stream broke")


def test_a_failing_target_is_rerouted_to_the_policys_next_pick_when_reroutes_are_allowed(
        bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.log_stats import summarize

    models = {t: UsageChat(text=f"answer from {t}", fail=t == "math-model") for t in TARGETS}
    log = tmp_path / "lc.jsonl"
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality", max_reroutes=1,
                                   decision_log=str(log))
    p = router.decide(MATH_PROMPT).p_correct
    runner_up = max(("history-model", "generalist"), key=p.__getitem__)
    with collect_runs() as cb:
        assert router.invoke(MATH_PROMPT).content == f"answer from {runner_up}"
    (root,) = cb.traced_runs
    assert [(c.tags[-1], c.error is None) for c in root.child_runs] == [("route:math-model", False),
                                                                      (f"route:{runner_up}", True)]
    assert asyncio.run(router.ainvoke(MATH_PROMPT)).content == f"answer from {runner_up}"
    assert "".join(c.content for c in router.stream(MATH_PROMPT)) == f"answer from {runner_up}"

    async def astream() -> str:
        return "".join([c.content async for c in router.astream(MATH_PROMPT)])
    assert asyncio.run(astream()) == f"answer from {runner_up}"

    rows = [json.loads(x) for x in log.read_text().splitlines()]  # per call: the failed attempt, then the reroute
    assert [(r["decision"]["target"], r["outcome"]["success"]) for r in rows] == \
        [("math-model", False), (runner_up, True)] * 4
    assert rows[1]["decision"]["reason"] == "retry: math-model failed this request"
    assert "math-model" not in rows[1]["decision"]["candidates"] and rows[1]["run_id"] == rows[0]["run_id"]
    assert summarize(rows)["reasons"] == {"policy": 4, "retry": 4}


def test_errors_are_raised_without_reroutes_after_a_streamed_chunk_for_a_pin_or_an_unlisted_error(
        bundle_dir: Path) -> None:
    models = {t: UsageChat(text=f"answer from {t}", fail=t == "math-model") for t in TARGETS}
    with pytest.raises(ConnectionError, match="provider down"):  # max_reroutes defaults to 0
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality").invoke(MATH_PROMPT)
    rerouting = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality", max_reroutes=2)
    with pytest.raises(ConnectionError):
        rerouting.invoke(MATH_PROMPT, config={"metadata": {"prefill": {"pin_model": "math-model"}}})
    with pytest.raises(ConnectionError):
        rerouting.model_copy(update={"reroute_on": (TimeoutError,)}).invoke(MATH_PROMPT)
    all_down = {t: UsageChat(text="", fail=True) for t in TARGETS}
    with pytest.raises(ConnectionError):  # every target failed: the last error
        PrefillRouterRunnable(runnables=all_down, bundle=str(bundle_dir), max_reroutes=5).invoke(MATH_PROMPT)
    broken = {**models, "math-model": BrokenStreamChat(text="")}
    chunks: list[str] = []
    with pytest.raises(ConnectionError, match="stream broke"):  # the caller already has part of math-model's answer
        for c in rerouting.model_copy(update={"runnables": broken}).stream(MATH_PROMPT):
            chunks.append(c.content)
    assert chunks == ["half an answer"]


def test_the_runnables_metrics_count_its_calls_under_its_name_reroutes_included(bundle_dir: Path) -> None:
    from conftest import PRICES

    REGISTRY = pytest.importorskip("prometheus_client", reason="the `metrics` extra is not installed").REGISTRY

    models = {t: UsageChat(text=f"answer from {t}", fail=t == "math-model") for t in TARGETS}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality", max_reroutes=1,
                                   metrics=True).with_config(run_name="ignored")  # the label is the runnable's name
    name = "PrefillRouterRunnable"

    def value(metric: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(metric, {"model_group": name, **labels}) or 0.0

    series = [("prefill_router_decisions_total", {"target": "history-model", "reason": "policy"}),
              ("prefill_router_calls_total", {"target": "history-model", "outcome": "success"}),
              ("prefill_router_calls_total", {"target": "math-model", "outcome": "failure"}),
              ("prefill_router_decisions_total", {"target": "generalist", "reason": "retry"}),
              ("prefill_router_decisions_total", {"target": "history-model", "reason": "retry"}),
              ("prefill_router_cost_usd_total", {"target": "history-model"})]
    before = [value(m, **labels) for m, labels in series]
    assert router.invoke(HIST_PROMPT).content == "answer from history-model"
    assert asyncio.run(router.ainvoke(MATH_PROMPT)).content != "answer from math-model"  # rerouted
    hist, hist_ok, math_failed, retry_gen, retry_hist, hist_cost = (value(m, **labels) - b
                                                                    for (m, labels), b in zip(series, before))
    assert (hist, hist_ok, math_failed, retry_gen + retry_hist) == (1, 1, 1, 1)
    one_call = PRICES["history-model"][0] * 10 + PRICES["history-model"][1] * 5  # one call's usage: 10 in, 5 out
    assert hist_cost == pytest.approx(one_call * (1 + retry_hist))


def test_a_prompt_seen_again_is_decided_from_the_prediction_cache_unless_the_cache_is_off(bundle_dir: Path) -> None:
    from pydantic import ValidationError

    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 10) for t in TARGETS}
    prompt = f"{MATH_PROMPT} - asked twice by the runnable's cache test"
    cached = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality")
    first, again = cached.decide(prompt), cached.decide(prompt)
    assert (first.cached, again.cached) == (False, True) and again.p_correct == first.p_correct
    uncached = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                     prediction_cache_size=0)
    assert [uncached.decide(prompt).cached for _ in range(2)] == [False, False]
    with pytest.raises(ValidationError, match="prediction_cache_size"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), prediction_cache_size=-1)


def test_a_call_whose_prediction_is_late_goes_to_the_fallback_target_at_the_decision_timeout(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pydantic import ValidationError

    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 10) for t in TARGETS}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   prediction_cache_size=7, decision_timeout_s=0.2)  # a predictor of its own
    predictor = router._decider.predictor
    real = predictor.probabilities_for_ids
    monkeypatch.setattr(predictor, "probabilities_for_ids", lambda ids: time.sleep(1.0) or real(ids))
    started = time.perf_counter()
    # prompts no other test sends: a prediction another test cached (same bundle and cache size) would be on time
    answer = router.invoke(f"{MATH_PROMPT} - the runnable's timeout test")
    d = router.decide(f"{MATH_PROMPT} - the runnable's timeout test, again")
    assert time.perf_counter() - started < 0.9
    fallback = router._decider.fallback_target
    assert answer.content == f"answer from {fallback}" and fallback != "math-model"
    assert d.target == fallback and d.reason == "fallback: routing timed out (no prediction within 0.2 s)"
    with pytest.raises(ValidationError, match="decision_timeout_s"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), decision_timeout_s=0)


def test_shadow_mode_records_the_route_and_serves_every_call_by_the_shadow_target(bundle_dir: Path,
                                                                                   tmp_path: Path) -> None:
    from litellm_prefill_router.log_stats import summarize_log

    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 10) for t in TARGETS}
    log = tmp_path / "shadow.jsonl"
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality", shadow=True,
                                   shadow_target="generalist", decision_log=str(log))
    with collect_runs() as cb:
        assert router.invoke(MATH_PROMPT).content == "answer from generalist"  # served as before
    (root,) = cb.traced_runs
    d = root.extra["metadata"]["prefill_decision"]
    assert d["target"] == "math-model" and d["shadow"] and d["served_target"] == "generalist"
    assert "route:generalist" in root.child_runs[0].tags
    assert "".join(c.content for c in router.stream(HIST_PROMPT)) == "answer from generalist"
    (row, streamed) = [json.loads(x) for x in log.read_text().splitlines()]
    assert row["decision"]["target"] == "math-model" and row["outcome"]["model"] == "generalist"
    assert row["outcome"]["savings_usd"] is None and streamed["decision"]["target"] == "history-model"
    assert summarize_log(log)["shadow"]["served"] == {"generalist": 2}
    with pytest.raises(ConfigurationError, match="shadow_target, the runnable serving today: got None"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), shadow=True)
    with pytest.raises(ConfigurationError, match="shadow_target is only used in shadow mode"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), shadow_target="generalist")
    with pytest.raises(ConfigurationError, match="rollout applies without it"):
        PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), shadow=True, shadow_target="generalist",
                              rollout=0.5)


async def test_a_canary_rollout_serves_each_user_from_one_arm_and_stats_compares_the_arms(bundle_dir: Path,
                                                                                        tmp_path: Path) -> None:
    from litellm_prefill_router.log_stats import summarize_log

    models = {t: FakeListChatModel(responses=[f"answer from {t}"] * 100) for t in TARGETS}
    log = tmp_path / "canary.jsonl"
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality", rollout=0.5,
                                   shadow_target="generalist", decision_log=str(log))
    served: dict[str, set[str]] = {}
    for i in [*range(20), 0, 1, 2]:
        out = await router.ainvoke(MATH_PROMPT, config={"metadata": {"user_id": f"user-{i}"}})
        served.setdefault(f"user-{i}", set()).add(out.content)
    assert all(len(answers) == 1 for answers in served.values())  # a returning user is served the same way
    assert set().union(*served.values()) == {"answer from math-model", "answer from generalist"}
    arms = summarize_log(log)["arms"]
    routed = sum(a == {"answer from math-model"} for a in served.values())
    assert arms["router"]["calls"] + arms["control"]["calls"] == 23 and 0 < routed < 20
    assert arms["router"]["calls"] == routed + sum(served[f"user-{i}"] == {"answer from math-model"} for i in (0, 1, 2))
