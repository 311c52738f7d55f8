"""Blueprints: business processes written as data (JSON or YAML), compiled into ordinary business cases.

    from framework.blueprint import load_blueprint
    Order = load_blueprint("business_cases/blueprints/ecommerce_order.yaml")   # a BusinessCase subclass

The format is published as a JSON Schema (``framework/blueprint/schema.json``); ``stageflow blueprint
validate FILE`` checks a file. Workers and the gateway load the files named by ``STAGEFLOW_BLUEPRINTS``.
"""

from framework.blueprint.apis import ApiDefinition, load_api_files
from framework.blueprint.compiler import compile_blueprint
from framework.blueprint.expressions import ExpressionError, Expressions
from framework.blueprint.loader import BlueprintError, blueprint_schema
from framework.blueprint.registry import load_blueprints, load_functions

load_blueprint = compile_blueprint

__all__ = [
    "load_blueprint",
    "load_blueprints",
    "load_functions",
    "load_api_files",
    "ApiDefinition",
    "compile_blueprint",
    "blueprint_schema",
    "BlueprintError",
    "Expressions",
    "ExpressionError",
]
