"""onnxruntime's own telemetry (1.29+ on Linux) is off when the runtime imports it, unless the user turned it on: it
writes an event database under the home directory and makes a process forked afterwards hang at its normal exit.
Each test runs a fresh interpreter, because the switch is read once, when onnxruntime's extension loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import onnxruntime
import pytest

from conftest import HIST_PROMPT, users_machine_env
from litellm_prefill_router.onnxruntime_import import ships_telemetry

TELEMETRY_SHIPPED = ships_telemetry()
FORK_THEN_EXIT = textwrap.dedent("""
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # the interpreter's normal exit: static destructors run
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit status", os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        print("child hung at exit")
""")


def run_fresh(code: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    """``code`` (indented as in the test) in a new interpreter whose home, where onnxruntime keeps its telemetry, is
    ``home``."""
    prelude = "import logging, os, sys, time\nlogging.basicConfig()\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=users_machine_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **env),
                          timeout=120, cwd=Path(__file__).parent)


def telemetry_written(home: Path) -> bool:
    return (home / ".cache" / "Microsoft").exists()


def test_routing_writes_no_onnxruntime_telemetry_and_a_forked_child_exits_normally(bundle_dir: Path,
                                                                                    tmp_path: Path) -> None:
    run = run_fresh(textwrap.dedent(f"""
        from litellm_prefill_router.predictor import PrefillPredictor
        pred = PrefillPredictor({str(bundle_dir)!r}, cache_size=0)
        pred.predict_one({HIST_PROMPT!r})
        print("ORT_DISABLE_TELEMETRY", os.environ.get("ORT_DISABLE_TELEMETRY"))
    """) + FORK_THEN_EXIT, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "child exit status 0" in run.stdout, run.stdout + run.stderr
    assert not telemetry_written(tmp_path)
    assert "ORT_DISABLE_TELEMETRY 1" in run.stdout
    assert "telemetry thread running" not in run.stderr


def test_the_users_own_choice_is_kept_and_forking_with_telemetry_on_warns(tmp_path: Path) -> None:
    run = run_fresh("""
        import litellm_prefill_router
        print("ORT_DISABLE_TELEMETRY", os.environ.get("ORT_DISABLE_TELEMETRY"))
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """, tmp_path, ORT_DISABLE_TELEMETRY="0")
    assert run.returncode == 0, run.stderr
    assert "ORT_DISABLE_TELEMETRY 0" in run.stdout
    if TELEMETRY_SHIPPED:  # the variable is what switches it: the off-by-default test above is not vacuous
        assert telemetry_written(tmp_path)
        assert "telemetry thread running (ORT_DISABLE_TELEMETRY='0')" in run.stderr
        assert "Set ORT_DISABLE_TELEMETRY=1" in run.stderr


@pytest.mark.skipif(not TELEMETRY_SHIPPED, reason=f"onnxruntime {onnxruntime.__version__} has no telemetry thread")
def test_onnxruntime_imported_first_with_telemetry_on_is_named_in_the_fork_warning(tmp_path: Path) -> None:
    run = run_fresh("""
        import onnxruntime
        import litellm_prefill_router
        from litellm_prefill_router.onnxruntime_import import telemetry_thread_may_run
        print("may run", telemetry_thread_may_run())
        for _ in range(2):  # warned once
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
    """, tmp_path)
    assert "may run True" in run.stdout, run.stderr
    assert run.stderr.count("onnxruntime was imported before litellm_prefill_router, ORT_DISABLE_TELEMETRY unset") == 1

