"""Search attributes: typed values a case declares (``search_attributes = {"customer_id": str}``), set by its
stages (``ctx.search["customer_id"] = "C-1"``) and filtered on in lists (``ProcessFilter(search=...)``,
``GET /processes?case=order&search=customer_id=C-1``, ``stageflow list --search``).

The store keeps them in a column of their own beside the document (a GIN index in PostgreSQL), written with
the transition that sets them: no extra write. Pure checks here, shared by the case, the planner, the gateway
and the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from framework.errors import CaseDefinitionError, InvalidInputError

SEARCH_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
SEARCH_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_SEARCH_TEXT = 200

SearchFilter = tuple[tuple[str, Any], ...]


def check_declaration(case: str, declared: Any) -> dict[str, type]:
    """The case's ``search_attributes``, checked when the class is defined."""
    if not isinstance(declared, Mapping):
        raise CaseDefinitionError(f"case {case}: search_attributes must be a dict of name -> type",
                                  hint='e.g. search_attributes = {"customer_id": str, "order_total": float}')
    for name, kind in declared.items():
        if not isinstance(name, str) or not SEARCH_NAME.match(name):
            raise CaseDefinitionError(f"case {case}: search attribute {name!r} is not a lowercase identifier",
                                      hint="use letters, digits and _, starting with a letter or _")
        if kind not in SEARCH_TYPES:
            raise CaseDefinitionError(f"case {case}: search attribute {name!r} has type {kind!r}",
                                      hint="the types are str, int, float and bool")
    return dict(declared)


def value_problem(declared: Mapping[str, type], name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the search attribute ``name``; None if it can."""
    kind = declared.get(name)
    if kind is None:
        known = ", ".join(declared) or "none"
        return f"search attribute {name!r} is not declared by the case (declared: {known})"
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, int | float) and not isinstance(value, bool) if kind is float
          else isinstance(value, kind) and not isinstance(value, bool))
    if not ok:
        return f"search attribute {name!r} must be of type {SEARCH_TYPES[kind]}, not {value!r}"
    if isinstance(value, str) and (len(value) > MAX_SEARCH_TEXT or "\x00" in value):
        return f"search attribute {name!r} must be at most {MAX_SEARCH_TEXT} characters, with no NUL"
    return None


def parse_filters(declared: Mapping[str, type], pairs: Sequence[str], *, case: str | None) -> SearchFilter:
    """``name=value`` pairs (from a query string or the CLI) as a typed filter on ``case``'s attributes."""
    if not pairs:
        return ()
    if case is None:
        raise InvalidInputError("a search filter needs the case (its attributes are declared per case)",
                                errors=[{"field": "case", "message": "required with search"}])
    found: list[tuple[str, Any]] = []
    errors: list[dict[str, str]] = []
    for pair in pairs:
        name, sep, text = pair.partition("=")
        kind = declared.get(name)
        if not sep or kind is None:
            errors.append({"field": "search", "message": f"{pair!r}: expected name=value with a declared name "
                           f"({', '.join(declared) or 'none declared'})"})
            continue
        try:
            value: Any = (text == "true" if text in ("true", "false") else _bad(text)) if kind is bool \
                else kind(text)
        except ValueError:
            errors.append({"field": "search", "message": f"{pair!r}: not a {SEARCH_TYPES[kind]}"})
            continue
        found.append((name, value))
    if errors:
        raise InvalidInputError(f"invalid search filter: {'; '.join(e['message'] for e in errors)}", errors=errors)
    return tuple(found)


def _bad(text: str) -> bool:
    raise ValueError(text)
