"""litellm-prefill-router: route LLM requests by the prefill activations of a small encoder.

The runtime imports numpy, onnxruntime, tokenizers, pydantic and litellm - never torch.
litellm-facing names (``PrefillRouter``, ``install``) are imported lazily so that
``import litellm_prefill_router`` does no work and no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bundle import Bundle, BundleManifest, load_bundle
from .errors import (
    BundleChecksumError,
    BundleError,
    BundleLocationError,
    BundleMissingFileError,
    BundlePathError,
    BundleSchemaError,
    BundleWriteError,
    ConfigurationError,
    InferenceError,
    PrefillRouterError,
    PromptError,
    RequestSettingsError,
    UnpricedDeploymentError,
    UnsupportedLiteLLMError,
)
from .policy import RoutingDecision, RoutingPolicy
from .predictor import PrefillPredictor

if TYPE_CHECKING:
    from .decision_logger import flush_logging
    from .router import PrefillRouter, install
    from .routing_plugin import PrefillRoutingPlugin
    from .semantic import PrefillSemanticRouter
    from .strategy import PrefillRoutingStrategy
    from .tier_classifier import PrefillTierClassifier

__version__ = "0.1.0"

_LAZY = {
    "PrefillRouter": "router",
    "PrefillRoutingStrategy": "strategy",
    "install": "router",
    "flush_logging": "decision_logger",
    "PrefillSemanticRouter": "semantic",
    "PrefillTierClassifier": "tier_classifier",
    "PrefillRoutingPlugin": "routing_plugin",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Bundle", "BundleManifest", "load_bundle", "PrefillPredictor", "RoutingDecision", "RoutingPolicy",
    "PrefillRouter", "PrefillRoutingStrategy", "install", "flush_logging", "PrefillSemanticRouter",
    "PrefillTierClassifier", "PrefillRoutingPlugin",
    "PrefillRouterError", "BundleError", "BundleLocationError", "BundleMissingFileError", "BundleChecksumError",
    "BundleSchemaError", "BundlePathError", "BundleWriteError", "ConfigurationError", "UnpricedDeploymentError",
    "InferenceError", "PromptError", "RequestSettingsError", "UnsupportedLiteLLMError",
]
