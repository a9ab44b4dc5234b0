"""What the LangChain router reads from its inputs and its targets: the prompt of a runnable input (str, messages,
PromptValue, dict), a target runnable's answer-length limit (and the chat model a target given as a model string
stands for), and an answer's text (for the decision log), a stream's included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue

from litellm_prefill_router.decider import cap_in, lowest_cap
from litellm_prefill_router.errors import ConfigurationError

_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool",
         "chat": "user", "developer": "system"}


def _message_dict(m: Any) -> dict[str, Any]:
    if isinstance(m, BaseMessage):
        d: dict[str, Any] = {"role": _ROLE.get(m.type, "user"), "content": m.content}
        calls = getattr(m, "tool_calls", None)
        if calls:
            d["tool_calls"] = [{"function": {"name": c.get("name"), "arguments": str(c.get("args"))}} for c in calls]
        return d
    if isinstance(m, (tuple, list)) and len(m) == 2:
        return {"role": _ROLE.get(str(m[0]), str(m[0])), "content": m[1]}
    if isinstance(m, Mapping):
        return dict(m)
    return {"role": "user", "content": str(m)}


def prompt_from_input(value: Any) -> str | list[dict[str, Any]]:
    """What the encoder reads from a runnable input: str, messages, PromptValue or a dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return [_message_dict(m) for m in value.to_messages()]
    if isinstance(value, BaseMessage):
        return [_message_dict(value)]
    if isinstance(value, Mapping):
        return prompt_from_input(prompt_entry(value))
    if isinstance(value, (list, tuple)):
        return [_message_dict(m) for m in value]
    raise ConfigurationError(f"unsupported input type {type(value).__name__}; pass str, messages, a PromptValue "
                             "or a dict")


def _wrapped(node: Any) -> Any:
    """The runnable that ``node`` wraps and calls first: a binding's (``.bind``, ``bind_tools``), a sequence's first
    step (``with_structured_output``), fallbacks' primary; None for a runnable that wraps none."""
    return getattr(node, "bound", None) or getattr(node, "first", None) or getattr(node, "runnable", None)


#: the keys of a dict input the router reads its prompt from, the first present
PROMPT_KEYS = ("messages", "input", "question", "query", "text", "prompt")


def prompt_entry(value: Mapping[str, Any]) -> Any:
    """The prompt a dict input holds: its first :data:`PROMPT_KEYS` entry, as given (str, messages, PromptValue)."""
    for key in PROMPT_KEYS:
        if key in value:
            return value[key]
    raise ConfigurationError(f"cannot find the prompt in a dict input with keys {sorted(value)}; use one of "
                             f"{', '.join(repr(k) for k in PROMPT_KEYS)}")


def takes_dicts(runnable: Any) -> bool:
    """Whether ``runnable`` takes a dict input: not a language model, however bound (``bind_tools``, ``.bind``),
    sequenced (``with_structured_output``: the model first) or given fallbacks."""
    node, depth = runnable, 0
    while (inner := _wrapped(node)) is not None and depth < 16:
        node, depth = inner, depth + 1
    return not isinstance(node, BaseLanguageModel)


def input_for(runnable: Any, value: Any) -> Any:
    """What a target is called with: the router's input - but a dict input's prompt for a language model, which takes
    no dict (a chain with its own prompt template takes the dict as it is)."""
    return prompt_entry(value) if isinstance(value, Mapping) and not takes_dicts(runnable) else value


# where LangChain chat models keep their answer-length limit: OpenAI / Anthropic / LiteLLM / Mistral, OpenAI's newer
# name, Google, Ollama, Hugging Face
CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict", "max_new_tokens")


def output_cap(runnable: Any) -> int | None:
    """The most output tokens ``runnable`` lets its model produce, if it says: bound call arguments
    (``.bind(max_tokens=...)``) and the chat model's own field, through bindings, sequences
    (``with_structured_output``) and fallbacks. None: no limit found."""
    caps: list[int | None] = []
    node, depth = runnable, 0
    while node is not None and depth < 16:
        for name in ("kwargs", "model_kwargs"):  # a binding's call arguments, a chat model's extra arguments
            if isinstance(extra := getattr(node, name, None), Mapping):
                caps.append(cap_in(extra, CAP_FIELDS))
        caps.append(cap_in(node, CAP_FIELDS))
        node, depth = _wrapped(node), depth + 1
    return lowest_cap(*caps)


def as_messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def text_of(out: Any) -> str | None:
    """The answer's text: a message's content (its text parts), or a string output."""
    content = getattr(out, "content", out)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content
                       if isinstance(p, (str, dict)))
    return None


def accumulate(final: Any, chunk: Any, ok: bool) -> tuple[Any, bool]:
    """A stream's chunks added up into its final output (for the decision log), while they can be added."""
    if not ok:
        return None, False
    if final is None:
        return chunk, True
    try:
        return final + chunk, True
    except TypeError:
        return None, False


def chat_model(target: str, model: str) -> Any:
    """The chat model langchain's ``init_chat_model`` builds from a model string (``"provider:model"``) given as
    target ``target``'s runnable; ConfigurationError naming the target where langchain (or the provider's package)
    is missing or the string names no model it can build."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as err:
        raise ConfigurationError(f"runnables[{target!r}] = {model!r}: a model string is built by langchain's "
                                 "init_chat_model - pip install langchain (and the provider's package, e.g. "
                                 "langchain-litellm), or pass the chat model itself") from err
    try:
        return init_chat_model(model)
    except Exception as err:  # noqa: BLE001 - init_chat_model raises many kinds (unknown provider, missing package)
        raise ConfigurationError(f"runnables[{target!r}] = {model!r}: init_chat_model could not build it "
                                 f"({type(err).__name__}: {err}); use 'provider:model' (e.g. "
                                 "'litellm:together_ai/meta-llama/Llama-3.1-8B-Instruct-Turbo'), or pass the chat "
                                 "model itself") from err
