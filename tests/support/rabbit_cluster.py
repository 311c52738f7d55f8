"""A 3-node RabbitMQ cluster of our own, beside the machine's node: started by the tests, stopped and removed after.

One run at a time per machine (a ``HostLock``: the ports are fixed). Each node ``rcN@localhost`` has its own
AMQP and distribution ports, data and log folders (owned by the
``rabbitmq`` user, whose Erlang cookie every node and ``rabbitmqctl`` then share), a config file with only a
``listeners.tcp.local`` line and an empty plugins file. Nodes 2 and 3 join node 1. Nothing here touches the
machine's own node (``rabbit@localhost`` on 5672).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.host_lock import HostLock

RABBIT_USER = "rabbitmq"
BASE_PORT = 5781  # nodes on 5781..5783, distribution on 25781..25783 (the machine's node: 5672 and 25672)


def unavailable() -> str | None:
    """Why this machine cannot run the cluster (None if it can)."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server is not installed"
    try:
        pwd.getpwnam(RABBIT_USER)
    except KeyError:
        return "there is no rabbitmq user"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != RABBIT_USER:
        return "starting RabbitMQ nodes needs root or the rabbitmq user (the nodes share its Erlang cookie)"
    return None


def _as_rabbit(args: list[str]) -> list[str]:
    return ["runuser", "-u", RABBIT_USER, "--", *args] if os.geteuid() == 0 else args


@dataclass
class Node:
    index: int
    base: Path

    @property
    def name(self) -> str:
        return f"rc{self.index}@localhost"

    @property
    def port(self) -> int:
        return BASE_PORT + self.index - 1

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / "pid"

    def env(self) -> dict[str, str]:
        home = pwd.getpwnam(RABBIT_USER).pw_dir
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": home, "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "env.conf"),  # not the machine's rabbitmq-env.conf
            "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000), "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"), "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pid_file), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")

    def start(self) -> None:
        subprocess.run(_as_rabbit(["rabbitmq-server", "-detached"]), env=self.env(), check=True, timeout=60)

    def ctl(self, *args: str, timeout_s: float = 60.0, check: bool = True) -> str:
        done = subprocess.run(
            _as_rabbit(["rabbitmqctl", "-n", self.name, *args]), env=self.env(), capture_output=True, text=True,
            timeout=timeout_s,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def wait_booted(self, timeout_s: float = 90.0) -> None:
        # `wait` waits for the pid file, then for the node to be up (await_startup fails before it registers)
        self.ctl("wait", str(self.pid_file), "--timeout", str(int(timeout_s)), timeout_s=timeout_s + 10)

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its clients or to the other nodes."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"{self.name} has no pid file")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)

    def stop(self) -> None:
        pid = self.pid()
        self.ctl("stop", timeout_s=60, check=False)  # returns before the VM has exited
        deadline = time.monotonic() + 30
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (a detached node's parent is init, which reaps it)
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:4]
    return False


def _booting(node: Node) -> bool:
    """An Erlang VM started for this node's folders (it writes its pid file only once it is up)."""
    found = subprocess.run(["pgrep", "-f", str(node.base / "mnesia")], capture_output=True, text=True)
    return bool(found.stdout.strip())


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stageflow-rabbit-cluster-"))
        self.nodes = [Node(i, self.root / f"rc{i}") for i in range(1, size + 1)]
        self._lock = HostLock("rabbit-cluster")

    @property
    def broker_url(self) -> str:
        """STAGEFLOW_BROKER_URL for the whole cluster: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        self._lock.acquire()
        for node in self.nodes:
            node.prepare()
        uid, gid = pwd.getpwnam(RABBIT_USER).pw_uid, pwd.getpwnam(RABBIT_USER).pw_gid
        if os.geteuid() == 0:
            os.chmod(self.root, 0o755)
            for path in (self.root, *self.root.rglob("*")):
                os.chown(path, uid, gid)
        for node in self.nodes:  # the VMs boot in parallel
            node.start()
        for node in self.nodes:
            node.wait_booted()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        first.ctl("await_online_nodes", str(len(self.nodes)))

    def restart(self, node: Node) -> None:
        """Bring a killed node back (it rejoins the cluster it belonged to)."""
        node.start()
        node.wait_booted()

    def clients_on(self, node: Node, name_prefix: str) -> int:
        """How many client connections whose name starts with ``name_prefix`` are on ``node``."""
        return self.clients_by_node(name_prefix)[node.name]

    def clients_by_node(self, name_prefix: str) -> dict[str, int]:
        """The same for every node, from one listing (``rabbitmqctl`` starts an Erlang VM: seconds of CPU on a
        small machine), asked of a live node: ``list_connections`` is cluster-wide; the connection's name
        ends with the node's port."""
        live = next(n for n in self.nodes if n.running)
        listing = live.ctl("list_connections", "name", "client_properties", "--no-table-headers").splitlines()
        return {
            node.name: sum(1 for line in listing
                           if line.split("\t", 1)[0].endswith(f":{node.port}") and name_prefix in line)
            for node in self.nodes
        }

    def stop(self) -> None:
        for node in self.nodes:  # a node still booting has no pid file yet: wait for it, so none is left behind
            if node.pid() is None and node.base.exists():
                deadline = time.monotonic() + 30
                while node.pid() is None and time.monotonic() < deadline and _booting(node):
                    time.sleep(0.2)
            if node.running:
                node.stop()
        if keep := os.environ.get("STAGEFLOW_RABBIT_CLUSTER_LOGS"):  # the nodes' logs, to read after a failure
            for node in self.nodes:
                shutil.copytree(node.base / "log", Path(keep) / node.name, dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self._lock.release()
