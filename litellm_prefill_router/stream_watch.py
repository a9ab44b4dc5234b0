"""Routed streams that their reader drops before the end: a chat UI's stop button, a client gone from the proxy, a
``break`` out of the loop. litellm (1.102-1.110) reports no outcome for such a stream, so its call left no
decision-log line and no count in the routing metrics (litellm's proxy 1.108+ instead bills a disconnected
stream's partial answer as a success). A routed stream is watched as it is read; dropped before its end without
failing (litellm reports a failure itself), its call is reported abandoned - once: whichever comes first of that
report and litellm's own for the call writes the call's line (see :func:`settle`).

A drop is noticed when the stream object is collected (or the process exits with it unread), in whatever thread
collects it; what is done then only queues it (``SimpleQueue.put`` is safe there). A thread of this module writes
the report :data:`GRACE_S` later, giving litellm's report of the same call (queued on its logging worker) the first
word; :func:`flush` writes what is queued at once. No litellm import: the caller hands each stream its ``report``.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("litellm_prefill_router")

#: seconds between a stream's drop and its report: litellm's own report of the call, if it makes one, comes first
GRACE_S = 2.0
#: abandoned calls remembered, so a later report of one from litellm writes no second line
REPORTED_KEPT = 4096


@dataclass(eq=False)
class StreamWatch:
    """How far a routed stream was read. ``record`` is its call's decision record; ``report`` writes the call's
    abandoned line (called once, with this watch, in this module's thread or :func:`flush`'s caller)."""

    record: dict
    report: Callable[[StreamWatch], None]
    #: called with each chunk read (e.g. to keep its text); one that raises is not called again
    on_chunk: Callable[[Any], None] | None = None
    started: float = field(default_factory=time.monotonic)
    chunks: int = 0
    ended: bool = False
    failed: bool = False
    dropped: float | None = None

    def __enter__(self) -> StreamWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> None:
        """One read of the stream: a chunk, its end, or its failure (not a cancellation: the reader left)."""
        if kind is None:
            self.chunks += 1
        elif issubclass(kind, (StopIteration, StopAsyncIteration)):
            self.ended = True
        elif issubclass(kind, Exception):
            self.failed = True

    def read(self, chunk: Any) -> Any:
        """``chunk``, read from the stream: handed to :attr:`on_chunk`, returned."""
        if self.on_chunk is not None:
            try:
                self.on_chunk(chunk)
            except Exception as err:  # noqa: BLE001 - the stream is the caller's: never broken by a watcher
                self.on_chunk = None
                logger.debug("prefill router: stopped reading a watched stream's chunks: %s", err)
        return chunk

    @property
    def held_s(self) -> float:
        """Seconds from the stream's return to its drop (to now while it is read)."""
        return (self.dropped or time.monotonic()) - self.started


_LOCK = threading.Lock()
_PENDING: dict[int, StreamWatch] = {}  # id(record) -> the watch of a stream not yet settled
_REPORTED: OrderedDict[int, dict] = OrderedDict()  # id(record) -> record, of calls reported abandoned here
_DROPS: queue.SimpleQueue[StreamWatch] = queue.SimpleQueue()
_WRITER: threading.Thread | None = None
_WATCHING_CLASSES: dict[type, type] = {}


def watch(stream: Any, record: dict, report: Callable[[StreamWatch], None],
          on_chunk: Callable[[Any], None] | None = None) -> Any:
    """``stream`` (a routed call's response), watched as it is read: the same object - its class swapped for a
    subclass that counts what ``__anext__`` / ``__next__`` return, so ``isinstance`` checks still hold - or, for a
    bare async generator (which cannot take a subclass), a generator that reads it. A stream that cannot be watched
    (no ``__dict__``, no weak references, a class that refuses a subclass) is returned as it is, unwatched."""
    w = StreamWatch(record, report, on_chunk)
    if _is_generator(stream):
        stream = _watched_events(stream, w)
    else:
        try:
            weakref.ref(stream)
            vars(stream)["_prefill_stream_watch"] = w
        except TypeError as err:  # no weak references or no __dict__: unwatched
            logger.debug("prefill router: cannot watch a %s for a dropped read: %s", type(stream).__name__, err)
            return stream
        try:
            stream.__class__ = _watching_class(type(stream))
        except Exception as err:  # noqa: BLE001 - a class that refuses a subclass or the swap: unwatched, as it was
            del vars(stream)["_prefill_stream_watch"]
            logger.debug("prefill router: cannot watch a %s for a dropped read: %s", type(stream).__name__, err)
            return stream
    weakref.finalize(stream, _dropped, w).atexit = False  # at exit: see _at_exit
    with _LOCK:
        _PENDING[id(record)] = w
    _start_writer()
    return stream


def settle(record: object) -> bool:
    """litellm reports ``record``'s call: True where it was already reported abandoned here (its line is written:
    write no second one); else the call's stream, if it was watched, is settled by litellm's report."""
    key = id(record)
    with _LOCK:
        if (w := _PENDING.get(key)) is not None and w.record is record:
            del _PENDING[key]
            return False
        return _REPORTED.get(key) is record


def flush() -> None:
    """Report the streams dropped so far now, without the grace (litellm's logging flushed first: see
    ``decision_logger.flush_logging``)."""
    _settle_all(lambda w: w.dropped is not None)


def _settle_all(which: Callable[[StreamWatch], bool]) -> None:
    """Settle the pending watches ``which`` picks, in this thread (the writer thread's queue then finds them done)."""
    with _LOCK:
        picked = [w for w in _PENDING.values() if which(w)]
    for w in picked:
        if w.dropped is None:
            w.dropped = time.monotonic()
        _settle_drop(w)


def _is_generator(stream: object) -> bool:
    return hasattr(stream, "asend") and hasattr(stream, "athrow") and hasattr(stream, "__anext__")


async def _watched_events(stream: Any, w: StreamWatch) -> AsyncIterator[Any]:
    try:
        while True:
            with w:
                item = await stream.__anext__()
            yield w.read(item)
    except StopAsyncIteration:
        return
    finally:
        if not w.ended and callable(close := getattr(stream, "aclose", None)):
            await close()


def _watching_class(cls: type) -> type:
    """``cls`` with ``__anext__`` / ``__next__`` (those it has) counting into the instance's watch; made once per
    module-level class (litellm's router defines some stream classes anew in each call: those are not kept, or each
    call would keep one). No slots of its own, so an instance's class can be swapped for it."""
    kept = "<locals>" not in cls.__qualname__
    with _LOCK:
        if kept and (sub := _WATCHING_CLASSES.get(cls)) is not None:
            return sub
        ns: dict[str, Any] = {"__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        if hasattr(cls, "__anext__"):
            async def __anext__(self: Any) -> Any:  # noqa: N807 - the iterator protocol
                with (w := self.__dict__["_prefill_stream_watch"]):
                    chunk = await cls.__anext__(self)  # type: ignore[attr-defined]
                return w.read(chunk)
            ns["__anext__"] = __anext__
        if hasattr(cls, "__next__"):
            def __next__(self: Any) -> Any:  # noqa: N807 - the iterator protocol
                with (w := self.__dict__["_prefill_stream_watch"]):
                    chunk = cls.__next__(self)  # type: ignore[attr-defined]
                return w.read(chunk)
            ns["__next__"] = __next__
        sub = type(cls.__name__, (cls,), ns)
        if kept:
            _WATCHING_CLASSES[cls] = sub
        return sub


def _dropped(w: StreamWatch) -> None:
    """The stream is collected (or the process exits): queue it for :func:`_settle_drop`. Runs wherever the
    collection happens, maybe inside a lock's holder: nothing here may take a lock."""
    w.dropped = time.monotonic()
    _DROPS.put(w)


def _settle_drop(w: StreamWatch) -> None:
    """A dropped stream's call: reported abandoned unless it ended, failed, or litellm reported it."""
    with _LOCK:
        key = id(w.record)
        if _PENDING.get(key) is not w:  # litellm reported the call (see settle)
            return
        del _PENDING[key]
        if w.ended or w.failed:
            return
        _REPORTED[key] = w.record
        while len(_REPORTED) > REPORTED_KEPT:
            _REPORTED.popitem(last=False)
    try:
        w.report(w)
    except Exception as err:  # noqa: BLE001 - the writer thread must outlive one bad report
        logger.error("prefill router: could not report an abandoned stream: %s: %s", type(err).__name__, err)


def _start_writer() -> None:
    global _WRITER
    if _WRITER is not None:
        return
    with _LOCK:
        if _WRITER is None:
            _WRITER = threading.Thread(target=_write_drops, name="prefill-stream-watch", daemon=True)
            _WRITER.start()
            atexit.unregister(_at_exit)  # registered once (again after a fork)
            atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    """A forked child (see :mod:`.forking`) has no writer thread, and the streams watched so far are the parent's
    (its report, not the child's): start again."""
    global _LOCK, _DROPS, _WRITER
    _LOCK, _DROPS, _WRITER = threading.Lock(), queue.SimpleQueue(), None
    _PENDING.clear()
    _REPORTED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    """The process ends: the streams dropped so far are reported, and so are those still unread."""
    _settle_all(lambda w: True)


def _write_drops() -> None:
    while True:
        w = _DROPS.get()
        if (wait := (w.dropped or 0.0) + GRACE_S - time.monotonic()) > 0:
            time.sleep(wait)
        _settle_drop(w)
