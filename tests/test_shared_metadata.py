"""Decision records of requests that share one metadata dict: each reader gets its own request's record or none."""

from __future__ import annotations

import pytest

from litellm_prefill_router.records import DECISION_KEY, DECISION_LOG_KEY
from litellm_prefill_router.shared_metadata import (
    RecordsByTrace,
    decision_for,
    drop_records,
    store_decision,
)


def test_a_dict_used_by_one_request_holds_its_record_and_nothing_is_kept_aside() -> None:
    book, md = RecordsByTrace(), {}
    store_decision(md, {"target": "a", "deployment_id": "d1"}, "t1", book)
    store_decision(md, {"target": "b", "deployment_id": "d2"}, "t1", book)  # its retry
    assert md[DECISION_KEY]["target"] == "b" and md[DECISION_KEY]["trace_id"] == "t1"
    assert not book.knows("t1")
    assert decision_for(md, "t1", "d2", book)["target"] == "b"
    assert decision_for(md, "t1", "d1", book) is None  # the first attempt's record is gone: not the retry's instead


def test_requests_sharing_a_dict_each_read_their_own_record_whoever_wrote_last() -> None:
    book, md = RecordsByTrace(), {"app": "chat"}
    store_decision(md, {"target": "a", "deployment_id": "d1"}, "t1", book)
    store_decision(md, {"target": "b", "deployment_id": "d2"}, "t2", book)
    store_decision(md, {"target": "c", "deployment_id": "d3"}, "t1", book)  # t1's retry, after t2 wrote
    assert decision_for(md, "t1", None, book)["target"] == "c"
    assert decision_for(md, "t1", "d1", book)["target"] == "a"  # the failed first attempt's own record
    assert decision_for(md, "t2", "d2", book)["target"] == "b"
    assert decision_for(md, "t3", None, book) is None  # a request with no record of its own gets none, not t1's
    assert decision_for(md, None, None, book)["target"] == "c"  # a reader that names no request: as before


def test_a_request_left_unrouted_does_not_remove_another_requests_record_from_a_shared_dict() -> None:
    book, md = RecordsByTrace(), {}
    store_decision(md, {"target": "a"}, "t1", book)
    md[DECISION_LOG_KEY] = {"path": "log"}
    drop_records(md, "t2", (DECISION_KEY, DECISION_LOG_KEY))
    assert md[DECISION_KEY]["target"] == "a" and DECISION_LOG_KEY in md
    drop_records(md, "t1", (DECISION_KEY, DECISION_LOG_KEY))  # its own record is dropped (a fallback left unrouted)
    assert DECISION_KEY not in md and DECISION_LOG_KEY not in md


def test_the_records_kept_for_shared_dicts_are_bounded_oldest_request_first() -> None:
    book, md = RecordsByTrace(capacity=3), {}
    for i in range(6):
        store_decision(md, {"target": str(i)}, f"t{i}", book)
    assert [book.knows(f"t{i}") for i in range(6)] == [False, False, False, True, True, True]
    assert decision_for(md, "t0", None, book) is None


def test_a_dict_never_seen_shared_gives_its_record_to_a_reader_that_names_the_request_otherwise() -> None:
    """The proxy's logging names a request by a trace id of its own (made before the Router names the request): a
    dict only that request used still yields its record (the deployment still has to match)."""
    book, md = RecordsByTrace(), {}
    store_decision(md, {"target": "a", "deployment_id": "d1"}, "router-trace", book)
    assert decision_for(md, "logging-trace", "d1", book)["target"] == "a"
    assert decision_for(md, "logging-trace", "d9", book) is None


def _attempt(md: dict, trace: str, deployment: str, target: str) -> None:
    store_decision(md, {"target": target, "deployment_id": deployment}, trace)


def test_retry_breadcrumbs_of_both_litellm_formats_name_only_this_requests_own_failed_deployments() -> None:
    from litellm_prefill_router.composition import failed_earlier

    md: dict = {}
    _attempt(md, "req-1", "dep-math", "math-model")
    # litellm 1.103+: the failed deployment's id alone (no trace id, no metadata)
    md["previous_models"] = ({"deployment_id": "dep-math", "exception_type": "InternalServerError"},)
    assert failed_earlier(md, "req-1") == {"dep-math": ("math-model", "InternalServerError")}
    # a new request given the same dict: its first attempt, not a retry of the old one
    assert failed_earlier(md, "req-2") == {}
    # litellm <= 1.102: each failed attempt's metadata (our record in it) and its trace id
    old = {"litellm_trace_id": "req-1", "exception_type": "Timeout", "metadata": {DECISION_KEY: md[DECISION_KEY]}}
    assert failed_earlier({"previous_models": [old]}, "req-1") == {"dep-math": ("math-model", "Timeout")}
    assert failed_earlier({"previous_models": [old]}, "req-2") == {}


def test_a_breadcrumb_that_names_another_requests_deployment_marks_this_requests_own_latest_attempt_failed() -> None:
    """Concurrent requests sharing one dict: litellm read the failed deployment from the dict after another request
    had written its own there."""
    from litellm_prefill_router.composition import failed_earlier

    md: dict = {}
    _attempt(md, "req-a", "dep-math", "math-model")
    _attempt(md, "req-b", "dep-hist", "history-model")
    md["previous_models"] = ({"deployment_id": "dep-hist", "exception_type": "InternalServerError"},)
    assert failed_earlier(md, "req-a") == {"dep-math": ("math-model", "InternalServerError")}
    assert failed_earlier(md, "req-c") == {}  # a request with no attempt yet has nothing to retry


def test_answers_are_kept_only_in_a_process_that_serves_the_proxys_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from litellm_prefill_router import shared_metadata as sm

    monkeypatch.setattr(sm, "_KEEP_ANSWERS", threading.Event())
    sm.answered("call-1", {"target": "math-model"})
    assert sm.answered_with("call-1") == (False, None)  # the SDK keeps nothing nobody reads
    sm.keep_answers()  # the proxy hook's import
    sm.answered("call-1", None)
    assert sm.answered_with("call-1") == (True, None)


def test_the_answer_text_of_each_apis_response_shape_is_read_and_a_tool_call_has_none() -> None:
    from types import SimpleNamespace as Obj

    from litellm_prefill_router.records import answer_text

    chat = Obj(choices=[Obj(message=Obj(content="from chat"))])
    tool_call = Obj(choices=[Obj(message=Obj(content=None, tool_calls=[{"id": "t1"}]))])
    text = Obj(choices=[Obj(text="from text", message={"role": "assistant"})])
    responses = Obj(output=[Obj(type="reasoning", content=None),
                            Obj(type="message", content=[Obj(type="output_text", text="from "),
                                                         Obj(type="refusal", text="no"),
                                                         Obj(type="output_text", text="responses")])])
    anthropic = {"type": "message",
                 "content": [{"type": "tool_use", "id": "t"}, {"type": "text", "text": "from claude"}]}
    google = {"candidates": [{"content": {"role": "model", "parts": [{"text": "from "}, {"text": "gemini"}]}}]}
    assert [answer_text(r) for r in (chat, tool_call, text, responses, anthropic, google)] == [
        "from chat", None, "from text", "from responses", "from claude", "from gemini"]
    assert [answer_text(r) for r in (None, {}, Obj(output=[]), {"type": "message", "content": "x"}, 42)] == [None] * 5
