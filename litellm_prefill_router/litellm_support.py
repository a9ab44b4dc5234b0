"""Which litellm releases the Router integration serves, and what it says on another. Imports no litellm.

litellm 1.110 serves ``litellm.Router`` from a new core that refuses subclasses and has none of the methods the
integration rewrites on earlier releases (``router``). There, the router-wide prefill strategy goes in through the
Router's ``register_plugin`` entry point (the proxy's Router through ``Router.from_config``), and the tier classifier
and routing plugin through litellm's own plugin points; routing groups beside the prefill strategy and a key's or
team's strategy override get their litellm strategy's pick from the core's selectors. What needs the old methods - a
``routing_groups`` entry with the prefill strategy - is refused with :class:`~.errors.UnsupportedLiteLLMError` and
this module's message."""

from __future__ import annotations

import importlib.metadata

# the range pyproject.toml pins (tests/test_litellm_support.py keeps the two equal)
SUPPORTED_LITELLM = ">=1.100,<1.111"
# the releases whose Router the integration rewrites - prefill routing groups need one of them
BEFORE_NEW_CORE = ">=1.100,<1.110"


def installed_litellm() -> str:
    """The installed litellm's version ("unknown" where its metadata is missing, e.g. a vendored copy)."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def needs_older_litellm(what: str, why: str) -> str:
    """The message of a feature litellm 1.110+ cannot carry: ``what`` it is, ``why`` not, and the fix."""
    return (f"{what} needs litellm{BEFORE_NEW_CORE}: litellm {installed_litellm()} serves its Router from a new core "
            f"that {why}. Install a release that has it: pip install \"litellm{BEFORE_NEW_CORE}\". With litellm "
            f"{installed_litellm()}, PrefillRouter / routing_strategy=\"prefill\" route router-wide (SDK and proxy), "
            f"and PrefillTierClassifier, PrefillRoutingPlugin, PrefillRouterRunnable and PrefillSemanticRouter work.")
