"""The blueprint expression language: JMESPath over JSON data, plus registered Python functions.

Nothing a blueprint says is ever handed to ``eval``: an expression is parsed by JMESPath into a tree that
can only select, filter, project and compare JSON values and call the functions in its table. Field
access on data is a dictionary lookup (never ``getattr``), and what a custom function returns is checked to
be plain JSON, so no expression can reach a Python object, attribute or module.

Two forms:

* an **expression** (``keep``, ``set``, ``where``, ``if``...): ``store.products[?price > `0`].sku``;
* a **template** (request URLs, headers and bodies, results): any JSON value in which a string may hold
  ``${expression}``. A string that is exactly one ``${...}`` takes the expression's value (a number stays a
  number); otherwise each ``${...}`` is written into the string (a null there is an error, not "None").
  ``$${`` writes a literal ``${``.

Data: ``input``, ``store`` (what earlier steps kept), ``const`` (the blueprint's constants), ``failure``
(on an ``on_failed`` path), and where a step has them ``reply``, ``item`` and ``fan_in``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import orjson

from framework.errors import StageflowError

MAX_EXPRESSION_CHARS = 2000
BASE_ROOTS = frozenset({"input", "store", "const", "failure"})
_ANY_ROOT = BASE_ROOTS | {"reply", "item", "fan_in", "event"}
_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ExpressionError(StageflowError):
    """An expression that does not parse, names unknown data or functions, or fails when evaluated."""


def _json_only(value: Any, where: str) -> Any:
    """Plain JSON or an error: a function must not smuggle a Python object into the data."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value) in (list, tuple):
        return [_json_only(v, where) for v in value]
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: _json_only(v, where) for k, v in value.items()}
    raise ExpressionError(f"{where} returned a {type(value).__name__}, not JSON data")


class _BuiltinFunctions(jmespath.functions.Functions):
    """A few string and number helpers JMESPath lacks."""

    @jmespath.functions.signature({"types": ["string"]})
    def _func_upper(self, value: str) -> str:
        return value.upper()

    @jmespath.functions.signature({"types": ["string"]})
    def _func_lower(self, value: str) -> str:
        return value.lower()

    @jmespath.functions.signature({"types": ["string"]})
    def _func_trim(self, value: str) -> str:
        return value.strip()

    @jmespath.functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, value: str, separator: str) -> list[str]:
        return value.split(separator)

    @jmespath.functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_round(self, value: float, digits: float) -> float:
        return round(value, int(digits))

    @jmespath.functions.signature({"types": ["array"]})
    def _func_first(self, value: list[Any]) -> Any:
        return value[0] if value else None

    @jmespath.functions.signature({"types": []}, {"types": []})
    def _func_default(self, value: Any, fallback: Any) -> Any:
        return fallback if value is None else value


def _custom_method(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, *args: Any) -> Any:
        try:
            result = function(*args)
        except ExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a blueprint's function raises is the expression's error
            raise ExpressionError(f"function {name}() failed: {type(exc).__name__}: {exc}") from None
        return _json_only(result, f"function {name}()")

    params = [
        p for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    method.signature = tuple({"types": []} for _ in params)  # type: ignore[attr-defined]  # any JSON type
    return method


@dataclass(frozen=True, slots=True)
class Compiled:
    source: str
    parsed: Any

    def search(self, data: Mapping[str, Any], options: jmespath.Options) -> Any:
        return self.parsed.search(data, options=options)


class Expressions:
    """Parses and evaluates expressions and templates with one table of functions.

    ``functions``: name -> Python callable taking JSON values and returning JSON (e.g. ``{"slug": slugify}``).
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        methods: dict[str, Any] = {}
        for name, function in (functions or {}).items():
            if not _FUNCTION_NAME.match(name) or not callable(function):
                raise ExpressionError(f"custom function {name!r}: need a lowercase name and a callable")
            methods[f"_func_{name}"] = _custom_method(name, function)
        table: type[_BuiltinFunctions] = type("BlueprintFunctions", (_BuiltinFunctions,), methods)
        self.function_names = frozenset(table.FUNCTION_TABLE)
        self._arity = {  # name -> (arguments, variadic)
            name: (len(spec["signature"]), bool(spec["signature"] and spec["signature"][-1].get("variadic")))
            for name, spec in table.FUNCTION_TABLE.items()
        }
        self._options = jmespath.Options(custom_functions=table())
        self._cache: dict[str, Compiled] = {}

    # -- parsing and checking (at load time) -------------------------------------------------------------

    def compile(self, source: str, *, roots: frozenset[str] = BASE_ROOTS) -> Compiled:
        """Parse ``source``; raise ``ExpressionError`` for bad syntax, unknown data roots or functions."""
        if not isinstance(source, str) or not source.strip():
            raise ExpressionError("an expression must be a non-empty string")
        if len(source) > MAX_EXPRESSION_CHARS:
            raise ExpressionError(f"an expression is limited to {MAX_EXPRESSION_CHARS} characters")
        cached = self._cache.get(source)
        if cached is None:
            try:
                cached = Compiled(source, jmespath.compile(source))
            except jmespath.exceptions.JMESPathError as exc:
                message = " ".join(str(exc).split())
                raise ExpressionError(f"invalid expression {source!r}: {message}") from None
            self._cache[source] = cached
        for name, given in _function_calls(cached.parsed.parsed):
            if name not in self.function_names:
                close = difflib.get_close_matches(name, self.function_names, n=1)
                hint = f" (did you mean {close[0]}()?)" if close else ""
                raise ExpressionError(f"expression {source!r} calls unknown function {name}(){hint}")
            wanted = self._arity[name]
            if given != wanted[0] and not (wanted[1] and given >= wanted[0]):
                count = f"at least {wanted[0]}" if wanted[1] else str(wanted[0])
                raise ExpressionError(f"expression {source!r}: {name}() takes {count} argument(s), not {given}")
        for name in _root_fields(cached.parsed.parsed):
            if name not in roots:
                close = difflib.get_close_matches(name, roots, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ExpressionError(
                    f"expression {source!r} reads {name!r}, which is not available here "
                    f"({hint}available: {', '.join(sorted(roots))})"
                )
        return cached

    def template_errors(self, template: Any, *, roots: frozenset[str] = BASE_ROOTS) -> list[tuple[str, str]]:
        """Every ``${...}`` of a template that does not parse or check: (path in the template, message)."""
        errors = []
        for path, text in _strings(template, ""):
            try:
                parts = _split_template(text, path)
            except ExpressionError as exc:
                errors.append((path, exc.message))
                continue
            for part in parts:
                if isinstance(part, _Expr):
                    try:
                        self.compile(part.source, roots=roots)
                    except ExpressionError as exc:
                        errors.append((path, exc.message))
        return errors

    def template_reads(self, template: Any) -> Iterator[tuple[str, str, str | None]]:
        """(path in the template, top-level name, key under it) of every read a checked template makes, so a
        loader can tell ``store.email`` from what earlier steps keep."""
        for path, text in _strings(template, ""):
            for part in _split_template(text, path):
                if isinstance(part, _Expr):
                    for root, key in _data_reads(self.compile(part.source, roots=_ANY_ROOT).parsed.parsed):
                        yield path, root, key

    # -- evaluating (at run time) --------------------------------------------------------------------------

    def evaluate(self, source: str, data: Mapping[str, Any]) -> Any:
        compiled = self._cache.get(source) or self.compile(source, roots=frozenset(data))
        try:
            return compiled.search(data, self._options)
        except ExpressionError:
            raise
        except jmespath.exceptions.JMESPathError as exc:
            raise ExpressionError(f"expression {source!r} failed: {' '.join(str(exc).split())}") from None
        except Exception as exc:  # noqa: BLE001 - a built-in's own error (split(x, '')) is the expression's
            raise ExpressionError(f"expression {source!r} failed: {type(exc).__name__}: {exc}") from None

    def render(self, template: Any, data: Mapping[str, Any]) -> Any:
        """A template's value: ``${...}`` replaced by what the expressions evaluate to."""
        if isinstance(template, str):
            parts = _split_template(template, "")
            if len(parts) == 1 and isinstance(parts[0], _Expr):
                return self.evaluate(parts[0].source, data)
            out = []
            for part in parts:
                if isinstance(part, _Expr):
                    value = self.evaluate(part.source, data)
                    if value is None:
                        raise ExpressionError(f"${{{part.source}}} is null in {template!r}")
                    out.append(value if isinstance(value, str) else orjson.dumps(value).decode())
                else:
                    out.append(part)
            return "".join(out)
        if isinstance(template, Mapping):
            return {key: self.render(value, data) for key, value in template.items()}
        if isinstance(template, list):
            return [self.render(value, data) for value in template]
        return template


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, "", [] and {} are false; 0 is true."""
    return not (value is None or value is False or value in ("", [], {}))


def template_parts(text: str) -> list[tuple[str, bool]]:
    """A template string as (text, is an expression) pairs, for a renderer that treats each value apart (a URL
    encodes the values it holds)."""
    return [(p.source, True) if isinstance(p, _Expr) else (p, False) for p in _split_template(text, "")]


@dataclass(frozen=True, slots=True)
class _Expr:
    source: str


def _split_template(text: str, path: str) -> list[str | _Expr]:
    """Literal text and ``${...}`` expressions; braces inside quotes and backtick literals do not count."""
    parts: list[str | _Expr] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
            continue
        if not text.startswith("${", i):
            literal.append(text[i])
            i += 1
            continue
        end = _closing_brace(text, i + 2)
        if end < 0:
            raise ExpressionError(f"unclosed ${{ in {text!r}", path=path)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_Expr(text[i + 2:end].strip()))
        i = end + 1
    if literal or not parts:
        parts.append("".join(literal))
    return parts


def _closing_brace(text: str, start: int) -> int:
    depth, quote = 0, None
    for j in range(start, len(text)):
        ch = text[j]
        if quote:
            if ch == "\\":
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return j
            depth -= 1
    return -1


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _function_calls(node: Any) -> Iterator[tuple[str, int]]:
    """(function name, number of arguments) of every call in a parsed expression."""
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node["value"], len(node.get("children", ()))
        for child in node.get("children", ()):
            yield from _function_calls(child)


# Node types whose first child is evaluated against the same value as the node, and the rest per element.
_LEFT_ONLY = frozenset({"subexpression", "index_expression", "projection", "value_projection", "flatten",
                        "filter_projection", "pipe"})
# Node types all of whose children are evaluated against the same value as the node.
_ALL_CHILDREN = frozenset({"comparator", "and_expression", "or_expression", "not_expression",
                           "function_expression", "multi_select_list", "multi_select_dict", "key_val_pair"})


def _root_fields(node: Any) -> Iterator[str]:
    """The top-level names an expression reads from its data (``store`` in ``store.a[0]``), so a typo
    such as ``stroe.a`` is refused at load instead of quietly evaluating to null."""
    for root, _ in _data_reads(node):
        yield root


def _data_reads(node: Any) -> Iterator[tuple[str, str | None]]:
    """(top-level name, the key read under it or None) for every read of the data (``("store", "a")`` in
    ``store.a[0]``)."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    children = node.get("children", ())
    if kind == "field":
        yield node["value"], None
    elif kind == "subexpression" and len(children) >= 2 and all(c.get("type") == "field" for c in children[:2]):
        yield children[0]["value"], children[1]["value"]  # a.b.c is one subexpression of three fields
    elif kind in _LEFT_ONLY:
        if children:
            yield from _data_reads(children[0])
    elif kind in _ALL_CHILDREN:
        for child in children:
            yield from _data_reads(child)
