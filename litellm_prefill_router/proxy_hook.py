"""Import this module to enable ``routing_strategy: prefill`` in the LiteLLM proxy.

In ``config.yaml``::

    litellm_settings:
      callbacks: litellm_prefill_router.proxy_hook.proxy_handler_instance
    router_settings:
      routing_strategy: prefill
      routing_strategy_args: {bundle: /path/to/bundle}

The proxy loads ``litellm_settings.callbacks`` before it builds its Router, so the
import below teaches that Router the ``prefill`` strategy.
"""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger

from .router import install

install()


class PrefillProxyHook(CustomLogger):
    """A no-op callback whose import installs the prefill strategy."""


proxy_handler_instance = PrefillProxyHook()
