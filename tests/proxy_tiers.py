"""For the LiteLLM proxy in tests: the tier classifier a complexity router's ``classifier_plugin:
proxy_tiers.classifier`` names (the proxy imports this module at start; the bundle is $PREFILL_BUNDLE, as in the
proxy config)."""

from __future__ import annotations

import os

from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin
from litellm_prefill_router.tier_classifier import PrefillTierClassifier

#: tier -> bundle target; the config's complexity router maps each tier to a model group serving that target
TIERS = {"SIMPLE": "history-model", "MEDIUM": "math-model", "COMPLEX": "generalist"}

classifier = PrefillTierClassifier(os.environ["PREFILL_BUNDLE"], TIERS, preset="max-quality")
#: the same in a canary rollout: half the users (the request's ``user``) by the classifier, the rest by COMPLEX
canary = PrefillTierClassifier(os.environ["PREFILL_BUNDLE"], TIERS, preset="max-quality", rollout=0.5,
                               shadow_tier="COMPLEX")
#: a routing plugin narrowing a complexity router's tier pool (its tiers' model groups) to the group of the target
#: the bundle picks (complexity_router_config.plugins: [proxy_tiers.pool_plugin])
pool_plugin = PrefillRoutingPlugin(os.environ["PREFILL_BUNDLE"], preset="max-quality",
                                   targets={f"tier-{t}": target for t, target in TIERS.items()})
