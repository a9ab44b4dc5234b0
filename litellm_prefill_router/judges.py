"""Judges: turn a model's answer into a score in [0, 1] (None = cannot be judged).

Spec strings (``--judge`` or a prompt record's ``judge`` field):

* ``exact`` - normalised exact match with the reference (case, punctuation, articles and whitespace ignored).
* ``choice`` - multiple choice: the answer's option letter ("The answer is (B)", "Answer: b", "B.") vs the
  reference letter.
* ``numeric`` - GSM8K style: the number after ``####`` (else the last number) of the answer vs the reference's,
  commas and units ignored, relative tolerance 1e-6.
* ``regex`` / ``regex:PATTERN`` - 1 if the pattern (default: the reference itself) matches the answer.
* ``python:package.module:function`` (or ``package.module.function``) - any callable (or coroutine function)
  ``f(answer, reference, prompt) -> float | bool | None``.
* ``llm:MODEL_GROUP`` - LLM-as-judge: a LiteLLM deployment grades the answer against a rubric (``--rubric``
  file, default :data:`DEFAULT_RUBRIC`) and replies ``SCORE: x`` with x in [0, 1] (or 0-10).
"""

from __future__ import annotations

import importlib
import inspect
import re
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import PrefillRouterError


class JudgeError(PrefillRouterError):
    """A judge spec is invalid or a judge could not score an answer."""


DEFAULT_RUBRIC = """You are grading an AI assistant's answer.
Question:
{prompt}

Reference answer (may be empty):
{reference}

Assistant's answer:
{answer}

Is the assistant's answer correct and complete with respect to the question (and the reference, if given)?
Reply with one line: SCORE: <a number between 0 and 1>, where 1 means fully correct and 0 means wrong."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalise_text(s: str) -> str:
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(answer: str, reference: str) -> float:
    return float(normalise_text(answer) == normalise_text(reference))


_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*(?:option\s*)?\(?([A-J])\)?(?![a-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])\)?\s*(?:[.):]|$)", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])\s*$"),
]


def extract_choice(answer: str) -> str | None:
    """The option letter an answer commits to, or None."""
    for pat in _CHOICE_PATTERNS:
        m = pat.search(answer)
        if m:
            return m.group(1).upper()
    return None


def choice_match(answer: str, reference: str) -> float | None:
    ref = extract_choice(reference) if len(reference.strip()) > 1 else reference.strip().upper()
    if not ref:
        return None
    got = extract_choice(answer)
    return float(got == ref)


def extract_number(text: str) -> float | None:
    """GSM8K convention: the number after '####' if present, else the last number in the text."""
    tail = text.split("####")[-1] if "####" in text else text
    nums = _NUMBER.findall(tail)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(answer: str, reference: str) -> float | None:
    ref = extract_number(reference)
    if ref is None:
        return None
    got = extract_number(answer)
    return float(got is not None and abs(got - ref) <= 1e-6 * max(1.0, abs(ref)))


Completer = Callable[[str, list[dict[str, str]], int], Awaitable[str]]  # (model group, messages, max tokens) -> reply

#: the LLM judge's answer limit: a one-line "SCORE: x" needs a few tokens; the rest is room for a model that reasons
#: first. It bounds what a judge call can cost (``collect --max-cost`` reserves it before each call).
JUDGE_MAX_TOKENS = 256


@dataclass(frozen=True)
class Judge:
    """A parsed judge spec. ``needs_reference``: rows without a reference get no score."""

    spec: str
    kind: str
    arg: str = ""
    rubric: str = DEFAULT_RUBRIC
    max_tokens: int = JUDGE_MAX_TOKENS  # llm judges: the most tokens the judge may answer with

    @property
    def needs_reference(self) -> bool:
        return self.kind in ("exact", "choice", "numeric") or (self.kind == "regex" and not self.arg)

    async def score(self, answer: str, reference: str | None, prompt: str,
                    complete: Completer | None = None) -> float | None:
        if reference is None and self.needs_reference:
            return None
        ref = reference or ""
        if self.kind == "exact":
            return exact_match(answer, ref)
        if self.kind == "choice":
            return choice_match(answer, ref)
        if self.kind == "numeric":
            return numeric_match(answer, ref)
        if self.kind == "regex":
            return float(re.search(self.arg or re.escape(ref), answer, re.IGNORECASE | re.DOTALL) is not None)
        if self.kind == "python":  # a plain function, or a coroutine function (awaited: it may call a service)
            result = _load_callable(self.arg)(answer, reference, prompt)
            return _clip(await result if inspect.isawaitable(result) else result, self.spec)
        if self.kind == "llm":
            if complete is None:
                raise JudgeError(f"judge {self.spec!r} needs a LiteLLM router to call {self.arg!r}")
            return parse_judge_score(await complete(self.arg, self.messages(answer, ref, prompt), self.max_tokens))
        raise JudgeError(f"unknown judge kind {self.kind!r}")

    def messages(self, answer: str, reference: str | None, prompt: str) -> list[dict[str, str]]:
        """What an llm judge sends to its model group: the rubric filled in."""
        text = self.rubric.replace("{prompt}", prompt).replace("{reference}", reference or "")
        return [{"role": "user", "content": text.replace("{answer}", answer)}]


def _clip(v: Any, spec: str) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as err:
        raise JudgeError(f"judge {spec!r} returned {v!r}; it must return a number in [0, 1], a bool or None") from err
    if not 0.0 <= f <= 1.0:
        raise JudgeError(f"judge {spec!r} returned {f}; scores must lie in [0, 1]")
    return f


_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?", re.IGNORECASE)


def parse_judge_score(reply: str) -> float | None:
    """'SCORE: 0.8' -> 0.8; 'SCORE: 7/10' or 'SCORE: 7' (0-10 scale) -> 0.7; no score -> None."""
    m = _SCORE.search(reply or "")
    if not m:
        return None
    v = float(m.group(1))
    if m.group(2):
        v /= float(m.group(2))
    elif v > 1.0:
        v /= 10.0
    return min(max(v, 0.0), 1.0)


def _load_callable(path: str) -> Callable[..., Any]:
    mod, sep, attr = path.partition(":")
    if not sep:
        mod, _, attr = path.rpartition(".")
    if not mod or not attr:
        raise JudgeError(f"python judge {path!r}: give a dotted path like 'mypkg.judges:grade' or 'mypkg.judges.grade'")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as err:
        raise JudgeError(f"python judge {path!r}: cannot import {attr!r} from {mod!r} ({err}); check the module is "
                         "importable (on PYTHONPATH) and the function name") from err
    if not callable(fn):
        raise JudgeError(f"python judge {path!r} is not callable")
    return fn


def parse_judge(spec: str, rubric: str | None = None, max_tokens: int = JUDGE_MAX_TOKENS) -> Judge:
    """``max_tokens``: an llm judge's answer limit (at least 1)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("exact", "choice", "numeric") and not arg:
        return Judge(spec, kind)
    if kind == "regex":
        if arg:
            try:
                re.compile(arg)
            except re.error as err:
                raise JudgeError(f"judge {spec!r}: invalid regular expression ({err})") from err
        return Judge(spec, kind, arg)
    if kind == "python" and arg:
        _load_callable(arg)  # fail at start-up, not on the first answer
        return Judge(spec, kind, arg)
    if kind == "llm" and arg:
        r = rubric or DEFAULT_RUBRIC
        missing = [k for k in ("{answer}",) if k not in r]
        if missing:
            raise JudgeError(f"judge rubric must contain {missing} (and may use {{prompt}} and {{reference}})")
        if max_tokens < 1:
            raise JudgeError(f"judge {spec!r}: max tokens must be >= 1, got {max_tokens}")
        return Judge(spec, kind, arg, r, max_tokens)
    raise JudgeError(f"unknown judge {spec!r}; use exact, choice, numeric, regex[:PATTERN], python:MODULE:FUNC or "
                     "llm:MODEL_GROUP")
