"""The built-in ``db_query`` service: parameterised SQL on named connections, once per taskId."""

from framework.dbquery.hosting import DbQuerySettings, db_connections, dbquery_services, known_connections
from framework.dbquery.service import DbQueryHandler, Limits
from framework.dbquery.sql import NamedSql, SqlError, dbquery_api
from framework.dbquery.values import json_safe

__all__ = [
    "DbQueryHandler",
    "dbquery_services",
    "dbquery_api",
    "DbQuerySettings",
    "Limits",
    "db_connections",
    "known_connections",
    "NamedSql",
    "SqlError",
    "json_safe",
]
