"""gunicorn with ``--preload``: the master builds and warms the router, its forked workers route and log every call
(a decision log per worker), and a worker that gunicorn recycles (``--max-requests``) or stops exits at once - with
onnxruntime 1.29+'s telemetry thread running, a forked worker hung at its exit (``onnxruntime_import``). Real
gunicorn, real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import HIST_PROMPT, free_port, users_machine_env

pytest.importorskip("gunicorn")
pytest.importorskip("langchain_core")  # gunicorn_app builds a LangChain runnable beside the LiteLLM router
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="gunicorn forks its workers")
TESTS = Path(__file__).parent


def exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has exited: its parent has not reaped it yet


def wait_for(check, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


WORKERS = {"sync": ("sync", "gunicorn_app:app"),  # WSGI: router.completion
           "uvicorn": ("uvicorn.workers.UvicornWorker", "gunicorn_app:asgi_app"),  # ASGI (FastAPI's): acompletion
           "langchain": ("sync", "gunicorn_app:langchain_app")}  # WSGI: PrefillRouterRunnable.invoke


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker states from /proc")
@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_gunicorn_preload_workers_route_log_every_call_and_exit_at_once(worker: str, bundle_dir: Path,
                                                                         tmp_path: Path) -> None:
    worker_class, app = WORKERS[worker]
    if worker == "uvicorn":
        pytest.importorskip("uvicorn.workers")
    port = free_port()
    env = users_machine_env(PYTHONPATH=str(TESTS), PREFILL_APP_BUNDLE=str(bundle_dir), HOME=str(tmp_path),
                            PREFILL_APP_LOG=str(tmp_path / "decisions-{pid}.jsonl"),
                            LITELLM_LOCAL_MODEL_COST_MAP="True")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--max-requests", "2",
         "--worker-class", worker_class, "--graceful-timeout", "30", "--bind", f"127.0.0.1:{port}", app],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: server.poll() is not None or _listening(port), 120), "gunicorn did not start"
        assert server.poll() is None, server.communicate()[0][-3000:]
        served = []
        for i in range(8):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=HIST_PROMPT.encode())
            try:
                with urllib.request.urlopen(request, timeout=20) as resp:
                    served.append(json.loads(resp.read()))
            except OSError as err:
                pytest.fail(f"request {i + 1} got no answer ({err}) after {served}: gunicorn starts a recycled "
                            "worker's replacement only once it has exited")
            if worker == "uvicorn" and i % 2:
                time.sleep(1.1)  # a uvicorn worker checks its request count once a second
        assert {s["answer"] for s in served} == {"answer from history-model"}
        by_worker = Counter(s["pid"] for s in served)
        assert server.pid not in by_worker and len(by_worker) >= 3, by_worker  # workers were recycled
        recycled = [pid for pid, n in by_worker.items() if n == 2]
        assert wait_for(lambda: all(exited(pid) for pid in recycled), 10), \
            f"recycled workers {[p for p in recycled if not exited(p)]} still running 10 s after their last request"
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=25) == 0
        assert time.monotonic() - started < 10, "the workers did not exit on SIGTERM (gunicorn waited to kill them)"
    finally:
        try:  # the master and any worker left behind (they hold the log pipe open)
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log = server.communicate(timeout=30)[0]
    assert "Booting worker" in log and "Traceback" not in log, log[-3000:]
    logs = {int(f.stem.split("-")[1]): [json.loads(line) for line in f.read_text().splitlines()]
            for f in tmp_path.glob("decisions-*.jsonl")}
    assert len(logs.pop(server.pid)) == 1  # the LangChain runnable's warm-up call, in the master
    assert sorted(logs) == sorted(by_worker)
    logged = [row for rows in logs.values() for row in rows]
    assert len(logged) == 8 and {row["decision"]["target"] for row in logged} == {"history-model"}, logged


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
