"""Run the router's async code from litellm's sync entry points (``router.completion`` and friends).

The strategy's routing is async (the encoder runs off the event loop; litellm's selectors are async). A sync call used
to run it with ``asyncio.run`` - a fresh event loop and a fresh default executor per call, about 0.4 ms of set-up and
tear-down on each routed sync request - or, called from inside a running loop, on a fresh thread with its own loop.
Instead, one event loop per process runs on a daemon thread, started on the first sync call (nothing at import) and
started again after a ``fork``; sync callers hand their coroutine to it and wait. The coroutine runs in a copy of the
caller's context (context variables set by the caller are seen, as under ``asyncio.run``). Work it leaves behind
(a task it started) goes on running on that loop instead of being cancelled when the call returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .forking import unheld_in_child

T = TypeVar("T")

_lock = unheld_in_child(threading.Lock())
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def _forget_loop() -> None:
    """In a forked child the parent's loop thread does not exist: the next sync call starts one."""
    global _loop, _thread, _pid
    _loop = _thread = _pid = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loop)


def _bridge_loop() -> asyncio.AbstractEventLoop:
    """The process's bridge loop, started on first use (and again if its thread is gone)."""
    global _loop, _thread, _pid
    loop = _live_loop()
    if loop is not None:
        return loop
    with _lock:
        loop = _live_loop()
        if loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="prefill-router-sync-loop", daemon=True)
            thread.start()
            _loop, _thread, _pid = loop, thread, os.getpid()
        return loop


def _live_loop() -> asyncio.AbstractEventLoop | None:
    """The bridge loop if this process started it and its thread runs it, else None."""
    if _loop is None or _thread is None or _pid != os.getpid() or _loop.is_closed() or not _thread.is_alive():
        return None
    return _loop


async def _handed_over(coro: Coroutine[Any, Any, T], done: concurrent.futures.Future[T]) -> None:
    """``coro``'s outcome handed to the waiting caller - every exception, ``SystemExit`` and ``KeyboardInterrupt``
    included, which would otherwise stop the loop every sync call shares."""
    try:
        result = await coro
    except BaseException as exc:  # noqa: BLE001 - all of it is the caller's to raise
        if not done.done():  # done: the caller gave up (interrupted) and cancelled its side
            done.set_exception(exc)
        return
    if not done.done():
        done.set_result(result)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code - also from a thread whose event loop is running (that loop waits,
    as it waits on any blocking call) - and return its result or raise its exception."""
    if threading.current_thread() is _thread:  # a sync call made from code the bridge loop runs: it cannot wait on
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefill-sync") as ex:  # itself
            return ex.submit(contextvars.copy_context().run, asyncio.run, coro).result()
    loop = _bridge_loop()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    started: list[asyncio.Task[None]] = []

    def start() -> None:  # runs in (a copy of) the context call_soon_threadsafe was given, as the task it creates
        started.append(loop.create_task(_handed_over(coro, done)))

    loop.call_soon_threadsafe(start, context=contextvars.copy_context())
    try:
        return done.result()
    except BaseException:
        if not done.done():  # the caller was interrupted (KeyboardInterrupt, ...): stop the work it no longer waits on
            done.cancel()
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in started])
        raise
