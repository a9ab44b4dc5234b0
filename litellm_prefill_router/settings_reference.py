"""The settings reference: a Markdown table per settings model, made from the models themselves (name, type, bounds,
default, description), so the documentation cannot drift from what is validated. ``prefill-router settings`` prints
the tables; ``--write docs/litellm.md`` rewrites each table between its markers
(``<!-- settings: NAME -->`` ... ``<!-- /settings -->``), which a test checks are current."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .autotune import AutotuneSettings
from .config import PrefillStrategyArgs, RequestOverrides
from .errors import ConfigurationError
from .hook_settings import ROUTING_PLUGIN, SEMANTIC_ROUTER, TIER_CLASSIFIER

#: the documented settings: where each is set (a config key, or the class whose constructor takes them) -> its model
SETTINGS: dict[str, type[BaseModel]] = {
    "routing_strategy_args": PrefillStrategyArgs,
    "metadata.prefill": RequestOverrides,
    "autotune": AutotuneSettings,
    "PrefillTierClassifier": TIER_CLASSIFIER,
    "PrefillRoutingPlugin": ROUTING_PLUGIN,
    "PrefillSemanticRouter": SEMANTIC_ROUTER,
}
_BLOCK = re.compile(r"(<!-- settings: (?P<name>[\w.]+) -->\n).*?(<!-- /settings -->)", re.S)
#: the LangChain runnable's arguments, documented where langchain-core is installed (the `langchain` extra)
RUNNABLE = "PrefillRouterRunnable"


def settings_models() -> dict[str, type[BaseModel]]:
    """:data:`SETTINGS`, and the LangChain runnable's arguments when langchain-core is installed."""
    try:
        from langchain_integration import PrefillRouterRunnable
    except ImportError:
        return dict(SETTINGS)
    return {**SETTINGS, RUNNABLE: PrefillRouterRunnable}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:  # a bounded type shared by several models (config.Share, ...): its bounds come below
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return names[0] if len(names) == 1 else " or ".join(names)
    if origin is list:
        return "list"
    if origin is tuple:
        return "tuple"
    if origin in (dict, Mapping):
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {bool: "bool", int: "int", float: "number", str: "string"}.get(annotation, str(annotation))


def _constraints(annotation: Any) -> list[Any]:
    """The constraints a bounded type inside ``annotation`` carries (``Share | None``: ``Share``'s)."""
    if get_origin(annotation) is Annotated:
        _, *extras = get_args(annotation)
        return [m for extra in extras for m in (extra.metadata if isinstance(extra, FieldInfo) else [extra])]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _constraints(arg)]
    return []


def _bounds(field: FieldInfo) -> str:
    marks = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}
    constraints = [*field.metadata, *_constraints(field.annotation)]
    parts = [f"{marks[type(m)][0]} {_number(getattr(m, marks[type(m)][1]))}" for m in constraints
             if type(m) in marks]
    parts += ["not empty" for m in constraints if isinstance(m, MinLen) and m.min_length == 1]
    return ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is None:
        return "-"
    if isinstance(value, tuple) and all(isinstance(v, type) for v in value):
        return f"`({', '.join(v.__name__ for v in value)},)`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def markdown_table(model: type[BaseModel]) -> str:
    """One row per setting of ``model``: its name (the alias where it has one), type and bounds, default, and
    description."""
    rows = ["| setting | type | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        what = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{field.alias or name}` | {kind}{f' ({bounds})' if bounds else ''} | {_default(field)} | "
                    f"{what} |")
    return "\n".join(rows) + "\n"


def rendered(text: str) -> str:
    """``text`` with every settings table between its markers made from the models."""
    models = settings_models()

    def table(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in models:
            raise ConfigurationError(f"settings marker names {name!r}, which is not one of {sorted(models)}"
                                     + ("" if name != RUNNABLE else " (install the `langchain` extra)"))
        return match.group(1) + markdown_table(models[name]) + match.group(3)
    return _BLOCK.sub(table, text)


def write_tables(path: str | Path) -> bool:
    """Rewrite the settings tables of the Markdown file ``path``; whether anything changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigurationError(f"cannot read {path} to write its settings tables: {err}") from err
    if not _BLOCK.search(text):
        raise ConfigurationError(f"{path} has no settings table markers (<!-- settings: NAME --> ... "
                                 "<!-- /settings -->)")
    new = rendered(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
