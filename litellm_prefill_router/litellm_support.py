"""Which litellm releases the Router integration serves. Imports no litellm.

litellm 1.110 serves ``litellm.Router`` from a new core that refuses subclasses and has none of the methods the
integration rewrites on earlier releases (``router``). There, the prefill strategy goes in through the Router's
``register_plugin`` entry point (the proxy's Router through ``Router.from_config``) - the router-wide strategy, or a
dispatcher for ``routing_groups`` entries with the prefill strategy, which litellm knows as simple-shuffle groups -
the tier classifier and routing plugin through litellm's own plugin points, and litellm's strategies (a group's, a
key's or team's override) pick through the core's selectors, as on earlier releases."""

from __future__ import annotations

import importlib.metadata

# the range pyproject.toml pins (tests/test_litellm_support.py keeps the two equal)
SUPPORTED_LITELLM = ">=1.100,<1.111"


def installed_litellm() -> str:
    """The installed litellm's version ("unknown" where its metadata is missing, e.g. a vendored copy)."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

