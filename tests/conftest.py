"""Test harness: real `ceti server` and `ceti agent` processes on loopback, SQLite or a throw-away PostgreSQL."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ceti.client import CetiError, Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def statements_sent(sessions, prefix: str = "") -> Iterator[list[str]]:
    """The SQL statements sent on `sessions`' engine inside the block (an executemany counts once), those that
    start with `prefix` (case-insensitive) only when one is given."""
    from sqlalchemy import event

    engine = sessions.kw["bind"]
    sent: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(prefix.upper()):
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def wait_until(predicate, timeout_s: float = 20.0, interval_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def ceti_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ceti.cli.main", *args]


# -- PostgreSQL ------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresCluster:
    bin_dir: Path
    data_dir: Path
    port: int
    proc_user: str | None
    _dbs: int = 0

    def _run(self, *cmd: str) -> None:
        full = list(cmd)
        if self.proc_user:
            full = ["runuser", "-u", self.proc_user, "--", *full]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "log"),
                  "-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                        f"-c max_connections=300", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def new_database(self) -> str:
        self._dbs += 1
        name = f"ceti_test_{os.getpid()}_{self._dbs}"
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed (make test installs them from Debian's packages)")
    root = Path(tempfile.mkdtemp(prefix="ceti-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
    cluster = PostgresCluster(bin_dir, root / "data", free_port(), user)
    cluster._run(str(bin_dir / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    cluster.start()
    yield cluster
    try:
        cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()


# -- the fabric's processes --------------------------------------------------------------------------


class _Process:
    """kill -9 or a graceful stop of a test's child process (`self.proc`)."""

    proc: subprocess.Popen | None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ServerProc(_Process):
    url: str
    port: int
    data_dir: Path
    admin_token: str
    database_url: str | None
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ceti.db'}"

    def admin(self) -> Client:
        return Client(self.url, self.admin_token)

    def client(self, token: str) -> Client:
        return Client(self.url, token)

    def start(self) -> None:
        self.log_path = self.data_dir / "server.log"
        cmd = ceti_cmd("server", "--port", str(self.port), "--data-dir", str(self.data_dir),
                       "--admin-token-file", str(self.data_dir / "admin-token"), "--log-level", "warning")
        with open(self.log_path, "a") as log:  # the server keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._healthy, 30, what=f"server on port {self.port}")
        if not self.admin_token:
            self.admin_token = (self.data_dir / "admin-token").read_text().strip()

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log_path.read_text()[-2000:]}")
        try:
            Client(self.url, timeout_s=1, retries=0).health()
            return True
        except CetiError:
            return False



@dataclass
class AgentProc(_Process):
    name: str
    data_dir: Path
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    node_id: str | None = None
    log_path: Path | None = None

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)



@dataclass
class Fabric:
    server: ServerProc
    tmp: Path
    agents: list[AgentProc] = field(default_factory=list)
    _provider_token: str | None = None

    def provider_token(self) -> str:
        if self._provider_token is None:
            self._provider_token = self.server.admin().create_token("provider", "test", provider="test")["token"]
        return self._provider_token

    def project_token(self, project: str) -> str:
        return self.server.admin().create_token("project", project, project=project)["token"]

    def add_agent(self, name: str, region: str = "local", inventory: Path | None = None,
                  price_per_gpu_hour: float = 0.0, wait: bool = True, extra_args: tuple[str, ...] = ()) -> AgentProc:
        data_dir = self.tmp / name
        cmd = ceti_cmd("agent", "--server", self.server.url, "--token", self.provider_token(), "--region", region,
                       "--data-dir", str(data_dir), "--heartbeat-s", "0.2", "--hostname", name,
                       "--price-per-gpu-hour", str(price_per_gpu_hour), "--log-level", "info")
        if inventory:
            cmd += ["--inventory-file", str(inventory)]
        cmd += list(extra_args)
        agent = AgentProc(name, data_dir, cmd, dict(self.server.env))
        agent.start()
        self.agents.append(agent)
        if wait:
            agent.node_id = wait_until(lambda: self.node_id_of(name), 30, what=f"agent {name} to register")
        return agent

    def node_id_of(self, hostname: str) -> str | None:
        for n in self.server.admin().nodes():
            if n["hostname"] == hostname and n["state"] == "online":
                return n["id"]
        return None

    def close(self) -> None:
        for a in self.agents:
            a.stop()
        self.server.stop()
        reap_leftovers(self.tmp)


def reap_leftovers(root: Path) -> None:
    """Kill what a test's agents left running (jobs outlive their agent by design: a restarted agent adopts them),
    so no test leaves work behind: every process whose command line names the test's directory, with its
    children (a job runs in its own session under its runner)."""
    import psutil

    mark = str(root)
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if mark in " ".join(proc.info["cmdline"] or []):
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
        except psutil.Error:
            continue


def make_server(tmp: Path, database_url: str | None, **env_overrides: str) -> ServerProc:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    env.update({
        "CETI_SCHEDULE_INTERVAL_S": "0.2",
        "CETI_HEARTBEAT_INTERVAL_S": "0.2",
        "CETI_NODE_LOST_AFTER_S": "3",
        "CETI_STOP_GRACE_S": "2",
        "PYTHONUNBUFFERED": "1",
    })
    if database_url:
        env["CETI_DATABASE_URL"] = database_url
    env.update(env_overrides)
    port = free_port()
    data_dir = tmp / "server"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ServerProc(f"http://127.0.0.1:{port}", port, data_dir, "", database_url, env)


@pytest.fixture
def fabric(tmp_path: Path, database_url: str | None) -> Iterator[Fabric]:
    server = make_server(tmp_path, database_url)
    server.start()
    f = Fabric(server, tmp_path)
    yield f
    f.close()


@pytest.fixture
def sqlite_fabric(tmp_path: Path) -> Iterator[Fabric]:
    server = make_server(tmp_path, None)
    server.start()
    f = Fabric(server, tmp_path)
    yield f
    f.close()
