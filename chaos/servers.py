"""Restarting the local RabbitMQ and PostgreSQL, and making sure they are up again whatever happened.

RabbitMQ: ``rabbitmqctl stop_app`` (every connection is dropped, the node stops serving) then
``start_app``; quorum queues and their persistent messages survive. ``rabbitmqctl close_all_connections``
is the faster equivalent (connections drop, the node stays up) for the short pytest run.
PostgreSQL: ``pg_ctlcluster --skip-systemctl-redirect <version> main stop -m immediate`` (no checkpoint:
like a crash, crash recovery on start) then ``start``.

The cluster scenarios' own servers, started beside the machine's and removed after (never the machine's own):
a 3-node RabbitMQ cluster (``tests/support/rabbit_cluster.py``) and a PostgreSQL primary with a synchronous
replica (``tests/support/pg_ha.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from chaos.deploy import Servers, say
from tests.support import pg_ha
from tests.support import rabbit_cluster as rabbit_nodes

PG_CLUSTER = os.environ.get("STAGEFLOW_CHAOS_PG_CLUSTER", "main")
# The cluster scenarios' relay grace: beyond any drain, so a message lost in the switch is not re-published by
# the relay (which would hide the loss behind a delay) and shows as a lost process.
CLUSTER_RELAY_GRACE_S = 600.0
LOCK_PATH = Path(os.environ.get("STAGEFLOW_CHAOS_LOCK", "/tmp/stageflow-chaos.lock"))


class ServerControlError(Exception):
    pass


@dataclass
class CommandResult:
    code: int
    output: str
    seconds: float


async def run(*args: str, timeout_s: float = 120.0) -> CommandResult:
    """Run a command (no shell) with a time limit; its output and exit code."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:  # timeout or cancelled: do not leave the command running
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return CommandResult(proc.returncode or 0, out.decode(errors="replace").strip(), time.monotonic() - began)


async def _checked(*args: str, timeout_s: float = 120.0) -> CommandResult:
    result = await run(*args, timeout_s=timeout_s)
    if result.code != 0:
        raise ServerControlError(f"{' '.join(args)} exited with {result.code}: {result.output[-500:]}")
    return result


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pg_version() -> str:
    """The local PostgreSQL major version (``STAGEFLOW_CHAOS_PG_VERSION``, else the one in /etc/postgresql)."""
    if version := os.environ.get("STAGEFLOW_CHAOS_PG_VERSION"):
        return version
    versions = sorted((p.name for p in Path("/etc/postgresql").glob("*") if p.name[:1].isdigit()), key=float)
    if not versions:
        raise ServerControlError("no PostgreSQL cluster under /etc/postgresql (set STAGEFLOW_CHAOS_PG_VERSION)")
    return versions[-1]


def missing_tools() -> list[str]:
    """The server-control commands this machine lacks (the restart scenario needs them)."""
    return [tool for tool in ("rabbitmqctl", "pg_ctlcluster") if shutil.which(tool) is None]


async def wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(port_open, port):
            return True
        await asyncio.sleep(0.2)
    return await asyncio.to_thread(port_open, port)


@contextlib.asynccontextmanager
async def exclusive(say: object = None) -> AsyncIterator[None]:
    """One chaos scenario at a time on this machine: the restart scenario stops the servers every other
    scenario (of another ``make chaos``, or of the pytest version) depends on. Waits for the lock."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with await asyncio.to_thread(open, LOCK_PATH, "a+") as lock:
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and callable(say):
                    say(f"[chaos] another chaos run holds {LOCK_PATH}; waiting for it")
                    told = True
                await asyncio.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- RabbitMQ -------------------------------------------------------------------------------------------


async def rabbit_stop() -> CommandResult:
    return await _checked("rabbitmqctl", "stop_app")


async def rabbit_start() -> CommandResult:
    result = await _checked("rabbitmqctl", "start_app", timeout_s=180)
    await _checked("rabbitmqctl", "await_startup", timeout_s=120)
    return result


async def rabbit_drop_connections() -> CommandResult:
    return await _checked("rabbitmqctl", "close_all_connections", "stageflow chaos: connections dropped")


async def ensure_rabbit() -> None:
    """RabbitMQ serving again (``start_app`` is a no-op on a running node)."""
    if shutil.which("rabbitmqctl") is None:
        return
    await run("rabbitmqctl", "start_app", timeout_s=180)
    await run("rabbitmqctl", "await_startup", timeout_s=120)
    if not await wait_port(5672, 60):
        raise ServerControlError("RabbitMQ is not listening on 127.0.0.1:5672 after start_app")


# -- PostgreSQL -----------------------------------------------------------------------------------------


async def pg_stop_immediate() -> CommandResult:
    return await _checked("pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), PG_CLUSTER, "stop",
                          "-m", "immediate")


async def pg_start() -> CommandResult:
    result = await _checked("pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), PG_CLUSTER, "start",
                            timeout_s=120)
    if not await wait_port(5432, 60):
        raise ServerControlError("PostgreSQL is not listening on 127.0.0.1:5432 after start")
    return result


async def ensure_pg() -> None:
    """PostgreSQL accepting connections again (started if it is down)."""
    if await asyncio.to_thread(port_open, 5432) or shutil.which("pg_ctlcluster") is None:
        return
    await run("pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), PG_CLUSTER, "start", timeout_s=120)
    if not await wait_port(5432, 60):
        raise ServerControlError("PostgreSQL is not listening on 127.0.0.1:5432 after start")


async def ensure_servers() -> list[str]:
    """Both servers up again; the problems met doing so (empty if none). Never raises."""
    problems = []
    for ensure in (ensure_rabbit, ensure_pg):
        try:
            await ensure()
        except Exception as exc:  # noqa: BLE001 - reported, and the next one is still tried
            problems.append(f"{ensure.__name__}: {exc}")
    return problems


# -- the cluster scenarios' own servers --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def rabbit_cluster() -> AsyncIterator[Servers]:
    """A 3-node RabbitMQ cluster (ports 5781-5783), its URL listing every node; stopped and removed after."""
    reason = rabbit_nodes.unavailable()
    if reason:
        raise ServerControlError(f"no 3-node RabbitMQ cluster on this machine: {reason}")
    cluster = rabbit_nodes.RabbitCluster(3)
    try:
        say("[chaos] starting a 3-node RabbitMQ cluster (rc1..3@localhost, ports 5781-5783)")
        try:
            await asyncio.to_thread(cluster.start)
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            raise ServerControlError(f"the 3-node RabbitMQ cluster did not start: {exc}") from exc
        yield Servers(broker_url=cluster.broker_url, rabbit=cluster)
    finally:
        try:
            await asyncio.to_thread(cluster.stop)
        except Exception as exc:  # noqa: BLE001 - the result is already made; say it, do not hide it
            say(f"[chaos] stopping the RabbitMQ cluster: {exc}")


@contextlib.asynccontextmanager
async def pg_pair() -> AsyncIterator[Servers]:
    """A PostgreSQL primary (5441) and its synchronous replica (5442), the store URL naming both hosts with
    ``target_session_attrs=read-write``; the broker is the tests' RabbitMQ. Dropped after."""
    reason = pg_ha.unavailable()
    if reason:
        raise ServerControlError(f"no PostgreSQL primary and replica on this machine: {reason}")
    pair: pg_ha.PgHa | None = None
    try:
        say("[chaos] creating a PostgreSQL primary and synchronous replica (sfha1/sfha2, ports 5441/5442)")
        try:
            pair = await asyncio.to_thread(pg_ha.PgHa)
            await asyncio.to_thread(pair.start)
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            raise ServerControlError(f"the PostgreSQL pair did not start: {exc}") from exc
        yield Servers(store_url=pair.url, pg=pair)
    finally:
        if pair is not None:
            try:
                await asyncio.to_thread(pair.drop)
            except Exception as exc:  # noqa: BLE001
                say(f"[chaos] dropping the PostgreSQL pair: {exc}")

