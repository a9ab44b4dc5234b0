"""A process forked after it routed (gunicorn --preload, Celery's prefork pool, multiprocessing's fork): the child
inherits the router's objects but not their threads (``forking``). Each test forks for real and checks the child."""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_autotune import decision
from test_stream_watch import Reports, SyncChunks

from conftest import HIST_PROMPT, always_cheapest, rewrite_bundle
from litellm_prefill_router import stream_watch
from litellm_prefill_router.autotune import Autotuner
from litellm_prefill_router.predictor import PrefillPredictor
from litellm_prefill_router.reloading import BundleReloader

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def in_child(fn: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """``fn()`` run in a forked child: what it returned (through JSON); a child that raised or hung fails the test."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            out = {"value": fn()}
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(err).__name__}: {err}\n" + "".join(traceback.format_exception(err)[-8:])}
        try:
            os.write(write_end, json.dumps(out, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data, deadline = b"", time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read_end], [], [], left)[0]:
                if not (part := os.read(read_end, 65536)):
                    break
                data += part
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child did not finish in {timeout_s:g} s (a thread it waits for is the parent's)")
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    out = json.loads(data)
    if "error" in out:
        pytest.fail(f"in the forked child: {out['error']}")
    return out["value"]


def test_a_forked_child_opens_its_own_onnx_sessions_and_predicts_what_the_parent_does(bundle_dir: Path) -> None:
    """An inherited session runs on one thread (its thread pool stayed in the parent): the child opens its own."""
    pred = PrefillPredictor(bundle_dir, intra_op_threads=2, cache_size=0)
    in_parent = pred.predict_one(HIST_PROMPT).p_correct.tolist()  # the parent's worker thread is running
    parent_session = id(pred.encoder.session)

    def child() -> dict:
        return {"p": pred.predict_one(HIST_PROMPT, timeout_s=20).p_correct.tolist(),
                "batch": pred.predict([HIST_PROMPT, "2+2?"])[0].tolist(),
                "same_session": id(pred.encoder.session) == parent_session}

    got = in_child(child)
    assert got["same_session"] is False
    assert got["p"] == pytest.approx(in_parent, abs=1e-6) and got["batch"] == pytest.approx(in_parent, abs=1e-6)
    assert pred.predict_one(HIST_PROMPT).p_correct.tolist() == pytest.approx(in_parent, abs=1e-6)  # parent unchanged
    assert id(pred.encoder.session) == parent_session


def test_a_forked_child_that_lets_go_of_an_inherited_predictor_goes_on(bundle_dir: Path) -> None:
    """A released predictor (a reload) or garbage from the parent, collected in the child: freeing a session whose
    thread pool stayed in the parent hung the child (onnxruntime#31961); those sessions are never freed there."""
    held = [PrefillPredictor(bundle_dir, intra_op_threads=2, cache_size=0)]
    held[0].predict([HIST_PROMPT])

    def child() -> bool:
        held[0].predict(["asked in the child"])  # opens the child's own sessions
        held.clear()
        gc.collect()
        return PrefillPredictor(bundle_dir, intra_op_threads=2).predict([HIST_PROMPT]).shape == (1, 3)

    assert in_child(child, timeout_s=60) is True


def test_a_forked_child_predicts_though_a_parent_thread_held_the_predictors_lock_at_the_fork(
        bundle_dir: Path) -> None:
    pred = PrefillPredictor(bundle_dir, cache_size=8)
    pred.predict_one("warm")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pred._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        got = in_child(lambda: pred.predict_one(HIST_PROMPT, timeout_s=20).p_correct.tolist())
    finally:
        release.set()
        holder.join()
    assert got == pytest.approx(pred.predict_one(HIST_PROMPT).p_correct.tolist(), abs=1e-6)


def test_a_router_built_and_warmed_before_a_fork_routes_in_the_child(bundle_dir: Path) -> None:
    """gunicorn --preload: the master builds the router and warms it, the workers route. In a fresh process, as a
    master is: from litellm 1.110 on, litellm's own router refuses to run in a child forked after any litellm router
    of the process routed a call (its Rust extension's threads do not survive fork)."""
    code = f"""
import json, os, sys
from conftest import HIST_PROMPT, model_list
from litellm_prefill_router import PrefillRouter
from test_forking import in_child
r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                  routing_strategy_args={{"bundle": {str(bundle_dir)!r}, "preset": "max-quality"}})
pred = r.prefill_strategy.predictor
pred.predict_one("warm-up through the worker")  # the parent's predictor worker runs
session = id(pred.encoder.session)
msgs = [{{"role": "user", "content": HIST_PROMPT}}]
def child():
    resp = r.completion(model="auto", messages=msgs)
    return [resp.choices[0].message.content, id(r.prefill_strategy.predictor.encoder.session) != session]
print(json.dumps([in_child(child), [r.completion(model="auto", messages=msgs).choices[0].message.content, True]]))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    in_the_child, in_the_parent = json.loads(run.stdout.strip().splitlines()[-1])
    assert in_the_child == in_the_parent == ["answer from history-model", True]


def test_a_forked_child_reloads_a_bundle_changed_after_the_parent_checked_it(bundle_copy: Path) -> None:
    """The parent's reload thread is gone in the child; its executor would have counted it and started none."""
    reloader = BundleReloader(bundle_copy, lambda: PrefillPredictor(bundle_copy), lambda p: p, interval_s=0.01)
    first = reloader.current
    time.sleep(0.02)
    reloader.maybe_reload()  # the check runs on the reload thread; nothing changed
    assert reloader._pending is not None and reloader._pending.result(10) is False

    def child() -> bool:
        rewrite_bundle(bundle_copy, always_cheapest)
        deadline = time.monotonic() + 20
        while reloader.current is first and time.monotonic() < deadline:
            reloader.maybe_reload()
            time.sleep(0.02)
        return reloader.current is not first

    assert in_child(child) is True


def test_a_stream_dropped_in_a_forked_child_is_reported_there_and_the_parents_streams_are_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_watch, "GRACE_S", 0.01)
    reports = Reports()
    parents = stream_watch.watch(SyncChunks(3), {"target": "parent"}, reports)  # the writer thread runs
    next(parents)

    def child() -> list:
        stream = stream_watch.watch(SyncChunks(3), {"target": "child"}, reports)
        next(stream)
        del stream
        gc.collect()
        deadline = time.monotonic() + 10
        while not reports.calls and time.monotonic() < deadline:  # the writer thread reports it, no flush
            time.sleep(0.01)
        stream_watch._at_exit()  # the child exits: the parent's unread stream is the parent's to report
        return [(record["target"], chunks) for record, chunks in reports.calls]

    assert in_child(child) == [["child", 1]]
    del parents
    gc.collect()
    stream_watch.flush()
    assert [(record["target"], chunks) for record, chunks in reports.calls] == [("parent", 1)]


def test_a_forked_child_tunes_though_a_parent_tune_was_running_at_the_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm_prefill_router.autotune as autotune

    tuner = Autotuner({"min_expected_accuracy": 0.55, "min_calls": 20, "every": 5, "window": 40})
    stuck, release, sweep = threading.Event(), threading.Event(), autotune.sweep

    def slow_sweep(*args: Any, **kwargs: Any) -> Any:
        stuck.set()
        release.wait(30)
        return sweep(*args, **kwargs)

    monkeypatch.setattr(autotune, "sweep", slow_sweep)
    for i in range(20):
        tuner.observe(decision("v1", 0.3 + i / 100))
    stuck.wait(10)  # the parent's tune is running

    def child() -> bool:
        autotune.sweep = sweep
        for _ in range(5):
            tuner.observe(decision("v1", 0.8))
        tuner.wait()
        return tuner.policy("auto") is not None

    try:
        assert in_child(child) is True
    finally:
        release.set()
        tuner.wait()


def held_by_a_parent_thread(lock: Any) -> tuple[threading.Event, threading.Thread]:
    """A parent thread that holds ``lock`` until the returned event is set (the writer mid-append at the fork)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    return release, thread


def module_and_instance_locks() -> dict[str, Callable[[], Any]]:
    from langchain_integration import reloaders
    from litellm_prefill_router import jsonl, metrics, predictor, router, shared_metadata, sync_bridge, worker_exit
    from litellm_prefill_router.answer_lengths import AnswerLengths

    return {"decision-log append": lambda: jsonl._APPEND_LOCK, "metrics registration": lambda: metrics._LOCK,
            "strategy install": lambda: router._INSTALL_LOCK, "sync bridge start": lambda: sync_bridge._lock,
            "shared predictor cache": lambda: predictor._CACHE_LOCK, "exit hooks": lambda: worker_exit._AT_EXIT_LOCK,
            "langchain reloaders": lambda: reloaders._RELOADERS_LOCK,
            "records by trace": lambda: shared_metadata.RecordsByTrace().lock,
            "answer lengths": lambda: AnswerLengths()._lock}


@pytest.mark.parametrize("name", sorted(module_and_instance_locks()))
def test_a_lock_a_parent_thread_holds_at_the_fork_is_free_in_the_child(name: str) -> None:
    lock = module_and_instance_locks()[name]()
    release, thread = held_by_a_parent_thread(lock)
    try:
        got = in_child(lambda: lock.acquire(timeout=2))
    finally:
        release.set()
        thread.join()
    assert got is True, f"the {name} lock a parent thread held at the fork stays held in the child"


def test_a_forked_child_writes_its_decision_log_though_the_parents_writer_was_mid_append(tmp_path: Path) -> None:
    from litellm_prefill_router import jsonl

    log = tmp_path / "decisions.jsonl"
    release, thread = held_by_a_parent_thread(jsonl._APPEND_LOCK)
    try:
        in_child(lambda: jsonl.append_log_record(str(log), {"call": "in the child"}), timeout_s=10)
    finally:
        release.set()
        thread.join()
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"call": "in the child"}]
