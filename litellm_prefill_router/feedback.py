"""Production outcomes -> training rows: the runtime's decision log joined with user feedback.

The decision log (``routing_strategy_args.decision_log``, or ``PrefillRouterRunnable(decision_log=...)``) has one
line per routed call: the decision, the outcome and (by default) the request's messages. Feedback is a JSONL file of
``{"id": <litellm_call_id, LangChain run_id or response id>, "score": 0..1}`` or ``{"id": ..., "thumbs": "up" |
"down"}`` lines (a judge run later writes the same ``score`` lines). Each call with feedback becomes a training row
that labels the target that answered (in shadow mode and a rollout's control arm: the served target, not the route
the router would have taken) - the other targets stay unlabelled, which the trunk's masked loss handles.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PrefillRouterError
from .jsonl import numbered_lines, read_log, read_logs
from .judges import Completer, Judge
from .progress import progress_bar
from .records import answered_by, feedback_ids, logged_call_id

logger = logging.getLogger(__name__)


class FeedbackError(PrefillRouterError):
    """A decision log or feedback file cannot be used."""


class Feedback(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    thumbs: Literal["up", "down"] | None = None

    @model_validator(mode="after")
    def _one_label(self) -> Feedback:
        if (self.score is None) == (self.thumbs is None):
            raise ValueError("give exactly one of score (0..1) or thumbs (up/down)")
        return self

    @property
    def value(self) -> float:
        return float(self.score) if self.score is not None else (1.0 if self.thumbs == "up" else 0.0)


@dataclass
class FeedbackStats:
    decisions: int = 0
    rows: int = 0
    without_feedback: int = 0
    failed_calls: int = 0
    abandoned_calls: int = 0  # streams their reader dropped: a partial answer, not learned from
    without_messages: int = 0
    unmapped_answers: int = 0  # shadow-mode calls served by a deployment that maps to no bundle target
    unknown_feedback_ids: list[str] = field(default_factory=list)


#: one decision log, or several (the daily files of a ``{date}`` log, each proxy worker's ``{pid}`` file)
Logs = str | Path | Sequence[str | Path]


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise FeedbackError(f"{path} does not exist")
    return read_log(path)


def _decisions(logs: Logs) -> list[dict[str, Any]]:
    try:
        return [rec for _, _, rec in read_logs(logs, "decision log")]
    except FileNotFoundError as err:
        raise FeedbackError(f"{err}; set routing_strategy_args.decision_log to write one") from err


def load_feedback(path: str | Path) -> dict[str, float]:
    """id -> score in [0, 1]; a later line for the same id wins."""
    p = Path(path)
    out: dict[str, float] = {}
    for n, raw in _jsonl(p):
        try:
            fb = Feedback.model_validate(raw)
        except ValidationError as err:
            raise FeedbackError(f"{p}:{n}: {err.errors()[0]['msg']}; each line is "
                                '{"id": ..., "score": 0..1} or {"id": ..., "thumbs": "up"|"down"}') from err
        out[fb.id] = fb.value
    return out


def feedback_rows(decision_log: Logs, feedback: str | Path | dict[str, float],
                  benchmark: str = "production") -> tuple[list[dict[str, Any]], FeedbackStats]:
    """Training rows (``prefill-router train`` format, split ``train``) for every logged call with feedback."""
    scores = feedback if isinstance(feedback, dict) else load_feedback(feedback)
    stats = FeedbackStats()
    rows: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for rec in _decisions(decision_log):
        decision = rec.get("decision") or {}
        if not decision.get("target"):
            continue
        stats.decisions += 1
        ids = feedback_ids(rec)
        seen.update(ids)
        label = next((scores[i] for i in ids if i in scores), None)
        if label is None:
            stats.without_feedback += 1
            continue
        decided_only = "outcome" in rec and rec["outcome"] is None  # the semantic-router drop-in: the caller served
        if not decided_only and (rec.get("outcome") or {}).get("abandoned"):
            stats.abandoned_calls += 1  # a partial answer: the score may be about where it stopped
            continue
        if not decided_only and not (rec.get("outcome") or {}).get("success", False):
            stats.failed_calls += 1  # no answer was produced: feedback cannot be about it
            continue
        messages = rec.get("messages")
        if not messages:
            stats.without_messages += 1
            continue
        # in shadow mode and a rollout's control arm: not the decision's target; a declined choice: the caller's model
        answered = answered_by(decision)
        if not answered:
            stats.unmapped_answers += 1  # served by a deployment no bundle target maps: nothing to label
            continue
        rid = str(ids[0])
        rows[rid] = {"id": rid, "prompt": messages, "benchmark": benchmark, "split": "train",
                     "scores": {answered: label},
                     "costs": {answered: c} if (c := (rec.get("outcome") or {}).get("response_cost"))
                     is not None else {}}
    stats.unknown_feedback_ids = sorted(set(scores) - seen)
    stats.rows = len(rows)
    if stats.without_messages:
        logger.warning("%d decisions with feedback have no messages in the log: set decision_log_messages: true "
                       "to be able to learn from them", stats.without_messages)
    return list(rows.values()), stats


def not_feedback_rows(path: str | Path) -> str | None:
    """Why ``path`` may not be replaced by ``feedback`` rows (None: nothing there, an empty file, or the rows of an
    earlier ``feedback`` run - each a ``train`` row scoring the one target that answered). A dataset's own file
    (``--out data/routing.jsonl``: a row scores every target) or ``collect``'s output would be lost."""
    p = Path(path).expanduser()
    if not p.is_file() or p.stat().st_size == 0:
        return None
    if p.with_name(p.name + ".calls.jsonl").exists():
        return f"it is the output of collect ({p.name}.calls.jsonl beside it)"
    for n, line in numbered_lines(p):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {n} is not a JSON row"
        scores = row.get("scores") if isinstance(row, dict) else None
        if not (isinstance(scores, dict) and len(scores) == 1 and row.get("split") == "train"):
            what = f"{len(scores)} targets' scores" if isinstance(scores, dict) else "no scores"
            split = row.get("split") if isinstance(row, dict) else None
            return f"line {n} is not a feedback row (split {split!r}, {what})"
    return None


class JudgedLines(list[dict[str, Any]]):
    """Feedback lines ``{"id", "score", "judge"}``; ``failed``: the ids of the answers the judge failed on (with
    the error), which a later run can judge again; ``answers``: the logged answers judged (scored, failed or scored
    None); ``without_answer``: the successful calls logged without their answer (``decision_log_responses`` off)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: dict[str, str] = {}
        self.answers = 0
        self.without_answer = 0


async def judge_log(decision_log: Logs, judge: Judge, complete: Completer | None = None,
                    skip: Collection[str] = (), concurrency: int = 8,
                    on_line: Callable[[dict[str, Any]], None] | None = None,
                    progress: bool = False) -> JudgedLines:
    """Score the answers a decision log recorded (``decision_log_responses: true``) with a judge, later.

    Returns feedback lines ``{"id": litellm_call_id or run_id, "score": s, "judge": spec}`` for ``feedback_rows``, in
    the log's order. Only reference-free judges make sense here (``llm:``, ``python:``, ``regex:PATTERN``). Up to
    ``concurrency`` answers are judged at once; ``on_line`` gets each line as soon as it is scored (the CLI appends
    it to its output, so an interrupted run keeps what it scored). A judge that fails on an answer (after the
    completer's own retries) leaves that answer out, named in ``failed``, and goes on.
    ``skip``: call ids judged already (a run that continues an earlier one's output)."""
    if judge.needs_reference:
        raise FeedbackError(f"judge {judge.spec!r} needs a reference answer, which production calls do not have; "
                            "use llm:MODEL_GROUP, python:MODULE:FUNC or regex:PATTERN")
    if concurrency < 1:
        raise FeedbackError(f"concurrency must be >= 1, got {concurrency}")
    todo: dict[str, tuple[str, str]] = {}  # call id -> (answer, prompt); a call logged twice is judged once
    out = JudgedLines()
    for rec in _decisions(decision_log):
        call_id = logged_call_id(rec)
        if not (rec.get("outcome") or {}).get("success") or not call_id or call_id in skip or call_id in todo:
            continue
        answer = rec.get("response")
        if answer is None:
            out.without_answer += 1
            continue
        msgs = rec.get("messages") or []
        todo[call_id] = (str(answer), "\n".join(str(m.get("content") or "") for m in msgs if isinstance(m, dict)))
    out.answers = len(todo)
    scored: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(concurrency)
    bar = progress_bar(len(todo), "judge", "answer", progress)

    async def one(call_id: str, answer: str, prompt: str) -> None:
        async with gate:
            try:
                score = await judge.score(answer, None, prompt, complete)
            except Exception as err:  # noqa: BLE001 - one answer's judge failing must not lose the others' scores
                out.failed[call_id] = f"{type(err).__name__}: {err}"[:300]
                logger.warning("judge %s failed on logged call %s: %s", judge.spec, call_id, err)
                return
            finally:
                bar.update(1)
        if score is not None:
            scored[call_id] = line = {"id": call_id, "score": score, "judge": judge.spec}
            if on_line is not None:
                on_line(line)

    try:
        await asyncio.gather(*(one(call_id, *item) for call_id, item in todo.items()))
    finally:
        bar.close()
    out.extend(scored[c] for c in todo if c in scored)
    return out
