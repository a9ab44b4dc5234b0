"""Which litellm releases the Router integration (``router``, the proxy hook) serves, and what it says on another.
Imports no litellm: the message is built where the integration fails to load."""

from __future__ import annotations

import importlib.metadata

# the range pyproject.toml pins (tests/test_litellm_support.py keeps the two equal)
SUPPORTED_LITELLM = ">=1.100,<1.110"


def installed_litellm() -> str:
    """The installed litellm's version ("unknown" where its metadata is missing, e.g. a vendored copy)."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def unsubclassable_router_message(version: str, cause: object) -> str:
    """What to say when ``litellm.Router`` refuses the ``PrefillRouter`` subclass (``cause``: litellm's words)."""
    said = str(cause).split(". ")[0].rstrip(".")  # litellm's first sentence; the rest points at its own API
    return (f"litellm {version} is installed, and its Router refuses the prefill strategy's subclass ({said}). "
            f"litellm 1.110 moved the Router onto a new core whose routing strategies, routing groups and request "
            f"methods are no longer Python methods, so PrefillRouter, routing_strategy=\"prefill\", the proxy hook, "
            f"PrefillTierClassifier and PrefillRoutingPlugin work with litellm {SUPPORTED_LITELLM} only. Install a "
            f"supported release: "
            f"pip install \"litellm{SUPPORTED_LITELLM}\". PrefillRouterRunnable (LangChain), PrefillSemanticRouter "
            f"and the prefill-router commands that build no litellm Router (train, evaluate, predict, collect, "
            f"judge, ...) work with litellm {version} too.")
