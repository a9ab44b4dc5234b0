"""The bundle reloaders that LangChain runnables share: LangChain builds a new runnable for every call made with
configurable fields, and each would otherwise load and verify its bundle again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from litellm_prefill_router.decider import PrefillDecider
from litellm_prefill_router.forking import unheld_in_child
from litellm_prefill_router.hub import is_hub_reference
from litellm_prefill_router.reloading import BundleReloader, bundle_fingerprint

# LangChain builds a new runnable for every call made with configurable fields (``configurable_fields(...)`` then
# ``with_config(configurable=...)``), which loaded and verified the bundle each time (58-64 ms a call instead of ~11
# on the main job's bundle, session 14; a Hub lookup a call for an hf:// branch). Runnables that build the same
# decider share one reloader (its bundle, its reload checks); a bundle directory rewritten since is loaded afresh.
# The least recently used go first.
_RELOADERS: OrderedDict[tuple[Any, ...], BundleReloader[PrefillDecider]] = OrderedDict()
_RELOADERS_LOCK = unheld_in_child(threading.Lock())
_RELOADERS_KEPT = 64


def reusable_reloader(key: tuple[Any, ...], bundle: str) -> BundleReloader[PrefillDecider] | None:
    """The reloader a runnable built like this one shares (None: none yet, or its bundle directory changed)."""
    with _RELOADERS_LOCK:
        reloader = _RELOADERS.get(key)
        if reloader is not None:
            _RELOADERS.move_to_end(key)
    if reloader is None:
        return None
    # an hf:// bundle changes only through its reloader (a lookup per check); a directory is checked here (a stat
    # and the manifest's sha256: microseconds), so a runnable built after a rewrite serves the new bundle
    if not is_hub_reference(bundle) and bundle_fingerprint(bundle) != reloader.fingerprint:
        return None
    return reloader


def remember_reloader(key: tuple[Any, ...], reloader: BundleReloader[PrefillDecider]) -> None:
    """Keep ``reloader`` for the runnables built like the one that made it."""
    with _RELOADERS_LOCK:
        _RELOADERS[key] = reloader
        _RELOADERS.move_to_end(key)
        while len(_RELOADERS) > _RELOADERS_KEPT:
            _RELOADERS.popitem(last=False)
