"""A ``db_query`` step's SQL: one statement with ``:name`` parameters, rewritten to the driver's numbered ones.

SQL is tokenised by sqlparse, so a ``:name`` inside a string literal, a quoted identifier, a comment or a
dollar-quoted body is text, and PostgreSQL's ``::`` cast is no parameter. Values never enter the SQL: each
``:name`` becomes ``$n`` (asyncpg) or ``?n`` (sqlite3) and the driver binds the value. The same checks run
when a blueprint loads and again in the service (which trusts no payload's SQL to be well formed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import sqlparse
from sqlparse import tokens as T

Mode = Literal["select", "insert", "update"]
Output = Literal["single", "multiple"]
MODES: tuple[Mode, ...] = ("select", "insert", "update")
OUTPUTS: tuple[Output, ...] = ("single", "multiple")
_STATEMENT_OF = {"select": "SELECT", "insert": "INSERT", "update": "UPDATE"}
API_PREFIX = "dbquery."
# ``'{email}'`` or ``'{0}'`` in a literal is a format string waiting for values (an array literal of one
# bare word looks the same: write ARRAY['word'] for that).
_FORMAT_FIELD = re.compile(r"\{(?:[A-Za-z_][A-Za-z0-9_.]*|\d+)(?:![rsa])?(?::[^{}]*)?\}")


def dbquery_api(connection: str) -> str:
    """The service api of a connection: a dot no blueprint api name may hold, so none can collide with it."""
    return API_PREFIX + connection


class SqlError(ValueError):
    """SQL a ``db_query`` step cannot run; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class NamedSql:
    """One statement, its ``:name`` parameters in order of first use, and whether it returns rows."""

    text: str
    names: tuple[str, ...]
    statement: str  # SELECT, INSERT, UPDATE, DELETE, UNKNOWN (sqlparse's word for it)
    returning: bool
    _pieces: tuple[str | int, ...]  # text, or the index of a parameter in ``names``

    @classmethod
    def parse(cls, text: str) -> NamedSql:
        if not isinstance(text, str) or not text.strip():
            raise SqlError("sql must be a non-empty string")
        statements = [s for s in sqlparse.parse(text) if s.value.strip().strip(";").strip()]
        if len(statements) != 1:
            raise SqlError(f"sql holds {len(statements)} statements; a db_query step runs exactly one")
        statement = statements[0]
        names: list[str] = []
        pieces: list[str | int] = []
        returning = False
        for token in statement.flatten():  # type: ignore[no-untyped-call]  # sqlparse has no annotations
            value = token.value
            if token.ttype is T.Error and value in "{}":
                raise SqlError(f"sql uses {value!r}: no formatting of values into SQL; write :name and list "
                               "the name under params (the driver binds the value)")
            if token.ttype in T.Name.Placeholder:
                if not value.startswith(":") or value.startswith("::"):
                    raise SqlError(f"sql uses the placeholder {value!r}; write :name and list the name under "
                                   "params (the driver binds the value)")
                name = value[1:]
                if name not in names:
                    names.append(name)
                pieces.append(names.index(name))
                continue
            if token.ttype in T.Keyword and value.upper() == "RETURNING":
                returning = True
            if "${" in value and token.ttype not in T.Comment:
                raise SqlError("sql holds ${...}: SQL is no template; write :name and list the name under params")
            if token.ttype in T.Literal.String and (field := _FORMAT_FIELD.search(value)):
                raise SqlError(f"sql holds {field.group()!r} in a string: no formatting of values into SQL; "
                               "write :name (unquoted) and list the name under params")
            pieces.append(value)
        kind: str = statement.get_type()  # type: ignore[no-untyped-call]
        return cls(text, tuple(names), kind, returning, tuple(pieces))

    def check_mode(self, mode: str, output: str) -> None:
        """The statement must be what ``mode`` says; ``multiple`` rows of a write need ``RETURNING``."""
        if mode not in _STATEMENT_OF:
            raise SqlError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if output not in OUTPUTS:
            raise SqlError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
        if self.statement != _STATEMENT_OF[mode]:
            raise SqlError(f"mode {mode!r} needs a {_STATEMENT_OF[mode]} statement, but the sql is "
                           f"{'an unrecognised statement' if self.statement == 'UNKNOWN' else self.statement}")
        if mode != "select" and output == "multiple" and not self.returning:
            raise SqlError(f"output 'multiple' of an {mode} returns rows only with RETURNING; add RETURNING "
                           "(the columns you keep) or use output 'single' (the affected-row count)")

    def numbered(self, style: Literal["$", "?"]) -> str:
        """The SQL with ``:name`` replaced by ``$1``/``?1``..., numbered in the order of ``names``."""
        return "".join(p if isinstance(p, str) else f"{style}{p + 1}" for p in self._pieces)
