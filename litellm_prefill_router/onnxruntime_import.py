"""The runtime's one import of onnxruntime: with onnxruntime's own telemetry off unless the user turned it on.

From 1.29 on, onnxruntime's Linux wheels start a telemetry thread when the extension loads: it writes an event
database under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` (each session created, the interpreter's path, the
OS, a device id) for upload, and any process forked afterwards - a gunicorn ``--preload`` or Celery prefork worker -
hangs at its normal exit, destroying a condition variable the parent's thread was waiting on (checked with 1.29.0,
1.31.1 and 1.32.0; onnxruntime keeps it off by itself where ``CI``, ``GITHUB_ACTIONS`` or another CI system's
variable is set). ``ORT_DISABLE_TELEMETRY`` set before the import turns it off; the user's own value, either way, is
kept.

Where onnxruntime was imported with its telemetry on before this module (or the user set it on), the first fork warns.
"""

from __future__ import annotations

import logging
import os
import sys

VARIABLE = "ORT_DISABLE_TELEMETRY"
_OFF = frozenset({"1", "true", "yes", "on"})  # what onnxruntime reads as "disabled"; any other value leaves it on
#: where one of these is set (CI=true, ...), onnxruntime 1.29+ keeps its telemetry off by itself: CI never shows it
CI_VARIABLES = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
                "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER")

logger = logging.getLogger("litellm_prefill_router")

_users_value = os.environ.get(VARIABLE)
_imported_before_us = "onnxruntime" in sys.modules  # then unset meant on, and setting it now changes nothing here
os.environ.setdefault(VARIABLE, "1")  # still read by processes this one starts
_telemetry_off = (_users_value or ("" if _imported_before_us else "1")).strip().lower() in _OFF

import onnxruntime as ort  # noqa: E402 - after the variable it reads when its extension loads


def _release() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in ort.__version__.split(".")[:2])
    except ValueError:  # a dev or local build: assume the newest behaviour
        return (99, 0)


def ships_telemetry() -> bool:
    """Whether this onnxruntime starts its telemetry thread on import unless told not to (1.29+ on Linux)."""
    return sys.platform.startswith("linux") and _release() >= (1, 29)


def telemetry_thread_may_run() -> bool:
    """Whether onnxruntime's telemetry thread may be running in this process (and a forked child hang at exit)."""
    return ships_telemetry() and not _telemetry_off


def _warn_before_fork() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    how = (f"{VARIABLE}={_users_value!r}" if _users_value is not None
           else f"onnxruntime was imported before litellm_prefill_router, {VARIABLE} unset")
    logger.warning(
        "forking with onnxruntime %s's telemetry thread running (%s): the child will hang at its normal exit "
        "(sys.exit, end of script); os._exit is not affected. Set %s=1 in the environment before anything "
        "imports onnxruntime, e.g. in the shell that starts gunicorn.", ort.__version__, how, VARIABLE)


_warned = False
if hasattr(os, "register_at_fork") and telemetry_thread_may_run():
    os.register_at_fork(before=_warn_before_fork)

__all__ = ["CI_VARIABLES", "VARIABLE", "ort", "ships_telemetry", "telemetry_thread_may_run"]
