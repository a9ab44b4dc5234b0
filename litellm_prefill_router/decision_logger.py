"""The decision log's writer: a litellm ``CustomLogger`` that appends one JSON line per routed call (the decision,
its outcome, optionally the messages and the answer) and feeds the same line to the routing metrics. One of the
litellm-facing modules (see ``router``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from .answer_lengths import AnswerLengths, learner
from .costs import Price
from .errors import PromptError
from .forking import reset_after_fork
from .jsonl import append_log_record
from .metrics import observe_call
from .prompt import normalise_messages
from .records import DECISION_LOG_KEY, abandoned_reason, answer_text, answered_by, decision_log_row, delta_text
from .shared_metadata import decision_for
from .stream_watch import StreamWatch, settle, watch
from .stream_watch import flush as flush_dropped_streams

logger = logging.getLogger("litellm_prefill_router")


class RoutedMessages:
    """The text the bundle read (as chat messages) for calls whose messages litellm logs without part of it - the
    Anthropic API's ``system``, the Responses API's ``instructions``, Google GenAI's contents -, by decision record,
    until the decision logger writes the call. Kept here, not in the request's metadata, which litellm hands to its
    logging integrations past their message redaction. Bounded: a call never logged is forgotten after ``size``
    newer ones."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[dict, list[dict[str, str]]]] = OrderedDict()

    def keep(self, record: dict, messages: list[dict[str, str]]) -> None:
        with self._lock:
            self._items[id(record)] = (record, messages)
            self._items.move_to_end(id(record))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def take(self, record: object) -> list[dict[str, str]] | None:
        """``record``'s messages, forgotten here (None if none were kept)."""
        with self._lock:
            entry = self._items.get(id(record))
            if entry is None or entry[0] is not record:  # another record that once had this id
                return None
            del self._items[id(record)]
            return entry[1]


ROUTED_MESSAGES = RoutedMessages()


def keep_routed_messages(log: Mapping[str, Any] | None, record: dict, prompt: object) -> None:
    """Keep ``prompt`` (what the bundle read, normalised to chat messages) as ``record``'s logged messages, if the
    decision log ``log`` (a :func:`log_target`) writes messages; a prompt that cannot be read as messages (the
    decision was a fallback) leaves litellm's."""
    if log is None or not log.get("path") or not log.get("messages"):
        return
    try:
        ROUTED_MESSAGES.keep(record, normalise_messages(prompt))
    except PromptError:
        pass


# -- decision / outcome log ------------------------------------------------------
class DecisionLogger(CustomLogger):
    """Appends one JSON line per routed call: the decision, its outcome and (by default) the messages; counts the
    call in the routing metrics where the router has ``metrics`` on.

    One instance serves every router in the process (litellm keeps a single callback per class); each call's
    metadata names the file of the router that decided it.
    """

    #: call ids remembered to drop litellm's second report of one call (the Responses API reports each success
    #: twice in litellm 1.102, with the same litellm_call_id)
    RECENT_CALLS = 4096

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, bool], None] = OrderedDict()
        self._idle = threading.Condition()
        self._writing = 0  # reports being written from litellm's threads (see wait_written)
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (see :mod:`.forking`): reports the parent's threads were writing are not written here."""
        self._lock, self._idle, self._writing = threading.Lock(), threading.Condition(), 0

    def _seen(self, call_id: object, ok: bool) -> bool:
        if not call_id:
            return False
        key = (str(call_id), ok)
        with self._lock:
            if key in self._recent:
                return True
            self._recent[key] = None
            while len(self._recent) > self.RECENT_CALLS:
                self._recent.popitem(last=False)
        return False

    def _write(self, kwargs: dict, ok: bool, response_obj: Any, start: Any, end: Any) -> None:
        params = kwargs.get("litellm_params") or {}
        md = params.get("metadata") or {}
        # this call's own record: its metadata dict may be shared with other requests (see shared_metadata)
        decision = decision_for(md, kwargs.get("litellm_trace_id"), (params.get("model_info") or {}).get("id"))
        target = md.get(DECISION_LOG_KEY)
        if not decision or not target or self._seen(kwargs.get("litellm_call_id"), ok) or settle(decision):
            return  # settled: a stream of this call was reported abandoned (see stream_watch)
        try:
            latency = (end - start).total_seconds()
        except Exception:  # noqa: BLE001
            latency = None
        slo = kwargs.get("standard_logging_object") or {}
        # litellm's proxy (1.108+) reports a stream its client left as a success: the answer is partial
        abandoned = DISCONNECTED if ok and md.get("client_disconnected") else None
        extra: dict[str, object] = {}
        routed = ROUTED_MESSAGES.take(decision)
        if target.get("path") and target.get("messages", True):  # what the bundle read, where litellm logs less
            extra["messages"] = routed if routed is not None else kwargs.get("messages")
        tokens, cost = (slo.get("prompt_tokens"), slo.get("completion_tokens")), kwargs.get("response_cost")
        logs_answer = bool(ok and target.get("path") and target.get("responses", False))
        unreported = ok and kwargs.get("stream") and tokens == (0, 0)  # usage to count (see _counted_usage)
        answer = answer_text(response_obj) if logs_answer or unreported else None  # only where it is needed
        if logs_answer:
            extra["response"] = answer
        counted = _counted_usage(kwargs, slo, answer) if unreported else None
        if counted is not None:
            tokens, cost = counted
        row = decision_log_row(
            call_id=("litellm_call_id", kwargs.get("litellm_call_id")),
            response_id=response_obj.get("id") if isinstance(response_obj, dict) else getattr(response_obj, "id", None),
            decision=decision, ok=ok, model=kwargs.get("model"), cost=cost, prompt_tokens=tokens[0],
            completion_tokens=tokens[1], latency_s=latency, error=kwargs.get("exception"), extra=extra,
            abandoned=abandoned)
        if counted is not None:
            row["outcome"]["usage_counted"] = True
        # the answer's length is learned for the target that answered it (none known: a declined decision's call,
        # answered by litellm's own classifier's pick, or a deployment no target maps)
        lengths = learner(target.get("answer_lengths"))
        if ok and not abandoned and (answered := answered_by(decision)) and lengths is not None:
            lengths.observe(decision.get("model_group"), str(answered), tokens[1])
        _emit(target, row)

    def _write_in_thread(self, kwargs: dict, ok: bool, response_obj: Any, start: Any, end: Any) -> None:
        """A report from one of litellm's threads (its sync handlers run in an executor), counted while it is
        written: litellm 1.102 reports a Responses API call twice, here and on its async worker, and the line is
        the first report's - which :func:`flush_logging` must then wait for."""
        with self._idle:
            self._writing += 1
        try:
            self._write(kwargs, ok, response_obj, start, end)
        finally:
            with self._idle:
                self._writing -= 1
                self._idle.notify_all()

    def wait_written(self, timeout: float) -> bool:
        """Wait until no report is being written from litellm's threads (False: still one after ``timeout`` s)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._writing == 0, timeout)

    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write_in_thread(kwargs, True, response_obj, start_time, end_time)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write_in_thread(kwargs, False, response_obj, start_time, end_time)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, True, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._write(kwargs, False, response_obj, start_time, end_time)


def _counted_usage(kwargs: Mapping[str, Any], slo: Mapping[str, Any],
                   answer: str | None) -> tuple[tuple[int, int], float | None] | None:
    """((prompt, answer) tokens, cost) of a streamed call litellm reported with no usage - litellm 1.108 reports a
    streamed chat call that did not ask for ``stream_options.include_usage`` as 0 tokens and cost 0, which made its
    savings 0 -, counted as litellm 1.102 and 1.110 count them (``litellm.token_counter``) and priced at the
    deployment's cost-map entry; None where there is no answer text or the count fails."""
    mmi = slo.get("model_map_information") or {}
    return _usage(str(mmi.get("model_map_key") or kwargs.get("model") or ""), kwargs.get("messages"), answer,
                  functools.partial(_cost_map_price, mmi.get("model_map_value") or {}))


def _cost_map_price(entry: Mapping[str, Any]) -> Price | None:
    """The price of a litellm cost-map entry (None: it has none)."""
    rate_in, rate_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if not (isinstance(rate_in, (int, float)) and isinstance(rate_out, (int, float))):
        return None
    return Price(float(rate_in), float(rate_out), "litellm")


def _usage(model: str, messages: Sequence[Any] | None, answer: str | None,
           price: Callable[[], Price | None] | None) -> tuple[tuple[int, int], float | None] | None:
    """((prompt, answer) tokens, cost) of a call whose usage litellm did not count: the tokens as litellm counts them
    (``litellm.token_counter``), priced at ``price()``; None where there is no answer text or the count fails."""
    if not answer:
        return None
    try:
        tokens = (litellm.token_counter(model=model, messages=messages or []),
                  litellm.token_counter(model=model, text=answer, count_response_tokens=True))
    except Exception as err:  # noqa: BLE001 - a count is not worth a lost log line
        logger.debug("prefill router: could not count the tokens of a streamed call: %s", err)
        return None
    try:
        rate = price() if price is not None else None
    except Exception as err:  # noqa: BLE001 - the tokens stand without a price
        logger.debug("prefill router: could not price a streamed call's deployment: %s", err)
        rate = None
    return tokens, None if rate is None else rate.cost(*tokens)


def _keep_text(texts: list[str], chunk: object) -> None:
    if (text := delta_text(chunk)) is not None:
        texts.append(text)


def _emit(target: Mapping[str, Any], row: dict[str, Any]) -> None:
    """Count a call's row in the metrics and append it to the decision log, as ``target`` (a :func:`log_target`)
    says; a line that cannot be written is logged, never raised into litellm's logging."""
    if target.get("metrics"):
        observe_call(row)
    if path := target.get("path"):
        append_log_record(path, row)


#: the outcome error of a stream its reader dropped (litellm's proxy: its client disconnected)
DISCONNECTED = "the client disconnected before the stream's end"


def watch_stream(stream: Any, decision: dict, md: Mapping[str, Any], call_id: object,
                 prompt: Callable[[], object], price: Callable[[], Price | None] | None = None) -> Any:
    """``stream``, a routed call's response, watched for a drop before its end (see :mod:`.stream_watch`): such a call
    gets its line in the decision log and its count in the metrics, as abandoned. ``md`` is the request's metadata
    (its decision-log target: unwatched without one), ``prompt`` gives what it routed on (the line's messages, where
    the log keeps them and litellm did not hand them over: read only for such a line); ``call_id`` the call's litellm
    call id where litellm gives one (the proxy does; the SDK's Anthropic and Google GenAI streams carry none)."""
    target = md.get(DECISION_LOG_KEY)
    if not isinstance(target, Mapping) or not (target.get("path") or target.get("metrics")):
        return stream
    model = getattr(stream, "model", None)
    call_id = call_id or getattr(getattr(stream, "logging_obj", None), "litellm_call_id", None)
    texts: list[str] = []  # the answer text read
    return watch(stream, decision, functools.partial(
        _abandoned, target, call_id, model if isinstance(model, str) else None, prompt, texts, price),
        functools.partial(_keep_text, texts))


def _abandoned(target: Mapping[str, Any], call_id: object, model: str | None, prompt: Callable[[], object],
               texts: list[str], price: Callable[[], Price | None] | None, w: StreamWatch) -> None:
    """The decision-log line of a call whose stream was dropped after ``w.chunks`` chunks, with the tokens and cost of
    the answer text read (see :func:`_usage`: a lower bound, as the provider may have generated more than was read)."""
    extra: dict[str, object] = {}
    routed = ROUTED_MESSAGES.take(w.record)
    logs_messages = bool(target.get("path") and target.get("messages", True))
    if routed is None and (logs_messages or texts):
        try:
            routed = normalise_messages(prompt())
        except PromptError:
            routed = None
    if logs_messages:
        extra["messages"] = routed
    counted = _usage(model or "", routed, "".join(texts), price) if routed is not None else None
    (tokens, cost) = counted if counted is not None else ((None, None), None)
    row = decision_log_row(
        call_id=("litellm_call_id", call_id), response_id=None, decision=w.record, ok=False, model=model, cost=cost,
        prompt_tokens=tokens[0], completion_tokens=tokens[1], latency_s=round(w.held_s, 3), error=None, extra=extra,
        abandoned=abandoned_reason(w.chunks))
    if counted is not None:
        row["outcome"]["usage_counted"] = True
    _emit(target, row)


_DECISION_LOGGER: DecisionLogger | None = None


# the lists litellm calls a CustomLogger from (it copies ``litellm.callbacks`` into them on each call, each list capped
# at MAX_CALLBACKS)
_CALLBACK_LISTS = ("success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback")
_WARNED_FULL = False


def register_decision_log() -> DecisionLogger:
    """The process-wide decision logger, registered with litellm (once) and in each list litellm calls loggers from.

    litellm adds no callback past ``MAX_CALLBACKS`` (100) per list and says so only in its own debug-level logger's
    warning: every litellm Router adds its own callbacks to those lists and keeps them until ``router.discard()``
    (``retire()`` from litellm 1.109), so a process that has built ~100 routers had no room left for this logger,
    and the decision log and the routing metrics silently missed every call (measured: 0 of 3 calls logged after
    120 routers). Where litellm refuses it, the logger is put in the list past the cap, with one warning."""
    global _DECISION_LOGGER
    if _DECISION_LOGGER is None:
        _DECISION_LOGGER = DecisionLogger()
        litellm.logging_callback_manager.add_litellm_callback(_DECISION_LOGGER)
    _hold_place(_DECISION_LOGGER)
    return _DECISION_LOGGER


def log_target(decision_log: str | None, *, messages: bool, responses: bool, metrics: bool,
               answer_lengths: AnswerLengths | None) -> dict[str, Any] | None:
    """What a router writes beside each decision record (``records.DECISION_LOG_KEY``) for the decision logger to
    do with the finished call - append it to ``decision_log`` (with the messages / the answer), count it in the
    metrics, learn the answer's length - with the logger registered; None when there is nothing to do."""
    if decision_log is None and not metrics and answer_lengths is None:
        return None
    register_decision_log()
    return {"path": str(Path(decision_log).expanduser().resolve()) if decision_log else None, "messages": messages,
            "responses": responses, "metrics": metrics,
            "answer_lengths": answer_lengths.key if answer_lengths else None}


def _hold_place(callback: CustomLogger) -> None:
    global _WARNED_FULL
    full = []
    for name in _CALLBACK_LISTS:
        callbacks = getattr(litellm, name, None)
        if isinstance(callbacks, list) and callback not in callbacks:
            add = getattr(litellm.logging_callback_manager, f"add_litellm_{name.lstrip('_')}", None)
            if add is not None:
                add(callback)
            if callback not in callbacks:  # refused: the list is full
                callbacks.append(callback)
                full.append(f"litellm.{name} ({len(callbacks) - 1} entries)")
    if full and not _WARNED_FULL:
        _WARNED_FULL = True
        logger.warning(
            "litellm's callback lists are full (%s; litellm adds no more past MAX_CALLBACKS): the prefill router's "
            "decision logger was added past the cap so the decision log and metrics keep every call. Each "
            "litellm.Router keeps callbacks registered until router.discard() (retire() on litellm 1.109+): reuse "
            "routers, or discard the ones you drop.", ", ".join(full))


async def flush_logging(timeout: float = 10.0) -> None:
    """Wait until litellm's background logging (success callbacks, the decision log; those it runs in its threads too)
    has run, then stop its worker, and write the lines of the routed streams dropped so far (see
    :mod:`.stream_watch`). Call it before the event loop ends (e.g. at the end of ``asyncio.run``): litellm queues
    callbacks on a worker bound to the running loop, and what is still queued when the loop closes is run late or
    lost."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        # litellm hands a finished call's logging to a task of its own (``_client_async_logging_helper``) that puts
        # the callbacks on the worker's queue: until those tasks have run, the queue looks empty (or does not exist)
        # and joining it returns at once, leaving the last calls' callbacks to be lost with the loop
        await asyncio.sleep(0)
        helpers = [t for t in asyncio.all_tasks() if _is_logging_helper(t)]
        if helpers:
            await asyncio.wait_for(asyncio.gather(*helpers, return_exceptions=True), timeout)
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        logger.warning("litellm logging did not finish within %.0fs", timeout)
    except RuntimeError as err:  # litellm 1.102 joins a queue an earlier, ended loop made: none of this loop's is on it
        logger.debug("litellm's logging queue belongs to another event loop (%s): nothing of this loop's to wait for",
                     err)
    await GLOBAL_LOGGING_WORKER.stop()
    if _DECISION_LOGGER is not None and not await asyncio.to_thread(_DECISION_LOGGER.wait_written,
                                                                    max(1.0, deadline - loop.time())):
        logger.warning("litellm logging did not finish within %.0fs", timeout)
    flush_dropped_streams()  # after litellm's reports: a stream's report from litellm comes first


def _is_logging_helper(task: asyncio.Task[Any]) -> bool:
    return not task.done() and getattr(task.get_coro(), "__qualname__", "") == "_client_async_logging_helper"
