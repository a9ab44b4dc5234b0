from __future__ import annotations

import time
from pathlib import Path

import pytest

from litellm_prefill_router import PromptError
from litellm_prefill_router.predictor import PrefillPredictor
from litellm_prefill_router.prompt import PromptEncoder, content_text, normalise_messages


@pytest.fixture(scope="module")
def encoder(bundle_dir: Path) -> PromptEncoder:
    return PrefillPredictor(bundle_dir).prompts


def test_chat_template_rendering_matches_transformers_apply_chat_template(tiny_encoder: Path,
                                                                          encoder: PromptEncoder) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_encoder))
    msgs = [{"role": "system", "content": "the answer"}, {"role": "user", "content": "what is the integral"},
            {"role": "assistant", "content": "a sum"}, {"role": "user", "content": "why"}]
    expected = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    text, has_text = encoder.render(msgs)
    assert has_text and text == expected
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert encoder.encode(msgs).ids == list(ids)


def test_empty_messages_render_without_text_and_are_flagged(encoder: PromptEncoder) -> None:
    assert encoder.encode([]).has_text is False
    assert encoder.encode([{"role": "user", "content": None}]).has_text is False


def test_image_only_content_parts_are_dropped(encoder: PromptEncoder) -> None:
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    enc = encoder.encode(msgs)
    assert enc.has_text is False
    mixed = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                          {"type": "text", "text": "the king"}]}]
    assert "the king" in encoder.render(mixed)[0]
    assert "data:image" not in encoder.render(mixed)[0]


def test_tool_messages_and_tool_calls_become_text() -> None:
    msgs = normalise_messages([
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"},
    ])
    assert msgs[0] == {"role": "assistant", "content": "[tool call] lookup({\"q\": 1})"}
    assert msgs[1] == {"role": "user", "content": "[tool result] 42"}


def test_a_200k_character_prompt_is_truncated_head_and_tail_quickly(encoder: PromptEncoder) -> None:
    long = "integral " * 25_000 + " empire king war"
    t0 = time.perf_counter()
    enc = encoder.encode(long)
    assert time.perf_counter() - t0 < 2.0
    assert enc.truncated and len(enc.ids) == encoder.max_tokens
    tail_text = encoder.tokenizer.decode(enc.ids[-12:])
    assert "empire" in tail_text and "assistant" in tail_text  # the question and the generation prompt survive


def test_invalid_unicode_is_replaced_not_raised(encoder: PromptEncoder) -> None:
    enc = encoder.encode([{"role": "user", "content": "bad \ud800 surrogate \udfff and the king"}])
    assert enc.has_text
    assert content_text(b"\xff\xfe bytes") .endswith("bytes")


def test_non_list_messages_raise_prompt_error(encoder: PromptEncoder) -> None:
    with pytest.raises(PromptError, match="messages must be"):
        encoder.encode(42)
    with pytest.raises(PromptError, match=r"messages\[0\]"):
        encoder.encode([42])


def test_a_list_of_strings_is_a_list_of_user_messages() -> None:
    # text-completion and embedding inputs; empty strings carry no text
    assert normalise_messages(["the king", "", "the queen"]) == [
        {"role": "user", "content": "the king"}, {"role": "user", "content": "the queen"}]


def test_responses_api_input_items_become_text() -> None:
    msgs = normalise_messages([
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is 6 x 7"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "calc", "arguments": "{\"expr\": \"6*7\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ])
    assert msgs == [{"role": "user", "content": "what is 6 x 7"},
                    {"role": "assistant", "content": "[tool call] calc({\"expr\": \"6*7\"})"},
                    {"role": "user", "content": "[tool result] 42"}]


def test_google_genai_contents_become_text_with_the_model_as_assistant() -> None:
    msgs = normalise_messages([
        {"role": "system", "parts": [{"text": "be brief"}]},
        {"role": "user", "parts": [{"text": "what is 6 x 7"},
                                   {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "calc", "args": {"expr": "6*7"}}}]},
        {"role": "user", "parts": [{"function_response": {"name": "calc", "response": {"value": 42}}}]},
        {"role": "model", "parts": [{"executableCode": {"language": "PYTHON", "code": "print(6*7)"}},
                                    {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42"}}]},
        {"role": "function", "parts": [{"functionResponse": {"name": "calc", "response": "42"}}]},
        {"text": "a bare part is a user turn"},
        {"role": "user", "parts": [{"fileData": {"fileUri": "gs://x"}}]},  # no text: dropped
    ])
    assert msgs == [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is 6 x 7"},
                    {"role": "assistant", "content": "[tool call] calc({\"expr\": \"6*7\"})"},
                    {"role": "user", "content": "[tool result] {\"value\": 42}"},
                    {"role": "assistant", "content": "print(6*7)\n[tool result] 42"},
                    {"role": "user", "content": "[tool result] 42"},
                    {"role": "user", "content": "a bare part is a user turn"}]


def test_anthropic_tool_use_and_tool_result_blocks_become_text() -> None:
    msgs = normalise_messages([
        {"role": "user", "content": [{"type": "text", "text": "what is 6 x 7"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                          {"type": "tool_use", "id": "t1", "name": "calc", "input": {"expr": "6*7"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "42"}]}]},
    ])
    assert msgs == [{"role": "user", "content": "what is 6 x 7"},
                    {"role": "assistant", "content": "calling\n[tool call] calc({\"expr\": \"6*7\"})"},
                    {"role": "user", "content": "[tool result] 42"}]
