"""Where PostgreSQL and SQLite differ, and nothing else: types, placeholders, JSON access, list parameters.

Statements are written once in PostgreSQL's spelling (``$1``, ``$1::jsonb``); ``Dialect.sql`` turns them into
SQLite's (``?1``, casts dropped). JSON is read through ``json_field`` and patched through ``json_set``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

JsonKind = Literal["text", "int", "float", "json"]

_PLACEHOLDER = re.compile(r"\$(\d+)(?:::[a-z0-9]+(?:\[\])?)?")


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    types: dict[str, str]  # the schema's abstract column types (TEXT, INT, REAL, BOOL, JSON) in this database
    no_limit: int | None  # a LIMIT parameter that means "no limit"
    for_update: str  # the row-lock clause of a SELECT inside a write transaction ('' where the lock is the file's)
    processes_options: str  # storage options of the processes table

    def sql(self, text: str) -> str:
        """A statement written with PostgreSQL placeholders, in this dialect."""
        return text if self.name == "postgresql" else _PLACEHOLDER.sub(r"?\1", text)

    def json_field(self, column: str, *path: str, kind: JsonKind = "text") -> str:
        """The value at ``path`` in the JSON ``column``: text, a number, or JSON text (``json``)."""
        if self.name != "postgresql":
            return f"json_extract({column}, '$.{'.'.join(path)}')"
        inner = "".join(f"->'{key}'" for key in path[:-1])
        if kind == "json":
            return f"{column}{inner}->'{path[-1]}'"
        text = f"{column}{inner}->>'{path[-1]}'"
        return {"text": text, "int": f"({text})::int", "float": f"({text})::float8"}[kind]

    def json_set(self, column: str, values: dict[str, str]) -> str:
        """``column`` (a JSON object) with the keys of ``values`` set to those SQL expressions."""
        if self.name == "postgresql":
            pairs = ", ".join(f"'{key}', {value}" for key, value in values.items())
            return f"{column} || jsonb_build_object({pairs})"
        pairs = ", ".join(f"'$.{key}', {value}" for key, value in values.items())
        return f"json_set({column}, {pairs})"

    def json_equals(self, column: str, key: str, value: Any) -> tuple[str, Any]:
        """A condition (``?`` for its parameter) and the parameter: the JSON object ``column`` has ``key`` equal to
        ``value``. PostgreSQL's containment is served by a GIN index; SQLite reads the key."""
        if self.name == "postgresql":
            return f"{column} @> ?::jsonb", orjson.dumps({key: value}).decode()
        return f"json_extract({column}, '$.{key}') = ?", value

    def in_list(self, param: int) -> str:
        """``IN`` the list passed as parameter ``param`` (see ``list_param``)."""
        if self.name == "postgresql":
            return f"= ANY(${param}::text[])"
        return f"IN (SELECT value FROM json_each(${param}))"

    def list_param(self, values: list[str] | tuple[str, ...]) -> Any:
        return list(values) if self.name == "postgresql" else orjson.dumps(list(values)).decode()


POSTGRESQL = Dialect(
    name="postgresql",
    types={"TEXT": "text", "INT": "integer", "REAL": "double precision", "BOOL": "boolean", "JSON": "jsonb"},
    no_limit=None, for_update=" FOR UPDATE",
    # room in each page for HOT updates (a transition that keeps status and due_at rewrites no index)
    processes_options=" WITH (fillfactor = 70)",
)
SQLITE = Dialect(
    name="sqlite",
    types={"TEXT": "TEXT", "INT": "INTEGER", "REAL": "REAL", "BOOL": "INTEGER", "JSON": "TEXT"},
    no_limit=-1, for_update="", processes_options="",
)
