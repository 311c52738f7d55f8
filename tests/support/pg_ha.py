"""A PostgreSQL primary with a synchronous streaming replica, of our own, beside the machine's cluster.

Two clusters made with ``pg_createcluster`` on ports 5441 (primary) and 5442 (replica, ``pg_basebackup -R``
from the primary, listed in the primary's ``synchronous_standby_names``), trust authentication on 127.0.0.1
only, started by hand (``--start-conf=manual``: never at boot). ``drop()`` stops and removes both. One run
at a time per machine (a ``HostLock``: the names and ports are fixed). Nothing here touches the machine's own
cluster.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tests.support.host_lock import HostLock

PG_USER = "postgres"
PRIMARY_PORT, REPLICA_PORT = 5441, 5442
NAMES = ("sfha1", "sfha2")


def unavailable() -> str | None:
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (postgresql-common)"
    if os.geteuid() != 0:
        return "creating PostgreSQL clusters needs root"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return "there is no postgres user"
    return None


def _version() -> str:
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    return out.split()[0]  # the machine's cluster's major version


def _run(args: list[str], *, as_postgres: bool = False, check: bool = True) -> str:
    if as_postgres:
        args = ["runuser", "-u", PG_USER, "--", *args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


class PgHa:
    def __init__(self) -> None:
        self.version = _version()
        self.primary, self.replica = NAMES
        self._lock = HostLock("pg-ha")

    @property
    def url(self) -> str:
        """STAGEFLOW_STORE_URL for both: asyncpg tries each host and keeps the one that accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{PRIMARY_PORT},127.0.0.1:{REPLICA_PORT}/test"
                "?target_session_attrs=read-write")

    def _conf_dir(self, name: str) -> Path:
        return Path(f"/etc/postgresql/{self.version}/{name}")

    def _data_dir(self, name: str) -> Path:
        return Path(f"/var/lib/postgresql/{self.version}/{name}")

    def _create(self, name: str, port: int) -> None:
        _run(["pg_createcluster", self.version, name, "-p", str(port), "--start-conf=manual", "--",
              "--auth=trust"])
        conf = self._conf_dir(name)
        (conf / "pg_hba.conf").write_text(
            "local all all trust\nlocal replication all trust\n"
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        with (conf / "postgresql.conf").open("a") as f:
            f.write("listen_addresses = '127.0.0.1'\nmax_connections = 100\nfsync = on\n")

    def start(self) -> None:
        self._lock.acquire()
        self._remove()  # leftovers of a run that was killed (no live run holds the lock)
        self._create(self.primary, PRIMARY_PORT)
        _run(["pg_ctlcluster", self.version, self.primary, "start"])
        self.psql(PRIMARY_PORT, "CREATE DATABASE test")
        self._create(self.replica, REPLICA_PORT)
        data = self._data_dir(self.replica)
        for entry in data.iterdir():  # pg_basebackup fills the (empty) data folder, which postgres owns
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        _run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(PRIMARY_PORT), "-U", "postgres", "-D", str(data),
              "-R", "-X", "stream", "-c", "fast"], as_postgres=True)  # no wait for a spread checkpoint
        _run(["pg_ctlcluster", self.version, self.replica, "start"])
        # Only now: with no standby connected, a synchronous primary's commits would wait for ever.
        self.psql(PRIMARY_PORT, "ALTER SYSTEM SET synchronous_standby_names = '*'")  # commits wait for the replica
        self.psql(PRIMARY_PORT, "SELECT pg_reload_conf()")

    def psql(self, port: int, sql: str) -> str:
        return _run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-Atc", sql])

    def stop_primary_immediately(self) -> None:
        _run(["pg_ctlcluster", self.version, self.primary, "stop", "-m", "immediate"])

    def promote_replica(self) -> None:
        _run(["pg_ctlcluster", self.version, self.replica, "promote"])

    def drop(self) -> None:
        self._remove()
        self._lock.release()

    def _remove(self) -> None:
        for name in NAMES:
            if self._conf_dir(name).exists() or self._data_dir(name).exists():
                _run(["pg_ctlcluster", self.version, name, "stop", "-m", "immediate"], check=False)
                _run(["pg_dropcluster", self.version, name], check=False)
