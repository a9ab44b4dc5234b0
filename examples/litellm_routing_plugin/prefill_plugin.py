"""The routing plugin of config.yaml (``router_settings.plugins: [prefill_plugin.plugin]``): the proxy imports this
module at start. Each deployment's model (``openai/llama-3.1-8b-instruct``) maps to the bundle target its last path
part names; ``TARGETS`` maps the ones named otherwise."""

from __future__ import annotations

import os

from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin

#: candidate model -> bundle target, for models not named after their target (e.g. {"azure/my-gpt": "gpt-4o"})
TARGETS: dict[str, str] = {}

plugin = PrefillRoutingPlugin(
    os.environ.get("PREFILL_BUNDLE", "../../bundles/llmrouter"), targets=TARGETS, preset="balanced",
    decision_log=os.environ.get("PREFILL_DECISION_LOG", "logs/plugin-{date}.jsonl"),
    # PREFILL_SHADOW=1: log the bundle's picks, narrow nothing (compare with `prefill-router stats`)
    shadow=os.environ.get("PREFILL_SHADOW") == "1")
