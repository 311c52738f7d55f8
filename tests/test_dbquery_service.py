"""The db_query service's handler on a real PostgreSQL (the test's own schema) and on SQLite: what a query
returns, the JSON rule for row values, parameters bound by the driver, limits and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from framework import ServiceError, Settings
from framework.dbquery import DbQueryHandler, Limits
from framework.dbquery.service import INBOX_TABLE
from framework.messages import ServiceCommand
from framework.service import PostgresInbox, SqliteInbox
from framework.service.inbox import Inbox
from tests.support.cluster import services_db_url

pytestmark = pytest.mark.integration

PG_SETUP = [
    "CREATE TABLE items (id serial PRIMARY KEY, sku text UNIQUE NOT NULL, price numeric(10,2), made date,"
    " seen timestamptz, blob bytea, ref uuid, tags text[], ratio float8, age interval)",
    "INSERT INTO items (sku, price, made, seen, blob, ref, tags, ratio, age) VALUES"
    " ('A-1', 12.50, '2026-03-01', '2026-03-01 09:30:00+00', '\\x00ff', '6f1c0e2a-3f0b-4c58-9a4e-0d5b7a1e2c3d',"
    " '{red,blue}', 'NaN', '90 seconds'),"
    " ('B-2', 3.00, '2026-01-15', NULL, NULL, NULL, NULL, 0.5, NULL)",
]


def command(sql: str, mode: str, output: str = "single", task_id: str = "t-1", **params: Any) -> ServiceCommand:
    return ServiceCommand(task_id, "dbquery.shop", {"sql": sql, "mode": mode, "output": output, "params": params})


async def run(inbox: Inbox, handler: DbQueryHandler, cmd: ServiceCommand) -> Any:
    async with inbox.transaction() as tx:
        return await handler.handle(cmd, tx)


@pytest.fixture
async def pg_inbox(settings: Settings, pg: asyncpg.Connection) -> Any:
    await pg.execute(f"CREATE SCHEMA IF NOT EXISTS {settings.store_schema}")  # dropped after the test
    async with PostgresInbox(services_db_url(settings), table=INBOX_TABLE, setup_sql=PG_SETUP) as inbox:
        yield inbox


async def test_select_rows_are_json_by_the_documented_rule(pg_inbox: Inbox) -> None:
    handler = DbQueryHandler("shop")
    reply = await run(pg_inbox, handler, command("SELECT sku, price, made, seen, blob, ref, tags, ratio, age "
                                                 "FROM items WHERE sku = :sku", "select", sku="A-1"))
    assert reply == {"count": 1, "row": {
        "sku": "A-1", "price": "12.50", "made": "2026-03-01", "seen": "2026-03-01T09:30:00+00:00",
        "blob": "AP8=", "ref": "6f1c0e2a-3f0b-4c58-9a4e-0d5b7a1e2c3d", "tags": ["red", "blue"], "ratio": "NaN",
        "age": 90.0}}
    none = await run(pg_inbox, handler, command("SELECT sku FROM items WHERE sku = :sku", "select", sku="Z"))
    assert none == {"row": None, "count": 0}
    many = await run(pg_inbox, handler, command("SELECT sku, made FROM items WHERE made >= :since ORDER BY sku",
                                                "select", "multiple", since="2026-01-01"))  # ISO string -> date
    assert many == {"count": 2, "rows": [{"sku": "A-1", "made": "2026-03-01"}, {"sku": "B-2", "made": "2026-01-15"}]}


async def test_writes_count_rows_and_return_what_returning_names(pg_inbox: Inbox) -> None:
    handler = DbQueryHandler("shop")
    inserted = await run(pg_inbox, handler, command(
        "INSERT INTO items (sku, price, made, ref) VALUES (:sku, :price, :made, :ref) RETURNING id, price",
        "insert", sku="C-3", price="7.25", made="2026-05-05", ref="00000000-0000-0000-0000-000000000001"))
    assert inserted == {"count": 1, "row": {"id": 3, "price": "7.25"}}
    updated = await run(pg_inbox, handler, command("UPDATE items SET price = price + :delta WHERE price < :cap",
                                                   "update", delta=1, cap=10))
    assert updated == {"count": 2, "row": None}
    returned = await run(pg_inbox, handler, command("UPDATE items SET made = :day RETURNING sku", "update",
                                                    "multiple", day="2026-06-01"))
    assert returned["count"] == 3 and sorted(r["sku"] for r in returned["rows"]) == ["A-1", "B-2", "C-3"]


async def test_sql_errors_are_final_and_carry_the_databases_message(pg_inbox: Inbox) -> None:
    handler = DbQueryHandler("shop")
    with pytest.raises(ServiceError) as duplicate:
        await run(pg_inbox, handler, command("INSERT INTO items (sku) VALUES (:sku)", "insert", sku="A-1"))
    assert not duplicate.value.retryable
    assert 'duplicate key value violates unique constraint "items_sku_key"' in duplicate.value.message
    assert "SQLSTATE 23505" in duplicate.value.message
    with pytest.raises(ServiceError, match='relation "nowhere" does not exist'):
        await run(pg_inbox, handler, command("SELECT * FROM nowhere WHERE a = :a", "select", a=1))
    with pytest.raises(ServiceError, match=r"parameter :day \(date\): 'soon' does not convert"):
        await run(pg_inbox, handler, command("SELECT sku FROM items WHERE made = :day", "select", day="soon"))
    with pytest.raises(ServiceError, match="output 'single' got more than one row"):
        await run(pg_inbox, handler, command("SELECT sku FROM items WHERE price > :p", "select", p=0))
    with pytest.raises(ServiceError, match="mode 'select' needs a SELECT statement"):
        await run(pg_inbox, handler, command("DELETE FROM items WHERE sku = :s", "select", s="A-1"))
    with pytest.raises(ServiceError, match="no value for :sku"):
        await run(pg_inbox, handler, ServiceCommand("t", "dbquery.shop", {"sql": "SELECT :sku", "mode": "select"}))
    assert await run(pg_inbox, handler, command("SELECT count(*) AS n FROM items", "select")) == {
        "row": {"n": 2}, "count": 1}  # nothing above changed a row


async def test_limits_are_final_errors_with_a_reason(pg_inbox: Inbox) -> None:
    rows = DbQueryHandler("shop", Limits(max_rows=1))
    with pytest.raises(ServiceError, match=r"more than 1 rows \(STAGEFLOW_DBQUERY_MAX_ROWS\)"):
        await run(pg_inbox, rows, command("SELECT sku FROM generate_series(1, :n) AS g, items", "select",
                                          "multiple", n=100000))
    size = DbQueryHandler("shop", Limits(max_result_bytes=1024))
    with pytest.raises(ServiceError, match=r"over the 1024-byte limit \(STAGEFLOW_DBQUERY_MAX_RESULT_BYTES\)"):
        await run(pg_inbox, size, command("SELECT repeat('x', :n) AS big", "select", n=5000))
    slow = DbQueryHandler("shop", Limits(statement_timeout_s=0.2))
    with pytest.raises(ServiceError, match="canceling statement due to statement timeout"):
        await run(pg_inbox, slow, command("SELECT pg_sleep(:s)", "select", s=2))


async def test_sqlite_binds_named_parameters_and_counts_writes(tmp_path: Path) -> None:
    setup = ["CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, blob BLOB, meta TEXT)"]
    handler = DbQueryHandler("local")
    async with SqliteInbox(str(tmp_path / "shop.db"), table=INBOX_TABLE, setup_sql=setup) as inbox:
        first = await run(inbox, handler, command(
            "INSERT INTO items (sku, blob, meta) VALUES (:sku, X'00ff', :meta) RETURNING id", "insert",
            sku="A-1", meta={"colour": "red"}))
        assert first == {"count": 1, "row": {"id": 1}}
        await run(inbox, handler, command("INSERT INTO items (sku) VALUES (:sku)", "insert", sku="B-2"))
        updated = await run(inbox, handler, command("UPDATE items SET meta = :m WHERE sku <> ':m' AND id > :id",
                                                    "update", m="x", id=0))
        assert updated == {"count": 2, "row": None}
        rows = await run(inbox, handler, command("SELECT sku, blob FROM items ORDER BY sku", "select", "multiple"))
        assert rows == {"count": 2, "rows": [{"sku": "A-1", "blob": "AP8="}, {"sku": "B-2", "blob": None}]}
        with pytest.raises(ServiceError, match=r"UNIQUE constraint failed: items\.sku"):
            await run(inbox, handler, command("INSERT INTO items (sku) VALUES (:sku)", "insert", sku="A-1"))
