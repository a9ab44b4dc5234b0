"""Typed errors. Every message says what failed, where, and how to fix it."""

from __future__ import annotations


class PrefillRouterError(Exception):
    """Base class of every error raised by litellm-prefill-router."""


class BundleError(PrefillRouterError):
    """A bundle directory cannot be loaded."""


class BundleMissingFileError(BundleError):
    """A file named by the manifest (or the manifest itself) is absent."""


class BundleChecksumError(BundleError):
    """A file's sha256 or size differs from the manifest."""


class BundleSchemaError(BundleError):
    """The manifest is not valid JSON, fails validation, or has an unknown schema version."""


class BundlePathError(BundleError):
    """A file name in the manifest would leave the bundle directory."""


class BundleWriteError(BundleError):
    """A bundle cannot be written where asked: the path holds a file, or a directory that is not a bundle (writing
    there would delete it)."""


class BundleLocationError(BundleError):
    """An ``hf://`` bundle reference is malformed, or its repository, revision or files cannot be fetched."""


class ConfigurationError(PrefillRouterError):
    """The router, its deployments or its policy are configured inconsistently."""


class RequestSettingsError(ConfigurationError):
    """A request's own routing settings are invalid: its ``metadata.prefill`` (or its proxy key's / team's ``prefill``
    metadata) - a bad value, an unknown setting, preset or target, candidates of which none is available. A client
    error: ``status_code`` 400, so litellm does not retry the request and the proxy answers 400, not 500."""

    status_code = 400


class UnpricedDeploymentError(ConfigurationError):
    """A deployment has no known price and no default price was given."""


class InferenceError(PrefillRouterError):
    """The encoder or the scorer failed on a request."""


class PromptError(PrefillRouterError):
    """A request's messages cannot be turned into encoder text."""


class UnsupportedLiteLLMError(ConfigurationError, ImportError):
    """The installed litellm cannot carry what was asked. No supported release raises it now: litellm 1.110 refused
    prefill routing groups until the integration routed them through the new core's entry points. Kept so that code
    catching it still imports. An ``ImportError`` too, as it was when the proxy hook refused litellm 1.110 at
    import."""
