"""LiteLLM proxy config files (``model_list`` + ``router_settings`` + ``litellm_settings``, YAML), parsed with
pydantic; ``os.environ/NAME`` values read as the proxy reads them. Used by ``collect`` and ``check``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigurationError, PrefillRouterError
from .validation_messages import explain


class Deployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_name: str
    litellm_params: dict[str, Any]
    model_info: dict[str, Any] = Field(default_factory=dict)


class RouterConfig(BaseModel):
    """A LiteLLM proxy config (or a bare ``model_list`` file): the deployments and the router settings."""

    model_config = ConfigDict(extra="allow")
    model_list: list[Deployment] = Field(min_length=1)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)


def read_router_config(path: str | Path, error: type[PrefillRouterError] = ConfigurationError) -> RouterConfig:
    """Parse a LiteLLM proxy config file; ``error`` is raised (naming the file and what is wrong) if it is not one."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise error(f"cannot read router config {p}: {err}") from err
    if isinstance(raw, list):
        raw = {"model_list": raw}
    try:
        return RouterConfig.model_validate(raw)
    except ValidationError as err:
        raise error(f"{p}: not a LiteLLM model_list config: {explain(err, RouterConfig)}") from err


def resolve_env(obj: Any, unset: set[str] | None = None) -> Any:
    """``os.environ/NAME`` values (the proxy's convention) become the variable's value ("" if it is not set; its
    name is added to ``unset`` when given)."""
    if isinstance(obj, dict):
        return {k: resolve_env(v, unset) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_env(v, unset) for v in obj]
    if isinstance(obj, str) and obj.startswith("os.environ/"):
        name = obj.split("/", 1)[1]
        if unset is not None and name not in os.environ:
            unset.add(name)
        return os.environ.get(name, "")
    return obj


def load_proxy_config(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """The config's deployments, its router settings and its litellm settings, ``os.environ/`` values in the router
    settings read as the proxy reads them (a deployment's secrets are left to litellm, which reads them itself)."""
    cfg = read_router_config(path)
    unset: set[str] = set()
    settings = resolve_env(cfg.router_settings, unset)
    if unset:
        names = ", ".join(f"os.environ/{n}" for n in sorted(unset))
        raise ConfigurationError(f"{path}: router_settings reads {names}, not set here; export what the proxy will see "
                                 "(e.g. the bundle directory) and check again")
    return [d.model_dump() for d in cfg.model_list], settings, cfg.litellm_settings
