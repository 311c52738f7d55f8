"""Loading the blueprints a deployment runs: files and globs from settings, custom functions from modules."""

from __future__ import annotations

import glob
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from framework.blueprint.apis import ApiDefinition
from framework.blueprint.compiler import compile_blueprint
from framework.case import BusinessCase
from framework.errors import ConfigurationError


def load_functions(modules: Iterable[str]) -> dict[str, Callable[..., Any]]:
    """Expression functions from modules that expose ``FUNCTIONS = {"name": callable}``."""
    functions: dict[str, Callable[..., Any]] = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import blueprint functions from {name!r}: {exc}") from exc
        table = getattr(module, "FUNCTIONS", None)
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{name!r} has no FUNCTIONS", hint="define FUNCTIONS = {'name': callable}")
        functions.update(table)
    return functions


def load_blueprints(
    patterns: Iterable[str], *, functions: Mapping[str, Callable[..., Any]] | None = None,
    constants: Mapping[str, Any] | None = None, apis: Mapping[str, ApiDefinition] | None = None,
    connections: frozenset[str] | None = None,
) -> list[type[BusinessCase]]:
    """Compile every blueprint file the paths or globs name; a pattern that matches nothing is an error
    (a typo in a deployment's settings must not quietly run no blueprint)."""
    cases: list[type[BusinessCase]] = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise ConfigurationError(f"no blueprint file matches {pattern!r}", hint="check STAGEFLOW_BLUEPRINTS")
        cases += [compile_blueprint(path, functions=functions, constants=constants, apis=apis,
                                    connections=connections) for path in paths]
    return cases
