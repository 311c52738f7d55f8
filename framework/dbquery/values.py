"""Database values as JSON, and JSON values as database parameters.

Rows out (``json_safe``), so a reply is plain JSON that the process document can hold unchanged:

=====================  =======================================================================
database value         in the reply
=====================  =======================================================================
decimal / numeric      a string, exact (``"12.50"``): a float would round money
float NaN, ±Infinity   the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers)
timestamp, date, time  ISO 8601 (``"2026-03-01T09:30:00+00:00"``, ``"2026-03-01"``, ``"09:30:00"``);
                       an offset only where the value has one (timestamptz does)
interval               seconds, a number
bytes / bytea / BLOB   base64 (RFC 4648, padded)
uuid                   its canonical string
arrays                 lists, element by element
json / jsonb           their JSON text, a string (asyncpg's default)
anything else          ``str(value)`` (network addresses, ranges, geometric types)
=====================  =======================================================================

Parameters in (``pg_parameter``): a JSON value is bound as it is, except where PostgreSQL types the
parameter as one of the kinds above: then the inverse rule applies (an ISO string for a date, a string or
number for a numeric, base64 for bytea, a string for a uuid, any JSON value for json/jsonb), so a blueprint
never needs a cast to pass a date. SQLite stores what it is given; a list or object goes in as JSON text.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON by the rule above."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ("NaN" if math.isnan(value) else
                                                   "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else ("NaN" if value.is_nan() else
                                                     "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def json_row(row: Any) -> dict[str, Any]:
    """A driver's row (asyncpg Record, or a mapping) as a JSON object."""
    return {str(k): json_safe(v) for k, v in dict(row).items()}


def _timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _timestamptz(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # no offset: UTC, as the output rule says


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


_FROM_STRING: dict[str, Callable[[str], Any]] = {
    "date": dt.date.fromisoformat, "timestamp": _timestamp, "timestamptz": _timestamptz,
    "time": dt.time.fromisoformat, "timetz": dt.time.fromisoformat, "uuid": uuid.UUID, "bytea": _bytes,
}


def pg_parameter(value: Any, type_name: str, name: str) -> Any:
    """``value`` (JSON) for a PostgreSQL parameter of type ``type_name``; ``ValueError`` says why not."""
    if value is None:
        return None
    try:
        if type_name in ("json", "jsonb"):
            return orjson.dumps(value).decode()
        if type_name == "numeric" and isinstance(value, int | float | str) and not isinstance(value, bool):
            return Decimal(str(value))
        if type_name in ("float4", "float8") and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type_name == "interval" and isinstance(value, int | float) and not isinstance(value, bool):
            return dt.timedelta(seconds=value)
        if type_name in _FROM_STRING and isinstance(value, str):
            return _FROM_STRING[type_name](value)
    except (ValueError, InvalidOperation, binascii.Error, OverflowError) as exc:
        raise ValueError(f"parameter :{name} ({type_name}): {value!r} does not convert ({exc})") from None
    return value


def sqlite_parameter(value: Any) -> Any:
    """``value`` (JSON) for SQLite: scalars as they are, a list or object as JSON text."""
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else value
