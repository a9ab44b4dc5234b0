"""PrefillRouterRunnable with fake chat models, and ChatLiteLLMRouter over a PrefillRouter."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tracers.context import collect_runs

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


async def test_async_batch_and_streaming_twins(runnable: PrefillRouterRunnable) -> None:
    assert (await runnable.ainvoke(HIST_PROMPT)).content == "answer from history-model"
    assert [m.content for m in runnable.batch([MATH_PROMPT, HIST_PROMPT])] == \
        ["answer from math-model", "answer from history-model"]
    assert [m.content for m in await runnable.abatch([HIST_PROMPT, MATH_PROMPT])] == \
        ["answer from history-model", "answer from math-model"]
    assert "".join(c.content for c in runnable.stream(MATH_PROMPT)) == "answer from math-model"
    assert "".join([c.content async for c in runnable.astream(HIST_PROMPT)]) == "answer from history-model"


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


def test_chat_litellm_router_over_a_prefill_router(bundle_dir: Path) -> None:
    from langchain_litellm import ChatLiteLLMRouter

    from litellm_prefill_router import PrefillRouter

    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    chat = ChatLiteLLMRouter(router=router, model_name="auto")
    assert chat.invoke(MATH_PROMPT).content == "answer from math-model"
    assert chat.invoke(HIST_PROMPT).content == "answer from history-model"
