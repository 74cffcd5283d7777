"""Multi-server RethinkDB clusters for the end-to-end tests, started from
``DRTOOL_RETHINKDB_BIN`` on free loopback ports (skipped when it is not set), and a writer
that behaves like an application.

* ``LocalCluster(base, "primary", 3).start()``: three servers, the 2nd and 3rd ``--join`` the
  first's cluster port; each its own data directory, server name, driver and cluster port.
  ``kill(i)`` is ``kill -9`` of server ``i``; ``restart(i)`` starts it again on its data;
  ``wait_ready(db)`` waits until every table of ``db`` is ready (``r.db(db).wait()``)
  through any server that answers.
* ``Writer(cluster, db, table)``: a thread inserting ``{"id": n, "w": ...}`` documents one
  by one, like an application: on any driver error it reconnects to the next server of the
  cluster and retries the same document until it is acknowledged; ``acked`` counts them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from conftest import ThrowawayServer

r = RethinkDB()
WAIT = 60.0


def binary() -> str:
    path = os.environ.get("DRTOOL_RETHINKDB_BIN", "")
    if not path:
        pytest.skip("DRTOOL_RETHINKDB_BIN is not set: the multi-server tests start their own "
                    "RethinkDB servers")
    return path


def wait_until(check, what: str, timeout: float = WAIT, *, tolerate: tuple = ()):
    """Call ``check`` every 0.2 s until it returns something true (returned); AssertionError
    after ``timeout``. Exceptions of ``tolerate`` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except tolerate:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def until(check, what: str, timeout: float = WAIT):
    """``wait_until`` where a failing query (a server is down) counts as "not yet"."""
    return wait_until(check, what, timeout, tolerate=(r.errors.ReqlError,))


class LocalCluster:
    """``n`` servers of one cluster on loopback (see the module doc)."""

    def __init__(self, base: Path, name: str, n: int) -> None:
        binary()
        self.name = name
        first = ThrowawayServer(base / f"{name}-0", f"{name}_0")
        self.servers = [first] + [
            ThrowawayServer(base / f"{name}-{i}", f"{name}_{i}",
                            join=f"127.0.0.1:{first.cluster_port}") for i in range(1, n)]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.servers]

    def start(self) -> "LocalCluster":
        for server in self.servers:
            server.start()
            until(server.answering, f"{server.name} to answer")
        try:
            until(lambda: self.count_connected() == len(self.servers),
                  f"the {len(self.servers)} servers of {self.name} to see each other",
                  timeout=2 * WAIT)
        except AssertionError as err:  # failed once in a loaded CI run: say what the logs say
            raise AssertionError(f"{err}; server logs:\n{self.log_tails()}") from None
        return self

    def log_tails(self, lines: int = 8) -> str:
        """The last lines of each server's log file (in its data directory)."""
        out = []
        for server in self.servers:
            log = Path(server.data) / "log_file"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            out.append(f"--- {server.name} ({server.address}):\n" + "\n".join(text))
        return "\n".join(out)

    def connect(self, skip: int | None = None, timeout: float = 5):
        """A connection to the first server that answers (``skip``: not that one)."""
        last: Exception | None = None
        for i, server in enumerate(self.servers):
            if i == skip or server.proc is None:
                continue
            try:
                return r.connect(host="127.0.0.1", port=server.port, timeout=timeout)
            except r.errors.ReqlDriverError as err:
                last = err
        raise AssertionError(f"no server of {self.name} answers: {last}")

    def count_connected(self) -> int:
        with self.connect() as c:
            return r.db("rethinkdb").table("server_status").count().run(c)

    def fully_connected(self) -> bool:
        """Every server of the cluster sees every other one (server_status)."""
        with self.connect() as c:
            rows = list(r.db("rethinkdb").table("server_status").run(c))
        names = {row["name"] for row in rows}
        return len(rows) == len(self.servers) and all(
            all(row["network"]["connected_to"].get(other) for other in names - {row["name"]})
            for row in rows)

    def kill(self, i: int) -> None:
        """Kill -9 server ``i`` once every server sees every other one (and a moment more).
        Seen twice in CI on 2.4.4: a server killed while a peer's cluster connections were
        still being set up crashed that peer ("Guarantee failed: [peer.ips().size() > 0]")."""
        until(self.fully_connected, f"the servers of {self.name} to see each other")
        time.sleep(1)
        self.servers[i].kill()

    def restart(self, i: int) -> None:
        """Start server ``i`` again, and any other that is not running (crashed), and wait
        until every server sees every other one."""
        for server in self.servers:
            if server is self.servers[i] or server.proc is None or server.proc.poll() is not None:
                server.start()
                until(server.answering, f"{server.name} to answer again")
        until(self.fully_connected, f"{self.servers[i].name} to rejoin {self.name}")

    def wait_ready(self, db: str, wait_for: str = "all_replicas_ready") -> None:
        """Until every table of ``db`` is ``wait_for`` (with a server down:
        "ready_for_writes", after the election; all replicas are never ready then)."""
        def ready():
            with self.connect() as c:
                r.db(db).wait(wait_for=wait_for, timeout=10).run(c)
                return True
        until(ready, f"every table of {db} on {self.name} to be {wait_for}")

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


class Writer(threading.Thread):
    """An application writing into ``db.table`` of ``cluster`` (see the module doc)."""

    def __init__(self, cluster: LocalCluster, db: str, table: str, start: int = 10**6) -> None:
        super().__init__(daemon=True)
        self.cluster, self.db, self.table = cluster, db, table
        self.next, self.acked, self.errors = start, 0, 0
        self.last_error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        conn = None
        while not self._halt.is_set():
            try:
                if conn is None:
                    conn = self.cluster.connect(timeout=2)
                doc = {"id": self.next, "w": "written by the application"}
                res = r.db(self.db).table(self.table).insert(doc, conflict="replace").run(conn)
                if res["errors"]:
                    raise r.errors.ReqlOpFailedError(res["first_error"])
                self.next, self.acked = self.next + 1, self.acked + 1
                time.sleep(0.01)
            except (r.errors.ReqlError, AssertionError, OSError) as err:
                self.errors += 1
                self.last_error = str(err).splitlines()[0]
                if conn is not None:
                    try:
                        conn.close(noreply_wait=False)
                    except Exception:  # noqa: BLE001 - the connection is gone anyway
                        pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close(noreply_wait=False)

    def stop(self) -> int:
        """Stop writing; the number of acknowledged documents."""
        self._halt.set()
        self.join(WAIT)
        return self.acked


def stop_runner(proc: subprocess.Popen, log: Path, sig: int = signal.SIGTERM,
                timeout: float = WAIT) -> int:
    """Send ``sig`` to a ``drtool replicate`` process and return its exit code. One that has
    not exited after ``timeout`` is asked what it waits for (SIGUSR1: its tasks, in its log)
    and the test fails with the end of that log."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        raise AssertionError(f"the runner did not stop within {timeout:g} s; it logged:\n"
                             f"{log.read_text()[-8000:]}") from None
