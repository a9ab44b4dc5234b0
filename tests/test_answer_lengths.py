"""``learn_output_tokens``: cost estimates with each target's answer length learned from its answers instead of the
bundle's training-data length (256 tokens in the test bundle)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from conftest import HIST_PROMPT, MATH_PROMPT, PRICES, model_list
from langchain_integration import PrefillRouterRunnable
from litellm_prefill_router import PrefillRouter, flush_logging
from litellm_prefill_router.answer_lengths import MIN_ANSWERS, AnswerLengths
from litellm_prefill_router.cli import main
from litellm_prefill_router.log_stats import summarize
from litellm_prefill_router.router import prefill_strategies

LONG = "word " * 40  # the mock answer: 20 completion tokens by litellm's count


def expected_cost(target: str, input_tokens: int, answer_tokens: float) -> float:
    price_in, price_out = PRICES[target]
    return price_in * input_tokens + price_out * answer_tokens


def serve(bundle_dir: Path, log: Path, texts: list[str], **kwargs: Any) -> tuple[list[dict], PrefillRouter]:
    router = PrefillRouter(model_list=model_list(**{"math-model": {"mock_response": LONG}}),
                           routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                  "decision_log": str(log), "learn_output_tokens": True})

    async def run() -> list[dict]:
        out = []
        for text in texts:
            resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": text}], **kwargs)
            out.append(resp._hidden_params["prefill_routing"])
            await flush_logging()  # each answer counted before the next decision, as on a quiet router
        return out

    return asyncio.run(run()), router


def math_prompts(n: int) -> list[str]:
    return [f"{MATH_PROMPT} {'again ' * (i % 5)}" for i in range(n)]


def test_cost_estimates_use_the_answers_lengths_and_scale_targets_without_answers_alike(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "d.jsonl"
    decisions, router = serve(bundle_dir, log, math_prompts(MIN_ANSWERS + 1) + [HIST_PROMPT])
    assert {d["target"] for d in decisions[:MIN_ANSWERS + 1]} == {"math-model"}
    first, later = decisions[0], decisions[MIN_ANSWERS]
    for t in ("math-model", "history-model", "generalist"):  # before any answer: the bundle's 256 tokens
        assert first["cost_usd"][t] == pytest.approx(expected_cost(t, first["input_tokens"], 256))
    # after 20 answers of 20 tokens: math-model's 20; the others' 256 scaled by the group's 20 / 256
    for t in ("math-model", "history-model", "generalist"):
        assert later["cost_usd"][t] == pytest.approx(expected_cost(t, later["input_tokens"], 20))
    status = prefill_strategies(router)["router"].answer_lengths.status()
    assert status["auto"]["math-model"]["answers"] == MIN_ANSWERS + 1
    assert status["auto"]["math-model"]["mean_tokens"] == 20
    # `stats` compares the estimates with what the calls cost: 256-token estimates were ~8x off, learned ones ~1x
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    before = summarize(lines[:MIN_ANSWERS])["targets"]["math-model"]
    after = summarize(lines[MIN_ANSWERS:MIN_ANSWERS + 1])["targets"]["math-model"]
    assert before["mean_answer_tokens"] == 20 and before["estimate_to_actual_cost"] > 5
    assert 0.7 < after["estimate_to_actual_cost"] < 1.4
    (tmp_path / "first.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[:MIN_ANSWERS]))
    assert main(["stats", "--log", str(tmp_path / "first.jsonl")]) == 0
    assert "x what the calls cost" in capsys.readouterr().out  # and it names learn_output_tokens


def test_a_requests_max_tokens_still_caps_the_learned_length(bundle_dir: Path, tmp_path: Path) -> None:
    decisions, _ = serve(bundle_dir, tmp_path / "d.jsonl", math_prompts(MIN_ANSWERS + 1), max_tokens=8)
    last = decisions[-1]
    assert last["cost_usd"]["math-model"] == pytest.approx(expected_cost("math-model", last["input_tokens"], 8))


def test_a_restarted_router_reads_the_lengths_back_from_its_decision_log(bundle_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    serve(bundle_dir, log, math_prompts(MIN_ANSWERS))
    decisions, router = serve(bundle_dir, log, [HIST_PROMPT])
    status = prefill_strategies(router)["router"].answer_lengths.status()["auto"]
    assert status["math-model"]["answers"] == MIN_ANSWERS and status["history-model"]["answers"] == 1
    # the first decision after the restart already estimates with the learned lengths
    assert decisions[0]["cost_usd"]["generalist"] == \
        pytest.approx(expected_cost("generalist", decisions[0]["input_tokens"], 20))


def test_answers_of_a_target_fill_its_window_and_lengths_are_per_model_group() -> None:
    lengths = AnswerLengths(window=30, min_answers=20)
    bundle = {"a": 100.0, "b": 200.0}
    for i in range(40):
        lengths.observe("g", "a", 50 if i < 10 else 10)  # the window keeps the latest 30: all 10s
    lengths.observe("g", "a", "many")  # not a token count: ignored
    for _ in range(30):
        lengths.observe("g", "a", 0)  # usage not reported (a stream without include_usage on litellm 1.108): ignored
    assert lengths.lengths_for("g", bundle) == {"a": 10.0, "b": pytest.approx(20.0)}  # b: 200 x 10 / 100
    assert lengths.lengths_for("other", bundle) == bundle
    few = AnswerLengths(min_answers=20)
    for _ in range(19):
        few.observe("g", "a", 10)
    assert few.lengths_for("g", bundle) == bundle  # 19 answers: not enough to learn from


class UsageChatModel(BaseChatModel):
    """A chat model whose answers report usage, as provider chat models do."""

    output_tokens: int

    @property
    def _llm_type(self) -> str:
        return "usage-fake"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        usage = {"input_tokens": 5, "output_tokens": self.output_tokens, "total_tokens": 5 + self.output_tokens}
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok", usage_metadata=usage))])


def test_a_langchain_runnable_learns_from_its_answers_usage(bundle_dir: Path) -> None:
    models = {t: UsageChatModel(output_tokens=n) for t, n in
              (("math-model", 40), ("history-model", 10), ("generalist", 10))}
    router = PrefillRouterRunnable(runnables=models, bundle=str(bundle_dir), preset="max-quality",
                                   learn_output_tokens=True)
    for text in math_prompts(MIN_ANSWERS):
        router.invoke(text)
    d = router.decide(MATH_PROMPT)
    assert d.cost_usd["math-model"] == pytest.approx(expected_cost("math-model", d.input_tokens, 40))


def test_stats_leave_answers_with_unreported_usage_out_of_the_mean_answer_length() -> None:
    """litellm 1.108 reports a streamed chat call that did not ask for include_usage with 0 tokens and cost 0."""
    def row(tokens: int, cost: float) -> dict:
        return {"litellm_call_id": f"c{tokens}", "decision": {"target": "math-model", "reason": "policy",
                                                              "cost_usd": {"math-model": 1e-5}},
                "outcome": {"success": True, "response_cost": cost, "prompt_tokens": tokens,
                            "completion_tokens": tokens, "savings_usd": 0.0}}

    stats = summarize([row(40, 2e-5), row(0, 0.0), row(20, 1e-5)])
    assert stats["targets"]["math-model"]["mean_answer_tokens"] == 30
    assert stats["estimate_to_actual_cost"] == pytest.approx(2e-5 / 3e-5)  # the 0-cost call is left out here too
