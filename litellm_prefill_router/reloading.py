"""Serve a bundle and swap in a new one when its directory changes (``reload_interval_s``).

:class:`BundleReloader` holds what a router builds from a bundle (a predictor and a decider, the deployment map)
and rebuilds it when the bundle on disk changes. The check - the sha256 of the small manifest, which pins every
file - runs at most once per interval, triggered by a request but done off the request path; a changed bundle is
loaded, verified and warmed in a background thread and swapped in whole, so each request sees one bundle from start
to end. `write_bundle` renames a complete bundle into place, so a half-written one is never loaded. A new bundle
that fails to load or validate is not served: the current one stays, with a warning, until the directory changes
again. Used by the LiteLLM strategy, the LangChain runnable and the semantic-router drop-in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

from .bundle import MANIFEST_NAME
from .errors import BundleError, ConfigurationError
from .forking import reset_after_fork
from .hub import resolve_bundle
from .predictor import PrefillPredictor, release_predictor

logger = logging.getLogger("litellm_prefill_router")

T = TypeVar("T")
Fingerprint = tuple[str, str]

# reloads load and warm a bundle (seconds): one at a time, off the event loop and off the request path
_RELOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefill-reload")


def _new_reloader() -> None:
    """In a forked child the parent's reload thread is gone, but its executor would count it and start none."""
    global _RELOADER
    _RELOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefill-reload")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_reloader)


def bundle_fingerprint(bundle: str | Path) -> Fingerprint | None:
    """(resolved directory, sha256 of the manifest): the manifest pins every file's checksum, so this changes when
    ``write_bundle`` renames a new bundle into place, a symlink is pointed at another, or (``hf://``) the branch
    names a new commit; None if unreadable (e.g. between the two renames of a rewrite, or the Hub unreachable and
    nothing cached)."""
    try:
        return _directory_fingerprint(resolve_bundle(bundle).directory)
    except (OSError, BundleError):
        return None


def _directory_fingerprint(directory: Path) -> Fingerprint:
    resolved = directory.expanduser().resolve()
    return str(resolved), hashlib.sha256((resolved / MANIFEST_NAME).read_bytes()).hexdigest()


def _digest(fingerprint: Fingerprint | None) -> str:
    return fingerprint[1][:12] if fingerprint else "unknown"


class BundleReloader(Generic[T]):
    """``current``: what ``load()`` built from the bundle at ``bundle`` (or ``initial``); with ``interval_s``,
    :meth:`maybe_reload` (call it on each request: it costs a clock read) rebuilds it when the bundle changes.

    ``predictor_of`` names the predictor inside a built value: the replaced one is released (its worker answers
    what is queued, then exits). ``on_swap`` runs after a swap (e.g. to log targets without deployments);
    ``on_reload`` after each attempt to load a changed bundle, with whether it is now served (e.g. metrics).
    """

    def __init__(self, bundle: str | Path, load: Callable[[], T], predictor_of: Callable[[T], PrefillPredictor],
                 interval_s: float | None = None, on_swap: Callable[[T], None] | None = None,
                 initial: T | None = None, on_reload: Callable[[bool], None] | None = None) -> None:
        if interval_s is not None and not interval_s > 0:
            raise ConfigurationError(f"reload_interval_s must be > 0 seconds (or None: never reload), got "
                                     f"{interval_s!r}")
        self.bundle = bundle
        self.interval_s = interval_s
        self._load, self._predictor_of, self._on_swap, self._on_reload = load, predictor_of, on_swap, on_reload
        self.current: T = initial if initial is not None else load()
        # the fingerprint of what was loaded (an hf:// reference is not looked up on the Hub a second time)
        try:
            self.fingerprint: Fingerprint | None = _directory_fingerprint(predictor_of(self.current).bundle.directory)
        except OSError:
            self.fingerprint = None
        self._failed: Fingerprint | None = None
        self._next_check = time.monotonic() + (interval_s or 0.0)
        self._pending: Future[bool] | None = None
        self._lock = threading.Lock()
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (see :mod:`.forking`): a check the parent had running never ends here."""
        self._pending = None
        self._lock = threading.Lock()

    def maybe_reload(self) -> None:
        """At most once per ``interval_s``: check in the background whether the bundle changed (and reload)."""
        if self.interval_s is None or time.monotonic() < self._next_check:
            return
        with self._lock:
            if time.monotonic() < self._next_check or (self._pending is not None and not self._pending.done()):
                return
            self._next_check = time.monotonic() + self.interval_s
            self._pending = _RELOADER.submit(self.reload_if_changed)

    def reload_if_changed(self) -> bool:
        """Load the bundle again if its directory changed since it was loaded; True if a new one is now served.

        A bundle that fails to load or validate (a checksum does not match, a target the caller maps is gone, the
        preset is gone) is not served: the current one stays, with a warning naming the error; it is tried again
        once the bundle on disk changes again."""
        fingerprint = bundle_fingerprint(self.bundle)
        if fingerprint is None or fingerprint in (self.fingerprint, self._failed):
            return False
        old = self.current
        try:
            new = self._load()
        except Exception as err:  # noqa: BLE001 - a bad new bundle must never take down the one being served
            self._failed = fingerprint
            logger.warning("prefill router: the bundle at %s changed (manifest %s) but could not be loaded (%s: %s); "
                           "still serving the bundle loaded before (manifest %s)", self.bundle, _digest(fingerprint),
                           type(err).__name__, err, _digest(self.fingerprint))
            if self._on_reload is not None:
                self._on_reload(False)
            return False
        previous, self.current, self.fingerprint = self.fingerprint, new, fingerprint
        logger.warning("prefill router: reloaded the bundle at %s (manifest %s -> %s)", self.bundle,
                       _digest(previous), _digest(fingerprint))
        if self._on_swap is not None:
            self._on_swap(new)
        if self._on_reload is not None:
            self._on_reload(True)
        if self._predictor_of(new) is not self._predictor_of(old):
            release_predictor(self._predictor_of(old))
        return True
