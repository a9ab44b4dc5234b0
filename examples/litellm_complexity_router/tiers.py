"""The tier classifier of config.yaml's complexity router (``classifier_plugin: tiers.classifier``): the proxy imports
this module at start. Each tier is a bundle target; the bundle picks, per prompt, the tier whose model answers it
correctly at the best cost (the bundle's ``balanced`` preset)."""

from __future__ import annotations

import os

from litellm_prefill_router.tier_classifier import PrefillTierClassifier

#: tier -> bundle target (config.yaml's complexity_router_config.tiers maps each tier to a model group serving it)
TIERS = {"SIMPLE": "gemma-2-9b-it", "MEDIUM": "llama-3.1-8b-instruct", "COMPLEX": "llama-3.1-nemotron-51b-instruct",
         "REASONING": "llama-3.3-nemotron-super-49b-v1"}

classifier = PrefillTierClassifier(
    os.environ.get("PREFILL_BUNDLE", "../../bundles/llmrouter"), TIERS, preset="balanced",
    decision_log=os.environ.get("PREFILL_DECISION_LOG", "logs/tiers-{date}.jsonl"),
    decision_timeout_s=1.0,  # below litellm's classifier_plugin_timeout_ms (3 s): a late prediction is logged
    # PREFILL_SHADOW=1: log the bundle's tiers, serve by litellm's heuristic classifier as before (compare with
    # `prefill-router stats`); PREFILL_ROLLOUT=0.1: 10% of users by the bundle, the rest as in shadow mode
    shadow=os.environ.get("PREFILL_SHADOW") == "1", rollout=float(os.environ.get("PREFILL_ROLLOUT", "1")))
