"""The bridge that runs the router's async routing from litellm's sync entry points."""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import signal
import threading
import time

import pytest

from litellm_prefill_router import sync_bridge
from litellm_prefill_router.sync_bridge import run_sync

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="unset")


async def loop_thread_name() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_a_sync_call_returns_the_coroutines_result_and_raises_its_exception() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad prompt")

    assert run_sync(loop_thread_name()) == "prefill-router-sync-loop"
    with pytest.raises(ValueError, match="bad prompt"):
        run_sync(fails())


def test_a_coroutine_raising_system_exit_raises_it_in_its_caller_and_the_shared_loop_keeps_serving() -> None:
    async def exits() -> None:
        await asyncio.sleep(0)
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        run_sync(exits())
    assert run_sync(loop_thread_name()) == "prefill-router-sync-loop" and sync_bridge._thread.is_alive()


def test_sync_calls_share_one_event_loop_instead_of_starting_one_each() -> None:
    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    loops = {run_sync(running_loop()) for _ in range(5)}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        loops |= set(pool.map(lambda _: run_sync(running_loop()), range(8)))
    assert len(loops) == 1 and not next(iter(loops)).is_closed()


def test_sync_calls_from_many_threads_wait_on_the_shared_loop_together_not_one_after_another() -> None:
    from concurrent.futures import ThreadPoolExecutor

    async def waits() -> str:  # as a routed call waits on its prediction, which threads settle
        await asyncio.sleep(0.25)
        return threading.current_thread().name

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(lambda _: run_sync(waits()), range(16)))
    took = time.perf_counter() - t0
    assert names == ["prefill-router-sync-loop"] * 16
    assert took < 4 * 0.25, f"16 callers took {took:.2f} s: the shared loop ran their waits one after another"


def test_the_coroutine_sees_the_callers_context_variables_and_cannot_change_them() -> None:
    async def read_and_set() -> str:
        seen = CALLER.get()
        CALLER.set("changed by the coroutine")
        return seen

    token = CALLER.set("thread A")
    try:
        assert run_sync(read_and_set()) == "thread A"
        assert CALLER.get() == "thread A"
    finally:
        CALLER.reset(token)


async def test_a_sync_call_from_inside_a_running_event_loop_completes() -> None:
    CALLER.set("async app")

    async def read() -> str:
        return CALLER.get()

    assert run_sync(read()) == "async app"  # blocks this loop, as any blocking call does, but does not deadlock


def test_a_sync_call_made_by_code_running_on_the_bridge_loop_does_not_deadlock() -> None:
    async def outer() -> str:
        return run_sync(loop_thread_name())  # a sync API called from routing code the bridge runs

    assert run_sync(outer()).startswith("prefill-sync")


def test_a_task_the_coroutine_starts_keeps_running_after_the_call_returns() -> None:
    finished = threading.Event()

    async def background() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async def start_and_return() -> None:
        asyncio.get_running_loop().create_task(background())

    run_sync(start_and_return())
    assert finished.wait(5)


def test_an_interrupted_caller_cancels_the_work_it_no_longer_waits_for() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_sync(slow())
    assert time.monotonic() - start < 10 and cancelled.wait(5)


def _route_in_child(queue: multiprocessing.Queue) -> None:
    queue.put(run_sync(loop_thread_name()))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs os.fork")
def test_a_forked_worker_starts_its_own_bridge_loop() -> None:
    run_sync(loop_thread_name())  # the parent's loop thread exists before the fork, as in a pre-loading server
    assert sync_bridge._thread is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_route_in_child, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=30) == "prefill-router-sync-loop"
    finally:
        child.join(30)
    assert child.exitcode == 0
