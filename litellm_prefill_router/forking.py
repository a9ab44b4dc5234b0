"""What a forked child does not inherit: the parent's threads.

gunicorn with ``--preload``, Celery's prefork pool and multiprocessing's ``fork`` start children from a parent that
may already have routed: loaded a bundle, started a predictor's worker, checked for a new bundle, watched a stream.
The child inherits those objects but none of their threads - a queue whose worker is gone, a lock some parent thread
held at that instant, and onnxruntime sessions whose intra-op thread pools stayed in the parent (an inherited session
runs on one thread: 121 ms vs 92 ms a prompt with two intra-op threads on a 2-core machine, CPU time / wall time 0.99
vs 1.98). An object that owns such state registers with :func:`reset_after_fork`; right after a fork, in the child
(one thread, before the child's own code runs), its ``_after_fork_in_child()`` replaces them: new locks and queues, no
worker, sessions opened anew on next use. It must only replace (never wait on) what the parent's threads may hold.
A lock that is all an object (or a module) needs reset is made with :func:`unheld_in_child`.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol, TypeVar

logger = logging.getLogger("litellm_prefill_router")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_OBJECTS: weakref.WeakSet[ForkAware] = weakref.WeakSet()
SyncPrimitive = TypeVar("SyncPrimitive")  # threading's Lock, RLock, Condition or Event
_PRIMITIVES: weakref.WeakSet = weakref.WeakSet()


def reset_after_fork(obj: ForkAware) -> None:
    """Have ``obj._after_fork_in_child()`` run in each child forked from now on while ``obj`` lives."""
    _OBJECTS.add(obj)


def unheld_in_child(primitive: SyncPrimitive) -> SyncPrimitive:
    """``primitive`` (a lock, condition or event), reinitialised in each child forked while it lives: a parent thread
    may hold it at the fork - the decision log's writer mid-append, a litellm callback thread counting an answer -
    and no thread of the child would ever release it. The standard library does the same for its own (logging,
    concurrent.futures)."""
    _PRIMITIVES.add(primitive)
    return primitive


def _after_fork_in_child() -> None:
    for primitive in list(_PRIMITIVES):
        primitive._at_fork_reinit()  # threading's; not in typeshed
    for obj in list(_OBJECTS):
        try:
            obj._after_fork_in_child()
        except Exception as err:  # noqa: BLE001 - one object's reset must not stop the others' (or the fork)
            logger.error("prefill router: could not reset a %s in a forked child: %s: %s", type(obj).__name__,
                         type(err).__name__, err)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
