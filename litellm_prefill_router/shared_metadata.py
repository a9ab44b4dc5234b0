"""Each request's own decision record, also when an application passes one ``metadata`` dict to many requests.

litellm writes per-request data into the caller's metadata dict, and its logging reads that dict after the call;
the strategy writes its decision record there too (``records.DECISION_KEY``). An application that hands the same
dict to concurrent requests (a module-level ``metadata={"app": "chat"}``) would otherwise have each response's
``_hidden_params``, each decision-log line and each retry read whichever request wrote last - measured before this
module: 10 of 20 concurrent responses and log lines carried another request's decision.

So each record names its request (``trace_id``: litellm's ``litellm_trace_id``, one per request, kept across its
retries and fallbacks), and once a dict is seen holding another request's record, the records of the requests that
share it are also kept here, by trace id, for their readers to find their own. Every request's routed attempts are
kept here too (deployment and target only): litellm 1.103+ retry breadcrumbs name the failed deployment but not the
request. Without litellm (see ``router``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

from .forking import unheld_in_child
from .records import DECISION_KEY, LITELLM_DECISION_KEY, with_served_candidate, with_served_tier

TRACE_FIELD = "trace_id"  # the decision record's field naming its request


class RecordsByTrace:
    """Records of requests by trace id: trace id -> its attempts' records (oldest first). Bounded: the oldest
    requests are forgotten first (their readers then find no record - no decision attached or logged, no failed
    attempt known - rather than another request's)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        # also held by store_decision across its read of the dict and its writes
        self.lock = unheld_in_child(threading.RLock())
        self._by_trace: OrderedDict[str, list[dict]] = OrderedDict()

    def keep(self, trace_id: str, record: dict) -> None:
        with self.lock:
            attempts = self._by_trace.setdefault(trace_id, [])
            if not any(r is record for r in attempts):
                attempts.append(record)
            self._by_trace.move_to_end(trace_id)
            while len(self._by_trace) > self.capacity:
                self._by_trace.popitem(last=False)

    def knows(self, trace_id: str) -> bool:
        with self.lock:
            return trace_id in self._by_trace

    def attempts(self, trace_id: object) -> list[dict]:
        with self.lock:
            return list(self._by_trace.get(str(trace_id), ())) if trace_id else []


SHARED = RecordsByTrace()  # the decision records of requests whose metadata dict other requests share
# every request's routed attempts ({"deployment_id", "target"}), for telling its retries which deployments failed it:
# litellm 1.103+ breadcrumbs name the failed deployment but not the request
ATTEMPTS = RecordsByTrace()
# by litellm_call_id, the decision of the attempt that answered each request ({"decision": record or None}): the
# proxy's response headers read the request's data, whose metadata is the first attempt's - litellm makes a fallback
# to another model group on a copy - and an Anthropic message response carries no hidden params to say it. Kept only
# in a process that serves those headers (the proxy hook calls keep_answers()): nobody else reads them.
ANSWERED = RecordsByTrace()
_KEEP_ANSWERS = unheld_in_child(threading.Event())


def keep_answers() -> None:
    """Keep, from now on, the decision of the attempt that answered each request (see :func:`answered_with`)."""
    _KEEP_ANSWERS.set()


def answered(call_id: object, decision: dict | None) -> None:
    """Note ``decision`` (None: none stands) as the one of the attempt that answered request ``call_id``, where the
    process keeps answers (see :func:`keep_answers`)."""
    if call_id and _KEEP_ANSWERS.is_set():
        ANSWERED.keep(str(call_id), {"decision": decision})


def answered_with(call_id: object) -> tuple[bool, dict | None]:
    """(known, decision) of the attempt that answered request ``call_id`` (litellm's ``litellm_call_id``); decision
    None: no decision stands for it (an attempt the bundle did not route)."""
    kept = ANSWERED.attempts(call_id)
    return (True, kept[-1]["decision"]) if kept else (False, None)


def attempts_of(trace_id: object) -> list[dict]:
    """The attempts of request ``trace_id`` the strategy routed so far (shadow and control-arm ones aside)."""
    return ATTEMPTS.attempts(trace_id)


class RoutedRequest(NamedTuple):
    """A request a Router method is serving: its metadata dict, trace id, OpenAI ``user`` (None: not named), the
    Router serving it (a routing plugin prices its candidates by the Router's deployments), the system prompt it
    carries outside its messages (the Anthropic API's ``system``, which litellm leaves out of a plugin's messages)
    and the prompt of a request that has no messages (Google GenAI's ``contents`` after its system instruction,
    which litellm hands a plugin no messages for)."""

    metadata: dict
    trace_id: object
    user: str | None = None
    router: object = None
    system: object = None
    prompt: object = None


#: the request a Router method is serving now (set by ``router``'s request hooks). litellm hands a pre-routing
#: classifier plugin (the complexity router's ``classifier_plugin``) a copy of the request's metadata; the classifier
#: reads the request's own dict here, to leave its decision where the decision log, the response's ``_hidden_params``
#: and the proxy's headers read it.
_ROUTED_REQUEST: ContextVar[RoutedRequest | None] = ContextVar("prefill_routed_request", default=None)


@contextmanager
def routing_request(md: dict, trace_id: object, user: str | None = None, router: object = None,
                    system: object = None, prompt: object = None) -> Iterator[None]:
    """While the block runs (one request's routing and call), :func:`current_request` is this request."""
    token = _ROUTED_REQUEST.set(RoutedRequest(md, trace_id, user, router, system, prompt))
    try:
        yield
    finally:
        _ROUTED_REQUEST.reset(token)


def current_request() -> RoutedRequest | None:
    """The request being routed in this task (or the task that started this one), None outside a Router request."""
    return _ROUTED_REQUEST.get()


def _trace_of(record: object) -> object:
    return record.get(TRACE_FIELD) if isinstance(record, Mapping) else None


def owns(record: object, trace_id: object) -> bool:
    """Whether ``record`` may be read as the decision of request ``trace_id`` (a record or a request that names no
    trace - an older record, a call outside litellm's Router - is taken as the request's own, as before)."""
    theirs = _trace_of(record)
    return not trace_id or theirs is None or theirs == trace_id


def store_decision(md: dict, record: dict, trace_id: object, book: RecordsByTrace = SHARED) -> None:
    """Write request ``trace_id``'s decision record into its metadata dict; when the dict holds another request's
    record (it is shared), keep both here too."""
    if not trace_id:
        md[DECISION_KEY] = record
        return
    trace = str(trace_id)
    record[TRACE_FIELD] = trace
    if record.get("deployment_id") and not record.get("shadow"):
        ATTEMPTS.keep(trace, {"deployment_id": str(record["deployment_id"]), "target": str(record.get("target"))})
    with book.lock:  # two threads writing into one dict at once must not both miss that it is shared
        prior = md.get(DECISION_KEY)
        if isinstance(prior, dict) and not owns(prior, trace):
            book.keep(str(prior[TRACE_FIELD]), prior)
            book.keep(trace, record)
        elif book.knows(trace):  # a retry of a request already known to share its dict
            book.keep(trace, record)
        md[DECISION_KEY] = record  # after keeping: a reader that sees this record finds it kept if shared


def decision_for(md: Mapping, trace_id: object = None, deployment_id: object = None,
                 book: RecordsByTrace = SHARED) -> dict | None:
    """The decision record of request ``trace_id``'s attempt served by ``deployment_id`` (either None: not checked):
    the one in its metadata dict unless that is another request's of a shared dict, else the latest such attempt
    kept here; None when none matches (never another request's, nor another attempt's)."""
    record = md.get(DECISION_KEY)
    # a dict never seen shared holds its request's record: the proxy logs a request under a trace id of its own (its
    # logging object exists before the Router names the request), so the trace ids need not match there
    candidates: list[dict] = [record] if isinstance(record, dict) and (
        owns(record, trace_id) or not book.knows(str(record[TRACE_FIELD]))) else []
    candidates += reversed(book.attempts(trace_id))
    for candidate in candidates:
        if not deployment_id or candidate.get("deployment_id") in (None, str(deployment_id)):
            # a tier classifier's record: only while litellm followed it, and with the tier litellm served; a routing
            # plugin's that narrowed nothing: with the target litellm's pick stands for
            return None if _classified_earlier(candidate, md) else with_served_candidate(
                with_served_tier(candidate, md), md)
    return None


def _classified_earlier(record: dict, md: Mapping) -> bool:
    """Whether ``record`` is a tier classifier's decision (see ``tier_classifier``) that the attempt now served did
    not follow: litellm stamps its routing record at every attempt and clears it when an attempt was not pre-routed
    (a fallback to another model group), so a classifier's decision stands only while that record names the
    classifier's complexity router."""
    if "tier" not in record:
        return False
    routing = md.get(LITELLM_DECISION_KEY)
    return not (isinstance(routing, Mapping) and routing.get("router_model_name") == record.get("model_group"))


def classified(md: Mapping, trace_id: object) -> bool:
    """Whether this attempt of request ``trace_id`` was sent to its model group by a tier classifier's decision
    that litellm's complexity router followed (the group is the classifier's tier: the decision stands there)."""
    record = md.get(DECISION_KEY)
    return owns(record, trace_id) and isinstance(record, dict) and "tier" in record \
        and not _classified_earlier(record, md)


def decided_upstream(md: Mapping, trace_id: object, model_group: str, models: Sequence[object]) -> bool:
    """Whether this attempt of request ``trace_id`` reached model group ``model_group`` (whose deployments' models
    are ``models``) by a prefill decision taken before the group's strategy: a tier classifier's that litellm
    followed (:func:`classified`), or a routing plugin's that narrowed the pool to this group or these models."""
    if classified(md, trace_id):
        return True
    record = narrowing_record(md, trace_id)
    if record is None:
        return False
    chosen = set(record["plugin_models"])
    return model_group in chosen or (bool(models) and all(m in chosen for m in models))


def narrowing_record(md: Mapping, trace_id: object) -> dict | None:
    """Request ``trace_id``'s routing-plugin record in its metadata where the plugin narrowed the pool (not shadow,
    not declined); None otherwise."""
    record = md.get(DECISION_KEY)
    if not (owns(record, trace_id) and isinstance(record, dict) and isinstance(record.get("plugin_models"), list)) \
            or record.get("shadow") or record.get("declined"):
        return None
    return record


def drop_records(md: dict, trace_id: object, keys: tuple[str, ...]) -> None:
    """Remove ``keys`` (the decision record and its companions) from the metadata dict of request ``trace_id``, a
    request the strategy does not route - unless the record there is another request's (the dict is shared), or the
    decision of the tier classifier that sent this attempt to the model group."""
    if owns(md.get(DECISION_KEY), trace_id) and not classified(md, trace_id):
        for key in keys:
            md.pop(key, None)
