"""Fixtures of the end-to-end tests against two real RethinkDB servers (see README.md here).

``DRTOOL_IT_PRIMARY`` and ``DRTOOL_IT_STANDBY`` name the servers as ``host:port`` (driver
port). Without them every test here is skipped with that reason. The servers must accept the
``admin`` user with no password (a fresh ``rethinkdb`` data directory), or set
``DRTOOL_IT_PASSWORD`` to the admin password (it is passed to drtool through the environment
variable named in the generated policy, never written to a file).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rethinkdb import RethinkDB

r = RethinkDB()  # the default (blocking) loop type, for the test's own checks
PASSWORD_ENV = "DRTOOL_IT_PASSWORD"


@dataclass(frozen=True)
class Server:
    role: str
    address: str  # host:port as given

    def connect(self):
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{self.role}: expected host:port, got {self.address!r}")
        return r.connect(host=host.strip("[]"), port=int(port), user="admin",
                         password=os.environ.get(PASSWORD_ENV, ""), timeout=10)


def _server(role: str) -> Server:
    var = f"DRTOOL_IT_{role.upper()}"
    address = os.environ.get(var, "").strip()
    if not address:
        pytest.skip(f"{var} is not set: these tests need two real RethinkDB servers "
                    "(see integration/README.md)")
    return Server(role, address)


@pytest.fixture(scope="module")
def primary() -> Server:
    return _server("primary")


@pytest.fixture(scope="module")
def standby() -> Server:
    return _server("standby")


@pytest.fixture(scope="module")
def password_env() -> str | None:
    """The environment variable holding the admin password, for the policy; None if unset."""
    return PASSWORD_ENV if os.environ.get(PASSWORD_ENV) else None


@pytest.fixture(scope="module")
def db_name(primary: Server, standby: Server) -> Iterator[str]:
    """A database name unique to this run; dropped on both servers afterwards."""
    name = f"drtool_it_{uuid.uuid4().hex[:10]}"
    yield name
    for server in (primary, standby):
        with server.connect() as conn:
            if name in r.db_list().run(conn):
                r.db_drop(name).run(conn)


class ThrowawayServer:
    """A RethinkDB server of the test's own (``DRTOOL_RETHINKDB_BIN``) on free ports, in
    ``data``, so that a test can kill it (-9) and start it again on the same data."""

    def __init__(self, data, name: str, join: str | None = None) -> None:
        import socket

        def free_port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        self.data, self.name = data, name
        self.join = join  # "127.0.0.1:<cluster port>" of a server to join (multi-server)
        self.port, self.cluster_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> "ThrowawayServer":
        import subprocess

        self.proc = subprocess.Popen(
            [os.environ["DRTOOL_RETHINKDB_BIN"], "--directory", str(self.data), "--bind",
             "127.0.0.1", "--no-default-bind", "--driver-port", str(self.port),
             "--cluster-port", str(self.cluster_port), "--no-http-admin", "--server-name",
             self.name, *(["--join", self.join] if self.join else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def answering(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
