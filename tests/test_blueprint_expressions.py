"""The blueprint expression language: JMESPath over JSON, templates, custom functions, and its safety."""

from __future__ import annotations

import os

import pytest

from framework.blueprint import ExpressionError, Expressions

DATA = {
    "input": {"order_id": "A-1", "qty": 3},
    "store": {"rows": [{"sku": "X-1", "price": 5}, {"sku": "X-2", "price": 0}], "slot": "2026-12-24T10:00"},
    "const": {"api": "http://127.0.0.1:9"},
    "failure": None,
}


def test_expressions_select_filter_project_and_call_functions() -> None:
    ex = Expressions({"double": lambda n: n * 2})
    assert ex.evaluate("input.order_id", DATA) == "A-1"
    assert ex.evaluate("store.rows[?price > `0`].sku", DATA) == ["X-1"]
    assert ex.evaluate("store.rows[].{id: sku, p: price}", DATA) == [{"id": "X-1", "p": 5}, {"id": "X-2", "p": 0}]
    assert ex.evaluate("length(store.rows)", DATA) == 2
    assert ex.evaluate("first(store.rows).sku", DATA) == "X-1"
    assert ex.evaluate("upper(input.order_id)", DATA) == "A-1"
    assert ex.evaluate("double(input.qty)", DATA) == 6
    assert ex.evaluate("default(input.missing, 'none')", DATA) == "none"


def test_templates_keep_types_interpolate_strings_and_refuse_nulls() -> None:
    ex = Expressions()
    assert ex.render("${input.qty}", DATA) == 3  # one whole expression keeps its type
    assert ex.render("${const.api}/orders/${input.order_id}?n=${input.qty}", DATA) == "http://127.0.0.1:9/orders/A-1?n=3"
    assert ex.render({"a": ["${store.rows[0]}", 7, None]}, DATA) == {"a": [{"sku": "X-1", "price": 5}, 7, None]}
    assert ex.render("cost: $${not an expression}", DATA) == "cost: ${not an expression}"
    assert ex.render("${store.rows[?sku == 'X-2'] | [0].{s: sku}}", DATA) == {"s": "X-2"}  # braces inside
    with pytest.raises(ExpressionError, match=r"\$\{input.nope\} is null"):
        ex.render("/orders/${input.nope}", DATA)


def test_bad_expressions_are_refused_when_checked() -> None:
    ex = Expressions()
    with pytest.raises(ExpressionError, match=r"invalid expression 'store.a\['"):
        ex.compile("store.a[")
    with pytest.raises(ExpressionError, match=r"reads 'inptu'.*did you mean 'input'"):
        ex.compile("inptu.order_id")
    with pytest.raises(ExpressionError, match=r"unknown function uper\(\) \(did you mean upper\(\)\?\)"):
        ex.compile("uper(input.order_id)")
    with pytest.raises(ExpressionError, match="reads 'reply'"):
        ex.compile("reply.body")  # reply is only there where a step has one
    assert ex.compile("reply.body", roots=frozenset({"reply"}))
    assert ex.template_errors({"url": "${const.api}/${input.x", "ok": "${store.slot}"}) == [
        ("url", "unclosed ${ in '${const.api}/${input.x'")
    ]


@pytest.mark.parametrize(
    "attack",
    [
        "__class__",
        "input.__class__.__init__.__globals__",
        "input.__dict__",
        "store.rows.__len__",
        "__import__('os')",
        "input.order_id.__class__.__mro__",
        "`\"__import__('os').system('echo pwned')\"`",
        "to_string(input).__class__",
    ],
)
def test_expressions_cannot_reach_python_internals(attack: str) -> None:
    """Field access is a dictionary lookup on JSON data; there is no attribute access and no eval."""
    ex = Expressions()
    data = {**DATA, "input": dict(DATA["input"])}
    try:
        value = ex.evaluate(attack, data)
    except ExpressionError:
        return  # refused: fine
    # Whatever evaluates is plain JSON taken from the data, never a Python object.
    assert value is None or (isinstance(value, str) and "__import__" in value)


def test_no_attribute_access_on_objects() -> None:
    ex = Expressions()
    assert ex.evaluate("input.real", {"input": 1 + 2j}) is None  # a complex has .real, but no lookup reaches it
    assert ex.evaluate("input.__class__", {"input": object()}) is None


def test_custom_functions_must_return_json_and_errors_are_expression_errors() -> None:
    ex = Expressions({"leak": lambda: os.environ, "boom": lambda x: 1 / 0, "ok": lambda x: {"v": [x, 1.5]}})
    with pytest.raises(ExpressionError, match=r"leak\(\) returned a _Environ, not JSON data"):
        ex.evaluate("leak()", DATA)
    with pytest.raises(ExpressionError, match=r"boom\(\) failed: ZeroDivisionError"):
        ex.evaluate("boom(input.qty)", DATA)
    assert ex.evaluate("ok(input.qty)", DATA) == {"v": [3, 1.5]}
    with pytest.raises(ExpressionError, match="need a lowercase name"):
        Expressions({"Bad Name": len})
    with pytest.raises(ExpressionError, match="failed"):
        ex.evaluate("length(input.qty)", DATA)  # a type error in JMESPath's own functions


def test_a_built_in_function_that_raises_is_an_expression_error() -> None:
    ex = Expressions()
    with pytest.raises(ExpressionError, match=r"failed: ValueError: empty separator"):
        ex.evaluate("split(input.order_id, '')", DATA)
