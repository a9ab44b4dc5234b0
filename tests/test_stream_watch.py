"""Routed streams dropped by their reader before the end (``stream_watch``), without litellm: what is reported, once,
and when. The same through litellm's streams of every API (SDK and proxy) is in test_router / test_proxy."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from litellm_prefill_router import stream_watch
from litellm_prefill_router.stream_watch import StreamWatch, settle, watch


class Chunks:
    """An async stream object of ``n`` chunks, as litellm's stream wrappers are (``__aiter__`` returns itself)."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.left, self.fail_at, self.read = n, fail_at, 0
        self._hidden_params: dict = {}

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> int:
        if self.read == self.fail_at:
            raise ConnectionError("the provider went away")
        if self.read == self.left:
            raise StopAsyncIteration
        self.read += 1
        return self.read


class SyncChunks:
    def __init__(self, n: int) -> None:
        self.left, self.read = n, 0

    def __iter__(self) -> SyncChunks:
        return self

    def __next__(self) -> int:
        if self.read == self.left:
            raise StopIteration
        self.read += 1
        return self.read


class Reports:
    """A ``report`` callable that keeps what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, int]] = []

    def __call__(self, w: StreamWatch) -> None:
        self.calls.append((w.record, w.chunks))


def collected() -> None:
    """Collect what was dropped (the watch sees a drop when the stream object goes)."""
    gc.collect()


async def test_a_stream_dropped_before_its_end_is_reported_once_with_the_chunks_read() -> None:
    record, reports = {"target": "math-model"}, Reports()
    stream = watch(Chunks(5), record, reports)
    assert isinstance(stream, Chunks) and type(stream).__name__ == "Chunks"
    assert [await stream.__anext__(), await stream.__anext__()] == [1, 2]
    del stream
    collected()
    stream_watch.flush()
    stream_watch.flush()
    assert reports.calls == [(record, 2)]
    assert settle(record) is True  # litellm reporting the call afterwards: its line is written already


async def test_a_stream_read_to_its_end_or_failing_is_not_reported() -> None:
    reports = Reports()
    whole = watch(Chunks(3), {"target": "a"}, reports)
    assert [c async for c in whole] == [1, 2, 3]
    failing = watch(Chunks(3, fail_at=1), {"target": "b"}, reports)
    with pytest.raises(ConnectionError):  # litellm reports a failure itself
        [c async for c in failing]
    sync = watch(SyncChunks(2), {"target": "c"}, reports)
    assert list(sync) == [1, 2]
    del whole, failing, sync
    collected()
    stream_watch.flush()
    assert reports.calls == []


async def test_a_stream_whose_reading_task_is_cancelled_is_reported_not_taken_for_a_failure() -> None:
    """A web framework cancels the task serving a client that went away (litellm logs nothing for it)."""
    import asyncio

    class Slow(Chunks):
        async def __anext__(self) -> int:
            if self.read:
                await asyncio.sleep(60)
            return await super().__anext__()

    record, reports = {"target": "t"}, Reports()
    stream = watch(Slow(5), record, reports)

    async def read(s: Slow) -> None:
        async for _ in s:
            pass

    task = asyncio.create_task(read(stream))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del stream, task
    for _ in range(3):  # the loop lets go of the cancellation's traceback, whose frames hold the stream
        await asyncio.sleep(0)
    collected()
    stream_watch.flush()
    assert reports.calls == [(record, 1)]


def test_a_sync_stream_dropped_unread_is_reported() -> None:
    record, reports = {"target": "c"}, Reports()
    stream = watch(SyncChunks(4), record, reports)
    next(stream)
    del stream
    collected()
    stream_watch.flush()
    assert reports.calls == [(record, 1)]


async def test_a_call_litellm_reported_first_is_not_reported_again() -> None:
    """litellm's proxy 1.108+ reports a disconnected stream itself: its line is the call's one."""
    record, reports = {"target": "math-model"}, Reports()
    stream = watch(Chunks(5), record, reports)
    await stream.__anext__()
    assert settle(record) is False  # litellm writes the line
    del stream
    collected()
    stream_watch.flush()
    assert reports.calls == []
    assert settle({"target": "never watched"}) is False


async def test_a_bare_async_generator_is_read_through_a_watching_generator_that_closes_it_when_dropped() -> None:
    closed = []

    async def events() -> AsyncIterator[bytes]:
        try:
            for i in range(5):
                yield b"data: %d\n\n" % i
        finally:
            closed.append(True)

    record, reports = {"target": "g"}, Reports()
    stream = watch(events(), record, reports)
    assert await stream.__anext__() == b"data: 0\n\n"
    await stream.aclose()
    assert closed == [True]
    del stream
    collected()
    stream_watch.flush()
    assert reports.calls == [(record, 1)]
    whole = watch(events(), {"target": "h"}, reports)
    assert len([e async for e in whole]) == 5
    del whole
    collected()
    stream_watch.flush()
    assert reports.calls == [(record, 1)]


def test_a_stream_that_cannot_be_watched_is_returned_as_it_is_and_never_reported() -> None:
    class Slotted:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 0

        def __next__(self) -> int:
            raise StopIteration

    reports = Reports()
    stream = Slotted()
    assert watch(stream, {"target": "s"}, reports) is stream and type(stream) is Slotted
    del stream
    collected()
    stream_watch.flush()
    assert reports.calls == []


def test_a_stream_whose_class_refuses_a_subclass_is_returned_as_it_was() -> None:
    class Final(SyncChunks):
        def __init_subclass__(cls, **kwargs: object) -> None:
            raise TypeError("Final may not be subclassed")

    stream = Final(2)
    assert watch(stream, {"target": "f"}, Reports()) is stream
    assert type(stream) is Final and "_prefill_stream_watch" not in vars(stream) and list(stream) == [1, 2]


def test_stream_classes_made_in_each_call_are_not_kept_and_module_level_ones_are_made_once() -> None:
    def made_per_call() -> type:
        class PerCall(SyncChunks):
            pass
        return PerCall

    kept = len(stream_watch._WATCHING_CLASSES)
    for _ in range(3):
        watch(made_per_call()(1), {"target": "x"}, Reports())
        collected()
    a, b = watch(SyncChunks(1), {"target": "y"}, Reports()), watch(SyncChunks(1), {"target": "z"}, Reports())
    assert type(a) is type(b)
    assert len(stream_watch._WATCHING_CLASSES) <= kept + 1
    list(a), list(b)


def test_the_writer_thread_reports_a_drop_after_the_grace_without_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_watch, "GRACE_S", 0.2)
    record, reports = {"target": "w"}, Reports()
    stream = watch(SyncChunks(3), record, reports)
    next(stream)
    del stream
    collected()
    deadline = time.monotonic() + 10
    while not reports.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reports.calls == [(record, 1)]


def test_a_stream_still_unread_when_the_process_exits_is_reported_at_exit() -> None:
    code = """
import sys
sys.path.insert(0, sys.argv[1])
from litellm_prefill_router.stream_watch import watch
from test_stream_watch import SyncChunks
stream = watch(SyncChunks(3), {"target": "kept"}, lambda w: print("abandoned", w.record["target"], w.chunks))
next(stream)
"""
    out = subprocess.run([sys.executable, "-c", code, str(__import__("pathlib").Path(__file__).parent)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["abandoned kept 1"]


def test_a_report_that_fails_is_logged_and_the_next_still_reported(caplog: pytest.LogCaptureFixture) -> None:
    def broken(w: StreamWatch) -> None:
        raise OSError("disk full")

    reports = Reports()
    for target, report in (("first", broken), ("second", reports)):
        s: Iterator[int] = watch(SyncChunks(2), {"target": target}, report)
        next(s)
        del s
        collected()
    stream_watch.flush()
    assert reports.calls == [({"target": "second"}, 1)]
    assert "could not report an abandoned stream: OSError: disk full" in caplog.text


async def test_each_chunk_read_is_handed_to_on_chunk_and_one_that_raises_never_breaks_the_stream() -> None:
    seen: list[int] = []

    def keep_until_two(chunk: int) -> None:
        if chunk == 2:
            raise ValueError("cannot read this chunk")
        seen.append(chunk)

    stream = watch(Chunks(4), {"target": "a"}, Reports(), keep_until_two)
    assert [c async for c in stream] == [1, 2, 3, 4]  # the stream reads on
    assert seen == [1]  # not called again after it raised
    sync_seen: list[int] = []
    assert list(watch(SyncChunks(3), {"target": "b"}, Reports(), sync_seen.append)) == [1, 2, 3]
    assert sync_seen == [1, 2, 3]
