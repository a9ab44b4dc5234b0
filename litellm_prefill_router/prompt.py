"""Messages -> encoder text -> token ids, without transformers.

The encoder's chat template is rendered with jinja2 the way transformers renders
it (sandboxed environment, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``
and ``tojson``). Only text reaches the encoder: image/audio parts are dropped,
tool calls are rendered as text, and invalid unicode is replaced. Long prompts
keep their head and their tail (the question and the generation prompt usually
sit at the end).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from .errors import PromptError

Message = Mapping[str, Any]

_ROLE_MAP = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "user",
    "function": "user",
    "model": "assistant",  # Google GenAI
}

#: characters kept per allowed token before tokenising, so a 200k-character
#: prompt is never tokenised whole
CHARS_PER_TOKEN_BUDGET = 12


def clean_text(value: object) -> str:
    """Return ``value`` as valid UTF-8 text (lone surrogates and bad bytes replaced)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")


def content_text(content: object) -> str:
    """Text of a message content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, (str, bytes)):
        return clean_text(content)
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                kind = part.get("type")
                if kind in (None, "text", "input_text", "output_text") and "text" in part:
                    parts.append(clean_text(part.get("text")))
                elif kind == "tool_use":  # Anthropic content block
                    parts.append(_call_text(part.get("name"), part.get("input")))
                elif kind == "tool_result":
                    parts.append(_result_text(content_text(part.get("content"))))
            elif isinstance(part, str):
                parts.append(clean_text(part))
        return "\n".join(p for p in parts if p)
    return clean_text(content)


def _call_text(name: object, arguments: object) -> str:
    if not isinstance(arguments, (str, bytes)) and arguments is not None:
        arguments = json.dumps(arguments, ensure_ascii=False, default=str)
    return f"[tool call] {clean_text(name)}({clean_text(arguments)})"


def _result_text(text: str) -> str:
    return f"[tool result] {text}" if text else ""


def _tool_calls_text(message: Message) -> str:
    calls = message.get("tool_calls") or []
    out = []
    for call in calls if isinstance(calls, Sequence) else []:
        fn = call.get("function", {}) if isinstance(call, Mapping) else {}
        if isinstance(fn, Mapping):
            out.append(_call_text(fn.get("name"), fn.get("arguments")))
    return "\n".join(out)


def parts_text(parts: object) -> str:
    """Text of a Google GenAI ``Content``'s ``parts`` (``generate_content``): text parts, function calls and
    responses as tool calls and results, executable code and its result; inline and file data dropped. Both the
    API's camelCase keys and the SDK's snake_case ones."""
    if isinstance(parts, (str, bytes)):
        return clean_text(parts)
    out: list[str] = []
    for part in parts if isinstance(parts, Sequence) else [parts]:
        if isinstance(part, (str, bytes)):
            out.append(clean_text(part))
        elif isinstance(part, Mapping):
            out.append(_part_text(part))
    return "\n".join(p for p in out if p)


def _part_text(part: Mapping[str, Any]) -> str:
    def get(camel: str, snake: str) -> Any:
        return part.get(camel, part.get(snake))

    call, response = get("functionCall", "function_call"), get("functionResponse", "function_response")
    code, result = get("executableCode", "executable_code"), get("codeExecutionResult", "code_execution_result")
    if part.get("text") is not None:
        return clean_text(part.get("text"))
    if isinstance(call, Mapping):
        return _call_text(call.get("name"), call.get("args"))
    if isinstance(response, Mapping):
        value = response.get("response")
        return _result_text(value if isinstance(value, str) else
                            "" if value is None else json.dumps(value, ensure_ascii=False, default=str))
    if isinstance(code, Mapping):
        return clean_text(code.get("code"))
    if isinstance(result, Mapping):
        return _result_text(clean_text(result.get("output")))
    return ""  # inline or file data, or a part this version does not know


def _item_message(item: Message) -> dict[str, str] | None:
    """A Responses API input item that is not a message (``function_call``, ``function_call_output``) as a
    message; None for the items that carry no prompt text (``reasoning``, references)."""
    kind = item.get("type")
    if kind == "function_call":
        return {"role": "assistant", "content": _call_text(item.get("name"), item.get("arguments"))}
    if kind == "function_call_output":
        return {"role": "user", "content": _result_text(content_text(item.get("output")))}
    return None


def is_given(part: object) -> bool:
    """Whether a prompt part given beside the conversation (the Anthropic API's ``system``, the Responses API's
    ``instructions``, Google GenAI's system instruction or ``contents``) says anything: not absent, ``""`` or ``[]``."""
    return not (part is None or part == "" or part == [])


def after_system(system: object, turns: object) -> object:
    """``turns`` (a prompt: a string, one item or a list) after a system prompt (a string, a list of text blocks or
    a message), if there is one."""
    if not is_given(system):
        return turns
    first = system if isinstance(system, Mapping) else {"role": "system", "content": system}
    rest = list(turns) if isinstance(turns, Sequence) and not isinstance(turns, (str, bytes)) else [turns]
    return [first, *rest]


def normalise_messages(messages: object) -> list[dict[str, str]]:
    """Turn a prompt into [{role, content: str}] with text only.

    Accepted: a string; a list of OpenAI chat messages (also Anthropic messages: text, ``tool_use`` and
    ``tool_result`` blocks); a Responses API ``input`` (a string or a list of items: messages,
    ``function_call``, ``function_call_output``); a list of strings (a text-completion or embedding ``input``:
    each string is a user message); Google GenAI ``contents`` (``{role, parts}`` items, role ``model`` for the
    assistant - see :func:`parts_text`).
    """
    if isinstance(messages, (str, bytes)):
        return [{"role": "user", "content": clean_text(messages)}]
    if messages is None:
        return []
    if not isinstance(messages, Sequence):
        raise PromptError(
            f"messages must be a string or a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if isinstance(m, (str, bytes)):
            if text := clean_text(m):
                out.append({"role": "user", "content": text})
            continue
        if not isinstance(m, Mapping):
            raise PromptError(f"messages[{i}] must be a dict with 'role' and 'content' or a string, "
                              f"got {type(m).__name__}")
        if "role" not in m and (item := _item_message(m)) is not None:
            if item["content"]:
                out.append(item)
            continue
        if not {"role", "content", "parts", "type"} & m.keys():  # a Google GenAI part given as a user turn
            if text := _part_text(m):
                out.append({"role": "user", "content": text})
            continue
        raw_role = clean_text(m.get("role") or "user").lower()
        role = _ROLE_MAP.get(raw_role, "user")
        if "parts" in m and "content" not in m:  # Google GenAI: function responses are tagged in their parts
            text = parts_text(m.get("parts"))
        else:
            text = content_text(m.get("content"))
            if raw_role in ("tool", "function") and text:
                text = f"[tool result] {text}"
        calls = _tool_calls_text(m)
        if calls:
            text = f"{text}\n{calls}" if text else calls
        if text:
            out.append({"role": role, "content": text})
    return out


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_chat_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def check_batch(batch: object) -> None:
    """Refuse one prompt given where a list of prompts belongs: a string is a sequence too (of characters)."""
    if isinstance(batch, (str, bytes, Mapping)):
        raise PromptError(f"a batch of prompts must be a list with one item per prompt, got a "
                          f"{type(batch).__name__}; wrap one prompt in a list ([prompt]), or use predict_one()")


@dataclass(frozen=True)
class EncodedPrompt:
    ids: list[int]
    n_tokens: int  # before truncation
    truncated: bool
    has_text: bool


class PromptEncoder:
    """Render messages with the encoder's chat template and tokenize with head+tail truncation."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        chat_template: str | None,
        max_tokens: int,
        head_fraction: float = 0.25,
        add_generation_prompt: bool = True,
        add_special_tokens: bool = False,
        special_tokens: Mapping[str, str] | None = None,
        pad_token_id: int = 0,
    ) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {max_tokens}")
        self.tokenizer = tokenizer
        self.template = compile_chat_template(chat_template) if chat_template else None
        self.max_tokens = max_tokens
        self.head_fraction = head_fraction
        self.add_generation_prompt = add_generation_prompt
        self.add_special_tokens = add_special_tokens
        self.special_tokens = dict(special_tokens or {})
        self.pad_token_id = pad_token_id

    def render(self, messages: object) -> tuple[str, bool]:
        """Return (encoder text, whether the prompt had any text)."""
        msgs = normalise_messages(messages)
        has_text = any(m["content"].strip() for m in msgs)
        budget = self.max_tokens * CHARS_PER_TOKEN_BUDGET
        msgs = [{"role": m["role"], "content": _clip_chars(m["content"], budget, self.head_fraction)} for m in msgs]
        if self.template is None:
            return "\n\n".join(m["content"] for m in msgs), has_text
        if not msgs:
            msgs = [{"role": "user", "content": ""}]
        try:
            text = self.template.render(
                messages=msgs, add_generation_prompt=self.add_generation_prompt, **self.special_tokens
            )
        except jinja2.exceptions.TemplateError as err:
            raise PromptError(f"the encoder's chat template failed on these messages: {err}") from err
        return text, has_text

    def encode(self, messages: object) -> EncodedPrompt:
        return self.encode_batch([messages])[0]

    def encode_batch(self, batch: Sequence[object]) -> list[EncodedPrompt]:
        """One :class:`EncodedPrompt` per item of ``batch`` (a list of prompts: strings or message lists)."""
        check_batch(batch)
        rendered = [self.render(m) for m in batch]
        encs = self.tokenizer.encode_batch([r[0] for r in rendered], add_special_tokens=self.add_special_tokens)
        out = []
        for (_, has_text), enc in zip(rendered, encs):
            ids = list(enc.ids)
            n = len(ids)
            if n == 0:
                ids = [self._fallback_id()]
            out.append(EncodedPrompt(ids=self._truncate(ids), n_tokens=n, truncated=n > self.max_tokens,
                                     has_text=has_text))
        return out

    def _fallback_id(self) -> int:
        # an empty rendering (no template, no text): feed one pad token
        return self.pad_token_id

    def _truncate(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_tokens:
            return ids
        head = int(self.max_tokens * self.head_fraction)
        tail = self.max_tokens - head
        return ids[:head] + ids[len(ids) - tail:]


def _clip_chars(text: str, budget: int, head_fraction: float) -> str:
    if len(text) <= budget:
        return text
    head = int(budget * head_fraction)
    return text[:head] + text[len(text) - (budget - head):]
