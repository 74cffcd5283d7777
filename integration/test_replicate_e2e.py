"""``drtool replicate`` and ``drtool status`` end to end against real RethinkDB servers.

The runner runs as a subprocess (``python -m drtool replicate``) with a policy naming a
database unique to the test and a unique state database; the application's writes are made
with the driver. After every scenario ``drtool diff`` must report the standby equal. Waits
have generous bounds (a failure, not a measurement); no test asserts a time.
The standby-restart test starts its own throw-away server from ``DRTOOL_RETHINKDB_BIN``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from clusters import stop_runner, wait_until
from conftest import ThrowawayServer

r = RethinkDB()
WAIT = 60.0


def drtool(policy: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtool", "-p", str(policy), *args],
                          capture_output=True, text=True, timeout=timeout)


class Deployment:
    """A policy over two servers, the user database ``db`` and a runner subprocess."""

    def __init__(self, tmp_path: Path, primary: str, standby: str, **replication: str) -> None:
        self.tmp, self.primary, self.standby = tmp_path, primary, standby
        self.db = "drtool_it_" + uuid.uuid4().hex[:10]
        self.state_db = "drtool_it_state_" + uuid.uuid4().hex[:8]
        self.log = tmp_path / "runner.log"
        self.proc: subprocess.Popen | None = None
        keys = {"schema_poll": '"1s"', "lease_ttl": '"3s"', **replication}
        self.policy = tmp_path / "policy.toml"
        self.policy.write_text("\n".join([
            f'name = "it{uuid.uuid4().hex[:6]}"',
            "[primary]", f'hosts = ["{primary}"]', "[standby]", f'hosts = ["{standby}"]',
            "[repository]", f'url = "file://{tmp_path / "repo"}"',
            "[encryption]", f'identity_file = "{tmp_path / "id.txt"}"',
            "[tables]", f'include = ["{self.db}.*"]',
            "[replication]", f'state_db = "{self.state_db}"',
            *[f"{k} = {v}" for k, v in keys.items()]]) + "\n")

    def conn(self, which: str = "primary"):
        host, _, port = getattr(self, which).rpartition(":")
        return r.connect(host=host, port=int(port), timeout=10)

    def start(self) -> subprocess.Popen:
        out = self.log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(self.policy),
                                      "replicate"], stdout=out, stderr=out)
        out.close()
        return self.proc

    def status(self) -> dict:
        done = drtool(self.policy, "status", "--json")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def streaming(self, tables: set[str]) -> dict:
        def ready():
            assert self.proc is None or self.proc.poll() is None, self.log.read_text()
            got = self.status()
            states = {t["table"]: t["state"] for t in got.get("tables", [])}
            return got if all(states.get(f"{self.db}.{t}") == "streaming" for t in tables) else None
        return wait_until(ready, f"tables {sorted(tables)} streaming\n")

    def equal(self) -> None:
        def same():
            done = drtool(self.policy, "diff", "--json", "-q")
            return done.returncode == 0 and json.loads(done.stdout)["tables"]
        wait_until(same, "drtool diff to report the standby equal")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        code = stop_runner(self.proc, self.log, sig, WAIT)
        self.proc = None
        return code

    def cleanup(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for which in ("primary", "standby"):
            try:
                with self.conn(which) as c:
                    for db in (self.db, self.state_db):
                        if db in r.db_list().run(c):
                            r.db_drop(db).run(c)
            except r.errors.ReqlDriverError:
                pass


@pytest.fixture
def dep(tmp_path, primary, standby):
    d = Deployment(tmp_path, primary.address, standby.address)
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    assert drtool(d.policy, "init").returncode == 0
    yield d
    d.cleanup()


def make_table(d: Deployment, name: str, n: int, **opts) -> None:
    with d.conn() as c:
        if d.db not in r.db_list().run(c):
            r.db_create(d.db).run(c)
        r.db(d.db).table_create(name, **opts).run(c)
        for start in range(0, n, 1000):
            r.db(d.db).table(name).insert(
                [{"id": i, "v": f"doc-{i}-ü", "pad": "x" * 200}
                 for i in range(start, min(n, start + 1000))]).run(c)


class Writer(threading.Thread):
    """Mixed updates/inserts/deletes on the primary until stopped."""

    def __init__(self, d: Deployment, table: str, start_key: int) -> None:
        super().__init__(daemon=True)
        self.d, self.table, self.key = d, table, start_key
        self.halt = threading.Event()
        self.writes = 0

    def run(self) -> None:
        with self.d.conn() as c:
            tbl = r.db(self.d.db).table(self.table)
            while not self.halt.is_set():
                self.key += 1
                tbl.insert({"id": self.key, "v": "new"}).run(c)
                tbl.get(self.key % 500).update({"v": f"upd-{self.key}"}).run(c)
                tbl.get(self.key - 3).delete().run(c)
                self.writes += 3


def test_copy_stream_kill9_restart_and_sigterm(dep: Deployment):
    make_table(dep, "t", 20000)
    writer = Writer(dep, "t", 100000)
    writer.start()  # writes during the initial copy
    dep.start()
    try:
        dep.streaming({"t"})
    finally:
        writer.halt.set()
        writer.join()
    assert writer.writes > 0
    dep.equal()
    log = dep.log.read_text()
    assert "table-copied" in log and f"{dep.db}.t: copied" in log
    with dep.conn() as c:  # inserts, updates, deletes streamed
        tbl = r.db(dep.db).table("t")
        tbl.insert([{"id": -i, "v": "stream"} for i in range(1, 50)]).run(c)
        tbl.get(7).update({"v": "changed"}).run(c)
        tbl.get(8).delete().run(c)
    dep.equal()
    # kill -9 mid-way; writes while no runner runs; a restart repairs by digest, no recopy
    assert dep.stop(signal.SIGKILL) == -signal.SIGKILL
    with dep.conn() as c:
        r.db(dep.db).table("t").insert([{"id": 10**6 + i} for i in range(30)]).run(c)
        r.db(dep.db).table("t").get(9).delete().run(c)

    # restarted at once: the killed runner's lease (same host, pid gone) is taken at once
    dep.start()
    dep.streaming({"t"})
    dep.equal()
    log = dep.log.read_text()
    assert "another runner holds the lease" not in log and "runner-spare" not in log
    assert log.count("table-copied") == 1
    status = dep.status()
    assert status["healthy"] is True and status["lag_seconds"] is not None
    repair = status["last_repair"]  # the 30 inserts and 1 delete made while no runner ran
    assert (repair["table"], repair["reason"], repair["differing"]) == (f"{dep.db}.t", "start", 31)
    assert (repair["written"], repair["deleted"]) == (30, 1)
    assert status["lease"]["holder"]
    # SIGTERM: apply what was read, release the lease, exit 0
    assert dep.stop(signal.SIGTERM) == 0
    after = dep.status()
    assert after["lease"] is None
    assert {t["state"] for t in after["tables"]} == {"stopped"}
    assert "lease-released" in dep.log.read_text()


def test_second_runner_refused_overflow_new_table_index(tmp_path, primary, standby):
    d = Deployment(tmp_path, primary.address, standby.address, changefeed_queue_size="10")
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    try:
        make_table(d, "a", 100)
        d.start()
        d.streaming({"a"})
        second = drtool(d.policy, "replicate", "--no-wait", timeout=60)
        assert second.returncode == 8
        assert "another runner holds the lease on the standby: runner" in second.stderr
        assert "holds it until" in second.stderr and second.stderr.count("\n") == 1
        with d.conn() as c:  # a burst that overflows a queue of 10: repaired by digest
            r.db(d.db).table("a").insert([{"id": 1000 + i} for i in range(2000)]).run(c)
        d.equal()
        assert "feed-overflow" in d.log.read_text()
        with d.conn() as c:
            r.db(d.db).table_create("b", primary_key="k").run(c)
            r.db(d.db).table("b").insert({"k": "x"}).run(c)
            r.db(d.db).table("a").index_create("by_v", r.row["v"]).run(c)
        d.streaming({"a", "b"})

        def indexed():
            with d.conn("standby") as c:
                return "by_v" in r.db(d.db).table("a").index_list().run(c)
        wait_until(indexed, "the new index on the standby")
        d.equal()
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_primary_key_differs_reported_not_overwritten(dep: Deployment):
    make_table(dep, "t", 10)
    with dep.conn("standby") as c:
        r.db_create(dep.db).run(c)
        r.db(dep.db).table_create("t", primary_key="other").run(c)
        r.db(dep.db).table("t").insert({"other": "mine"}).run(c)
    dep.start()

    def reported():
        got = dep.status()
        return [t for t in got.get("tables", []) if t["state"] == "error"]
    (row,) = wait_until(reported, "the table error in status")
    assert "primary key 'id' on primary but 'other' on standby: not overwritten" in row["message"]
    assert drtool(dep.policy, "status").returncode == 1
    with dep.conn("standby") as c:
        assert list(r.db(dep.db).table("t").run(c)) == [{"other": "mine"}]
    assert dep.stop() == 0


@pytest.mark.skipif(not os.environ.get("DRTOOL_RETHINKDB_BIN"),
                    reason="set DRTOOL_RETHINKDB_BIN to start a throw-away standby server")
def test_standby_server_restarted(tmp_path, primary):
    server = ThrowawayServer(tmp_path / "standby-data", "drtool_throwaway")
    serve, answering = server.start, server.answering
    serve()
    (tmp_path / "cfg").mkdir()
    d = Deployment(tmp_path / "cfg", primary.address, server.address)
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "cfg" / "id.txt")], capture_output=True).returncode == 0
    try:
        wait_until(answering, "the throw-away standby")
        make_table(d, "t", 2000)
        d.start()
        d.streaming({"t"})
        server.kill()  # -9: soft-durability writes not yet on disk may be lost
        with d.conn() as c:
            r.db(d.db).table("t").insert([{"id": 5000 + i} for i in range(100)]).run(c)
            r.db(d.db).table("t").get(1).delete().run(c)
        serve()
        wait_until(answering, "the restarted standby")
        d.streaming({"t"})
        d.equal()
        log = d.log.read_text()
        assert "connection-lost" in log and "repair-finished" in log
        assert log.count("table-copied") == 1
        assert d.stop() == 0
    finally:
        d.cleanup()
        server.kill()
