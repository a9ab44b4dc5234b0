"""``prefill-router collect``: build a routing dataset for *your* deployments.

Every prompt goes to every target model group of a LiteLLM ``model_list`` (the proxy config format), with
bounded concurrency, back-off retries on rate limits / timeouts / 5xx (honouring Retry-After), a cost ceiling,
and resumability:

* each finished call is appended to ``<out>.calls.jsonl`` at once (output text, tokens, cost, latency, score);
  a re-run skips every (prompt, target) pair that already has an answer there - nothing is sent twice. Calls
  that failed after all retries have no answer and are tried again on the next run; answers whose judge failed
  are judged again (the target is not asked again).
* ``--max-cost`` is a ceiling: before each call its worst case (input tokens x input price + ``--max-tokens``
  x output price, plus for ``llm:`` judges the judge call: the filled-in rubric with a ``--max-tokens`` answer x
  the judge's input price + ``--judge-max-tokens`` x its output price) is reserved; a call that could cross the
  ceiling is not sent, the run stops and says so (exit status 3). A group's price for this is its dearest
  deployment's.
* at the end (also after a stop or Ctrl-C) ``<out>`` is rewritten from the call log in the training format
  (``{"id", "prompt", "benchmark", "split", "scores", "costs", "output_tokens"}`` per prompt) and the targets'
  prices go to ``<out stem>.models.json``, so ``prefill-router train --data <out>`` works directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .costs import Price, highest_price, lowest_price
from .errors import PrefillRouterError
from .jsonl import numbered_lines, read_log, write_atomic
from .judges import JUDGE_MAX_TOKENS, Judge, parse_judge
from .progress import progress_bar
from .proxy_config import read_router_config, resolve_env
from .retrying import RetryPolicy, retried, with_retries

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CollectError(PrefillRouterError):
    """Bad collection input (prompts file, config, options)."""


class PromptRecord(BaseModel):
    """One line of the prompts file."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    prompt: str | list[dict[str, Any]]
    reference: str | None = None
    judge: str | None = None
    benchmark: str = "default"
    split: str | None = None

    @field_validator("id", "reference", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("prompt is empty")
        if isinstance(v, list) and not v:
            raise ValueError("prompt has no messages")
        return v

    def messages(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.prompt}] if isinstance(self.prompt, str) else list(self.prompt)

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(str(m.get("content") or "") for m in self.prompt if isinstance(m.get("content"), str))


def load_prompts(path: str | Path) -> list[PromptRecord]:
    p = Path(path)
    if not p.is_file():
        raise CollectError(f"prompts file {p} does not exist")
    out, seen = [], set()
    for n, line in numbered_lines(p):
        try:
            rec = PromptRecord.model_validate_json(line)
        except ValidationError as err:
            raise CollectError(f"{p}:{n}: not a valid prompt record ({err.errors()[0]['msg']} at "
                               f"{err.errors()[0]['loc']}); each line needs at least id and prompt") from err
        if rec.id in seen:
            raise CollectError(f"{p}:{n}: duplicate id {rec.id!r}; ids must be unique")
        seen.add(rec.id)
        out.append(rec)
    if not out:
        raise CollectError(f"{p}: no prompts")
    return out


def load_router_config(path: str | Path) -> list[dict[str, Any]]:
    """The deployments of a LiteLLM proxy config, ``os.environ/`` values resolved (raises CollectError)."""
    return [resolve_env(d.model_dump()) for d in read_router_config(path, CollectError).model_list]


class Client(Protocol):
    def groups(self) -> list[str]: ...
    def prices(self, group: str) -> list[Price]: ...  # one per priced deployment of the group
    def count_tokens(self, group: str, messages: list[dict]) -> int: ...
    async def complete(self, group: str, messages: list[dict], **params: Any) -> Any: ...
    def retry_after(self, err: BaseException) -> float | None: ...
    # optional: ``async def aclose(self) -> None`` is awaited when a run ends


@dataclass
class CollectOptions:
    targets: Sequence[str] | None = None  # model groups; default: every group except the judge's
    judge: str | None = None  # default judge for records without their own
    rubric: str | None = None
    concurrency: int = 8
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_cost: float | None = None
    max_tokens: int = 512
    judge_max_tokens: int = JUDGE_MAX_TOKENS  # an llm judge's answer limit (bounds its cost)
    completion_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0})
    progress: bool = True

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_base_s, self.backoff_max_s)


@dataclass
class CollectSummary:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    skipped_done: int = 0
    rejudged: int = 0  # answers whose judge failed on an earlier run, judged again
    not_sent_budget: int = 0
    spent_usd: float = 0.0
    stopped_by_budget: bool = False
    out: Path | None = None

    @property
    def exit_code(self) -> int:
        return 3 if self.stopped_by_budget else (4 if self.failed else 0)


class Collector:
    def __init__(self, prompts: Sequence[PromptRecord], client: Client, out: str | Path,
                 opts: CollectOptions | None = None) -> None:
        self.prompts = list(prompts)
        self.client = client
        self.opts = opts or CollectOptions()
        self.out = Path(out)
        self.log_path = self.out.with_name(self.out.name + ".calls.jsonl")
        if self.out.is_file() and self.out.stat().st_size and not self.log_path.exists():
            # the dataset is rebuilt from the call log: a file without one is someone else's data, not a past run's
            raise CollectError(f"{self.out} exists and is not the output of an earlier collect (no "
                               f"{self.log_path.name} beside it), so collecting would overwrite it; name a new file "
                               "(train with both: --data BASE --add NEW)")
        groups = client.groups()
        self.default_judge = parse_judge(self.opts.judge, self.opts.rubric, self.opts.judge_max_tokens) \
            if self.opts.judge else None
        judges = {r.judge for r in self.prompts if r.judge}
        self.judges: dict[str, Judge] = {s: parse_judge(s, self.opts.rubric, self.opts.judge_max_tokens)
                                         for s in judges}
        judge_groups = {j.arg for j in [*self.judges.values(), self.default_judge] if j and j.kind == "llm"}
        missing = sorted(judge_groups - set(groups))
        if missing:
            raise CollectError(f"llm judge model group(s) {missing} are not in the config's model_list {groups}")
        self.targets = list(self.opts.targets) if self.opts.targets else [g for g in groups if g not in judge_groups]
        unknown = sorted(set(self.targets) - set(groups))
        if unknown:
            raise CollectError(f"targets {unknown} are not model groups of the config; groups: {groups}")
        if not self.targets:
            raise CollectError("no targets: the config has no model group besides the judge")
        # A group's deployments may be priced differently (one model, several providers): the budget reserves,
        # and counts calls litellm cannot price, at the dearest; models.json records the cheapest, which is what
        # the runtime uses for that target.
        deployment_prices = {g: client.prices(g) for g in sorted({*self.targets, *judge_groups})}
        for g, ps in deployment_prices.items():
            if len({(p.input_cost_per_token, p.output_cost_per_token) for p in ps}) > 1:
                logger.warning("model group %r has deployments with different prices; the cost ceiling reserves the "
                               "highest, %s/models.json records the lowest (what routing uses)", g, self.out.stem)
        self.prices = {g: highest_price(ps) for g, ps in deployment_prices.items()}
        self.target_prices = {g: lowest_price(ps) for g, ps in deployment_prices.items()}
        if self.opts.max_cost is not None:
            unpriced = sorted(g for g, p in self.prices.items() if p is None)
            if unpriced:
                raise CollectError(f"--max-cost needs a price for every model group; {unpriced} have none: set "
                                   "model_info.input_cost_per_token / output_cost_per_token in the config")
        if self.opts.concurrency < 1 or self.opts.max_retries < 0:
            raise CollectError("--concurrency must be >= 1 and --max-retries >= 0")

    # -- bookkeeping ----------------------------------------------------------
    def _read_log(self) -> tuple[dict[tuple[str, str], dict[str, Any]], float]:
        done: dict[tuple[str, str], dict[str, Any]] = {}
        spent = 0.0
        if not self.log_path.exists():
            return done, spent
        for _, rec in read_log(self.log_path):
            # a rejudged line repeats its answer's cost, which the answer's first line counted
            answer_cost = 0.0 if rec.get("rejudged") else float(rec.get("cost") or 0.0)
            spent += answer_cost + float(rec.get("judge_cost") or 0.0)
            if rec.get("ok"):
                done[(str(rec["id"]), str(rec["target"]))] = rec
        return done, spent

    def _append(self, rec: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def _worst_case(self, rec: PromptRecord, target: str, judge_only: bool = False) -> float:
        """The most one (prompt, target) call can cost: the target's answer (unless ``judge_only``: an answer
        judged again) and its llm judge's call."""
        cost = 0.0
        if not judge_only and (price := self.prices.get(target)) is not None:
            n_in = self.client.count_tokens(target, rec.messages())
            cost = price.input_cost_per_token * n_in + price.output_cost_per_token * self.opts.max_tokens
        judge = self._judge_for(rec)
        if judge is not None and judge.kind == "llm" and (jp := self.prices.get(judge.arg)) is not None:
            # the judge reads the rubric with the prompt, the reference and an answer of at most --max-tokens
            judge_in = self.client.count_tokens(judge.arg, judge.messages("", rec.reference, rec.text()))
            cost += (jp.input_cost_per_token * (judge_in + self.opts.max_tokens)
                     + jp.output_cost_per_token * judge.max_tokens)
        return cost

    def _judge_for(self, rec: PromptRecord) -> Judge | None:
        return self.judges[rec.judge] if rec.judge else self.default_judge

    # -- the run ---------------------------------------------------------------
    async def run(self) -> CollectSummary:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        done, spent = self._read_log()
        summary = CollectSummary(spent_usd=spent, out=self.out)
        # (prompt, target, its logged answer to judge - its judge failed, or it had none and has one now - or None:
        # ask the target)
        todo = [(r, t, done.get((r.id, t))) for r in self.prompts for t in self.targets
                if (r.id, t) not in done or self._to_judge(r, done[(r.id, t)])]
        if unjudged := [r.id for r in self.prompts if self._judge_for(r) is None]:
            logger.warning("%d prompts (e.g. %s) have no judge (no --judge, no judge field): their answers are "
                           "recorded without a score - no training label - until a run with --judge scores them, "
                           "without asking the targets again", len(unjudged), ", ".join(unjudged[:3]))
        summary.skipped_done = len(self.prompts) * len(self.targets) - len(todo)
        queue: asyncio.Queue[tuple[PromptRecord, str, dict[str, Any] | None]] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)
        reserved = 0.0
        stop = asyncio.Event()
        bar = progress_bar(len(todo), "collect", "call", self.opts.progress)

        async def one(rec: PromptRecord, target: str, logged: dict[str, Any] | None) -> None:
            nonlocal reserved
            worst = self._worst_case(rec, target, judge_only=logged is not None)
            if self.opts.max_cost is not None and summary.spent_usd + reserved + worst > self.opts.max_cost:
                stop.set()
                summary.stopped_by_budget = True
                summary.not_sent_budget += 1
                return
            reserved += worst
            try:
                if logged is None:
                    await self._call(rec, target, summary)
                else:
                    await self._rejudge(rec, target, logged, summary)
            finally:
                reserved -= worst
                bar.update(1)
                bar.set_postfix_str(f"${summary.spent_usd:.4f}")

        async def worker() -> None:
            while not queue.empty():
                rec, target, logged = queue.get_nowait()
                if stop.is_set():
                    summary.not_sent_budget += 1
                    continue
                await one(rec, target, logged)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.opts.concurrency, max(len(todo), 1)))))
        finally:
            bar.close()
            self.write_dataset()
            close = getattr(self.client, "aclose", None)
            if close is not None:
                await close()
        return summary

    @staticmethod
    def _counter(summary: CollectSummary) -> Callable[[], None]:
        """Counts every request sent (retries and judge calls included) in ``summary.sent``."""
        def sent() -> None:
            summary.sent += 1
        return sent

    async def _call(self, rec: PromptRecord, target: str, summary: CollectSummary) -> None:
        o = self.opts
        t0 = time.perf_counter()
        res, err, attempts = await with_retries(
            lambda: self.client.complete(target, rec.messages(), max_tokens=o.max_tokens, **o.completion_params),
            self.client.retry_after, o.retry, f"{rec.id} -> {target}", self._counter(summary))
        latency = time.perf_counter() - t0
        if res is None:
            summary.failed += 1
            self._append({"id": rec.id, "target": target, "ok": False, "attempts": attempts,
                          "error": f"{type(err).__name__}: {err}"[:500], "latency_s": round(latency, 3)})
            return
        cost = self._cost_of(res, target)
        summary.answered += 1
        summary.spent_usd += float(cost or 0.0)
        answer = {"id": rec.id, "target": target, "ok": True, "attempts": attempts, "output": res.text,
                  "input_tokens": res.input_tokens, "output_tokens": res.output_tokens, "cost": cost,
                  "latency_s": round(latency, 3)}
        self._append({**answer, **await self._judge(rec, target, res.text, summary)})

    async def _judge(self, rec: PromptRecord, target: str, answer: str, summary: CollectSummary) -> dict[str, Any]:
        """Score one answer: the call log's ``judge``, ``score``, ``judge_cost`` and ``judge_error`` fields. An llm
        judge's calls are retried like the targets'; a judge that still fails leaves the answer without a score
        and its ``judge_error`` - the next run judges it again (without asking the target again)."""
        judge = self._judge_for(rec)
        if judge is None:
            return {"judge": None, "score": None, "judge_cost": None, "judge_error": None}
        costs: list[float] = []

        async def complete(group: str, messages: list[dict], max_tokens: int) -> str:
            params = {**self.opts.completion_params, "max_tokens": max_tokens}
            jres = await retried(lambda: self.client.complete(group, messages, **params), self.client.retry_after,
                                 self.opts.retry, f"judge {group} on {rec.id} -> {target}", self._counter(summary))
            costs.append(self._cost_of(jres, group) or 0.0)
            return str(jres.text)

        score, error = None, None
        try:
            score = await judge.score(answer, rec.reference, rec.text(), complete)
        except Exception as e:  # noqa: BLE001 - a broken judge keeps the answer, without a score
            error = f"{type(e).__name__}: {e}"[:300]
            logger.warning("judge %s failed on %s -> %s: %s", judge.spec, rec.id, target, error)
        summary.spent_usd += sum(costs)
        return {"judge": judge.spec, "score": score, "judge_cost": sum(costs) or None, "judge_error": error}

    def _to_judge(self, rec: PromptRecord, logged: dict[str, Any]) -> bool:
        """A logged answer is judged (again) when its judge failed, or when it was answered without a judge and the
        prompt has one now."""
        return bool(logged.get("judge_error")) or (logged.get("judge") is None and logged.get("score") is None
                                                   and self._judge_for(rec) is not None)

    async def _rejudge(self, rec: PromptRecord, target: str, logged: dict[str, Any], summary: CollectSummary) -> None:
        """Judge an answer logged by an earlier run (its judge failed, or it had none); the new line replaces the old
        one in the dataset (``rejudged``: its target cost was counted by the old line)."""
        verdict = await self._judge(rec, target, str(logged.get("output") or ""), summary)
        summary.rejudged += 1
        self._append({**logged, **verdict, "rejudged": True})

    def _cost_of(self, res: Any, group: str) -> float | None:
        """litellm's cost of a call, else the group's price x the call's token usage, else None."""
        if res.cost is not None:
            return float(res.cost)
        price = self.prices.get(group)
        if price is None:
            return None
        return price.cost(res.input_tokens, res.output_tokens)

    def _rows(self, done: dict[tuple[str, str], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for r in self.prompts:
            calls = {t: done[(r.id, t)] for t in self.targets if (r.id, t) in done}
            if not calls:
                continue
            row: dict[str, Any] = {
                "id": r.id, "prompt": r.prompt, "benchmark": r.benchmark,
                "scores": {t: c["score"] for t, c in calls.items() if c.get("score") is not None},
                "costs": {t: c["cost"] for t, c in calls.items() if c.get("cost") is not None},
                "output_tokens": {t: c["output_tokens"] for t, c in calls.items()},
            }
            if r.split:
                row["split"] = r.split
            yield row

    def write_dataset(self) -> Path:
        """Rewrite ``out`` (training format) and ``<stem>.models.json`` from the call log."""
        done, _ = self._read_log()
        write_atomic(self.out, self._rows(done))
        prices = {t: {"input_cost_per_token": p.input_cost_per_token, "output_cost_per_token": p.output_cost_per_token}
                  for t in self.targets if (p := self.target_prices.get(t)) is not None}
        self.out.with_suffix(".models.json").write_text(json.dumps(prices, indent=1))
        return self.out
