"""Predictor workers finished at the interpreter's exit.

A predictor's micro-batching worker is a daemon thread: one still inside onnxruntime when Python finalizes would, on
returning, be ended by CPython (pthread_exit) through onnxruntime's C++ frames - std::terminate, the process aborts
(exit status 134) after the program is done. Measured in the test suite: 2 of 6 runs of three test files aborted so,
where an abandoned prediction (a decision timeout) was still running at exit. An atexit handler runs before
finalization, so waiting there for the workers avoids it.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Protocol

from .forking import unheld_in_child


class Finishing(Protocol):
    """A predictor whose worker can be told to answer what is queued, then exit (waiting up to ``timeout_s``)."""

    def finish(self, timeout_s: float) -> None: ...


# predictors whose worker thread ran
_STARTED: weakref.WeakSet[Finishing] = weakref.WeakSet()
_AT_EXIT_LOCK = unheld_in_child(threading.Lock())
#: seconds the interpreter's exit waits, in all, for predictions still running
EXIT_WAIT_S = 10.0


def finish_at_exit(predictor: Finishing) -> None:
    """Have the interpreter's exit let ``predictor``'s worker finish what it has (see the module)."""
    with _AT_EXIT_LOCK:
        if not _STARTED:
            atexit.unregister(_finish_all)  # registered once; re-registered after a drain (tests)
            atexit.register(_finish_all)
        _STARTED.add(predictor)


def _finish_all() -> None:
    """At exit: every predictor's worker answers what it has, then exits; at most :data:`EXIT_WAIT_S` in all."""
    deadline = time.monotonic() + EXIT_WAIT_S
    with _AT_EXIT_LOCK:
        started = list(_STARTED)
        _STARTED.clear()
    for predictor in started:
        predictor.finish(max(0.0, deadline - time.monotonic()))
