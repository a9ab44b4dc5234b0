"""Import this module to enable ``routing_strategy: prefill`` in the LiteLLM proxy.

In ``config.yaml``::

    litellm_settings:
      callbacks: litellm_prefill_router.proxy_hook.proxy_handler_instance
    router_settings:
      routing_strategy: prefill
      routing_strategy_args: {bundle: /path/to/bundle}

The proxy loads ``litellm_settings.callbacks`` before it builds its Router, so the
import below teaches that Router the ``prefill`` strategy (litellm 1.110+: the proxy builds
it with ``Router.from_config``, which ``install()`` hooks, prefill ``routing_groups``
entries included). The callback also tells the
client where each request went, in response headers: ``x-prefill-target``,
``x-prefill-reason``, ``x-prefill-policy``, ``x-prefill-p-correct``, ``x-prefill-latency-ms``.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from .records import decision_headers
from .router import install
from .shared_metadata import answered_with, keep_answers

install()
keep_answers()  # the headers of a response without hidden params read the answering attempt's decision from there


class PrefillProxyHook(CustomLogger):
    """The proxy callback: its import installs the prefill strategy; it adds the decision to response headers."""

    async def async_post_call_response_headers_hook(  # type: ignore[override]
        self, data: dict, user_api_key_dict: Any, response: Any,
        request_headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> dict[str, str] | None:
        return decision_headers(data, response, answered_with(data.get("litellm_call_id")))


proxy_handler_instance = PrefillProxyHook()
