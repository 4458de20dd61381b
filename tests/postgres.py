"""A real, throwaway PostgreSQL server for tests (Debian's `postgresql` package binaries, no mocks)."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "factory"
TOOLS = ("initdb", "pg_ctl", "psql")
SKIP = "PostgreSQL tier: initdb/pg_ctl not found (install Debian's postgresql package)"


def find_tools() -> dict[str, str] | None:
    """Paths of initdb, pg_ctl and psql (PATH first, then the newest /usr/lib/postgresql/*/bin), or None."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(n) for n in re.findall(r"\d+", d)], reverse=True)
    found = {}
    for tool in TOOLS:
        path = shutil.which(tool) or next((p for d in dirs if os.access(p := f"{d}/{tool}", os.X_OK)), None)
        if path is None:
            return None
        found[tool] = path
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temp dir on 127.0.0.1, trust auth for superuser ``factory`` there. With
    ``remote=(address, cidr, password)`` it also listens on ``address`` and lets clients from ``cidr`` in with
    that password (scram-sha-256), e.g. pods on a cluster bridge."""

    def __init__(self, tools: dict[str, str], max_connections: int = 200,
                 remote: tuple[str, str, str] | None = None) -> None:
        self.tools = tools
        self.max_connections = max_connections
        self.remote = remote
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="factory-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._names = itertools.count(1)
        self.runas: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # postgres refuses to run as root: run it as an unprivileged user
            try:
                self.runas = pwd.getpwnam("postgres")
            except KeyError:
                self.runas = pwd.getpwnam("nobody")
            os.chown(self.dir, self.runas.pw_uid, self.runas.pw_gid)

    def _server_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run initdb/pg_ctl, as ``self.runas`` when we are root."""
        cmd = list(args)
        if self.runas is not None:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", self.runas.pw_name, "--", *cmd]
            else:
                cmd = ["su", "-s", "/bin/sh", self.runas.pw_name, "-c", shlex.join(cmd)]
        return subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log ('' when there is none)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        """initdb, then ``pg_ctl -w start``; raises RuntimeError if either fails."""
        init = self._server_cmd(self.tools["initdb"], "-D", str(self.data), "-A", "trust", "-U", USER,
                                "-E", "UTF8", "--locale=C", "--no-sync")
        if init.returncode:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        listen = "127.0.0.1" + (f",{self.remote[0]}" if self.remote else "")
        if self.remote:
            with open(self.data / "pg_hba.conf", "a") as hba:  # the first matching line wins: after the trust lines
                hba.write(f"\nhost all all {self.remote[1]} scram-sha-256\n")
        with open(self.data / "postgresql.conf", "a") as conf:  # appending keeps the file's owner
            conf.write(f"\nlisten_addresses = '{listen}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\nmax_connections = {self.max_connections}\n"
                       "fsync = off\n")
        start = self._server_cmd(self.tools["pg_ctl"], "-D", str(self.data), "-l", str(self.log),
                                 "-w", "-t", "60", "start")
        if start.returncode:
            raise RuntimeError(f"pg_ctl start failed ({start.returncode}):\n{start.stdout}{start.stderr}")
        if self.remote:
            self.psql(f"ALTER ROLE {USER} PASSWORD '{self.remote[2]}'")

    def stop(self) -> None:
        """``pg_ctl -m fast stop`` (if it runs) and remove the temp dir."""
        if (self.data / "postmaster.pid").exists():
            self._server_cmd(self.tools["pg_ctl"], "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def conninfo_for(self, dbname: str) -> str:
        """libpq key=value connection string for ``dbname`` on this server."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    @property
    def conninfo(self) -> str:
        """Connection string for the default ``postgres`` database."""
        return self.conninfo_for("postgres")

    def psql(self, sql: str, conninfo: str | None = None) -> str:
        """Run ``sql`` with psql (unaligned, tuples only); its stdout, or CalledProcessError on error."""
        return subprocess.run([self.tools["psql"], conninfo or self.conninfo, "-XAtq", "-v", "ON_ERROR_STOP=1",
                               "-c", sql], capture_output=True, text=True, check=True, timeout=60).stdout

    def create_database(self, name: str | None = None) -> str:
        """Create database ``name`` (default: a fresh ``test_N``); its conninfo."""
        name = name or f"test_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.conninfo_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing any connections left to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session; skipped where the binaries are not installed."""
    tools = find_tools()
    if tools is None:
        pytest.skip(SKIP)
    server = PostgresServer(tools)
    try:
        try:
            server.start()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"PostgreSQL did not start: {exc}\n--- server log ---\n{server.log_tail()}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_db(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the session's server, per test; yields its conninfo."""
    conninfo = postgres.create_database()
    yield conninfo
    postgres.drop_database(conninfo.rsplit("dbname=", 1)[1])
