"""Settings a person writes: one way to say what a pydantic ``ValidationError`` found in them (each bad setting with
what it got and what the setting is for; an unknown setting with the known one it most likely meant - a typo in a
proxy config otherwise reads as pydantic's ``Extra inputs are not permitted``), and :class:`Settings`, the base of
their models, which refuses true/false for a number."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

_MAX_INPUT = 80  # characters of a bad value quoted back


def _options(field: FieldInfo) -> tuple[Any, ...]:
    """The types a field takes: ``(X, NoneType)`` for ``X | None``, ``(X,)`` for ``X``."""
    annotation = field.annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def _submodel(field: FieldInfo | None) -> type[BaseModel] | None:
    """The model a field holds (``X``, ``X | None``), to name the settings of a nested mapping."""
    if field is None:
        return None
    return next((o for o in _options(field) if isinstance(o, type) and issubclass(o, BaseModel)), None)


def _field(model: type[BaseModel] | None, name: str) -> FieldInfo | None:
    if model is None:
        return None
    fields = model.model_fields
    return fields.get(name) or next((f for f in fields.values() if f.alias == name), None)


def _names(model: type[BaseModel]) -> list[str]:
    """The names a person writes: a field's alias where it has one (``lambda``), else its name."""
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT else text[: _MAX_INPUT - 3] + "..."


def explain(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``err``'s problems, ``"; "``-joined: ``path: message, got value (setting: description)``, or for an unknown
    setting ``path: unknown setting; did you mean 'x'?`` (else the known settings). ``model`` is the model validated
    (its field descriptions and, for nested settings, the nested models' fields)."""
    problems = []
    for error in err.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        owner, field = model, None  # the model holding the last named setting, and that setting's field
        for depth, part in enumerate(loc):
            field = _field(owner, part)
            if depth < len(loc) - 1:
                owner = _submodel(field)
        path = ".".join(loc) or "(the settings)"
        if error["type"] == "extra_forbidden" and owner is not None and loc:
            known = _names(owner)
            close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"the settings are {', '.join(known)}"
            problems.append(f"{path}: unknown setting; {hint}")
            continue
        what = f" ({loc[-1]}: {field.description})" if field is not None and field.description else ""
        message = error["msg"].removeprefix("Value error, ")  # a validator's own words need no prefix
        problems.append(f"{path}: {message}, got {_quoted(error.get('input'))}{what}")
    return "; ".join(problems)


def _takes_bool(field: FieldInfo) -> bool:
    options = _options(field)
    return bool in options or typing.Any in options


def no_bool_for_a_number(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A ``field_validator("*", mode="before")``: true/false refused for a setting that does not take it. Pydantic
    reads ``True`` as 1 - ``tolerance: yes`` in a YAML config (YAML 1.1 reads yes/on as true) would be a tolerance of
    1, every request to the cheapest target."""
    field = cls.model_fields.get(info.field_name or "")
    if isinstance(value, bool) and field is not None and not _takes_bool(field):
        raise ValueError("true/false is not a value of this setting (YAML reads yes/no and on/off as true/false)")
    return value


class Settings(BaseModel):
    """Base of the models of settings a person writes: a number given as true/false is refused
    (:func:`no_bool_for_a_number`)."""

    _no_bool_for_a_number = field_validator("*", mode="before")(no_bool_for_a_number)
