"""Field specifications (``{type, required, min, max, ...}``) as pydantic models.

One vocabulary serves a blueprint's ``input`` (the process input, validated when a process starts) and its
``validate`` steps (data checked mid-process), so both report errors the same way: a path and a reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.config import ExtraValues

_TYPES: dict[str, Any] = {
    "string": str, "integer": int, "number": float, "boolean": bool, "object": dict[str, Any],
    "array": list[Any], "date": dt.date, "datetime": dt.datetime, "any": Any,
}
_CONSTRAINTS = {"min": "ge", "max": "le", "min_length": "min_length", "max_length": "max_length", "pattern": "pattern"}


def model_from_fields(
    name: str, fields: Mapping[str, Mapping[str, Any]], *, extra: ExtraValues
) -> type[BaseModel]:
    """A pydantic model with one attribute per field spec. Fields are required unless ``required: false``
    or they have a ``default``."""
    definitions: dict[str, Any] = {}
    for field_name, spec in fields.items():
        annotation = _TYPES[spec.get("type", "any")]
        if "enum" in spec:
            annotation = Literal[tuple(spec["enum"])]
        constraints = {_CONSTRAINTS[k]: v for k, v in spec.items() if k in _CONSTRAINTS}
        if "default" in spec:
            definitions[field_name] = (annotation, Field(spec["default"], **constraints))
        elif spec.get("required", True):
            definitions[field_name] = (annotation, Field(..., **constraints))
        else:
            definitions[field_name] = (annotation | None, Field(None, **constraints))
    return create_model(name, __config__=ConfigDict(extra=extra), **definitions)


def check_value(model: type[BaseModel], value: Any) -> list[str]:
    """Errors of ``value`` against ``model`` as ``"field: reason"``; strict JSON types (``"5"`` is no integer)."""
    try:
        TypeAdapter(model).validate_json(orjson.dumps(value), strict=True)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in err['loc']) or '(value)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
    return []
