"""Point-in-time recovery end to end on real RethinkDB servers: the runner keeps the change
log ([archive], no [standby]), a table is emptied by mistake, and ``restore --at`` and
``restore --at --delta`` bring it back to one second before the mistake from the CLI.

Waits have generous bounds (a failure, not a measurement); no test asserts a time. The
writes' acknowledgement times are taken from the local clock, which is the servers' clock
(the servers run on this machine).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from clusters import stop_runner

r = RethinkDB()
WAIT = 90.0


def drtool(policy: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtool", "-p", str(policy), *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_until(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LogDeployment:
    def __init__(self, tmp_path: Path, primary: str) -> None:
        """A policy over ``primary`` with [archive] (slice_every 1s) and no [standby]."""
        self.tmp, self.primary = tmp_path, primary
        self.db = "drtool_it_" + uuid.uuid4().hex[:10]
        self.log = tmp_path / "runner.log"
        self.proc: subprocess.Popen | None = None
        self.policy = tmp_path / "policy.toml"
        self.policy.write_text("\n".join([
            f'name = "it{uuid.uuid4().hex[:6]}"',
            "[primary]", f'hosts = ["{primary}"]',
            "[repository]", f'url = "file://{tmp_path / "repo"}"',
            "[encryption]", f'identity_file = "{tmp_path / "id.txt"}"',
            "[tables]", f'include = ["{self.db}.*"]',
            "[replication]", 'schema_poll = "1s"',
            "[archive]", 'slice_every = "1s"', f'spool = "{tmp_path / "spool"}"']) + "\n")

    def conn(self):
        host, _, port = self.primary.rpartition(":")
        return r.connect(host=host, port=int(port), timeout=10)

    def start(self) -> None:
        out = self.log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(self.policy),
                                      "replicate"], stdout=out, stderr=out)
        out.close()

    def timeline(self, table: str) -> dict:
        done = drtool(self.policy, "timeline", "--table", f"{self.db}.{table}", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["tables"][0]

    def restorable_until(self, table: str, seconds: float) -> dict:
        def reached():
            assert self.proc is None or self.proc.poll() is None, self.log.read_text()
            got = self.timeline(table)
            spans = got["restorable"]
            return got if spans and spans[-1]["to_ms"] > seconds * 1000 else None
        return wait_until(reached, f"{table} restorable past {iso(seconds)}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        code = stop_runner(self.proc, self.log, sig, WAIT)
        self.proc = None
        return code

    def cleanup(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        with self.conn() as c:
            if self.db in r.db_list().run(c):
                r.db_drop(self.db).run(c)

    def contents(self, table: str) -> dict:
        with self.conn() as c:
            return {d["id"]: d for d in r.db(self.db).table(table).run(c)}


def initialised(tmp_path: Path, address: str) -> LogDeployment:
    """A LogDeployment with its identity and repository made, and its database (empty)."""
    d = LogDeployment(tmp_path, address)
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    assert drtool(d.policy, "init").returncode == 0
    with d.conn() as c:
        r.db_create(d.db).run(c)
        r.db(d.db).table_create("t").run(c)
    return d


@pytest.fixture
def log_dep(tmp_path, primary):
    d = initialised(tmp_path, primary.address)
    with d.conn() as c:
        r.db(d.db).table("t").index_create("v").run(c)
        r.db(d.db).table("t").insert([{"id": i, "v": f"doc-{i}-ü", "pad": "x" * 200}
                                      for i in range(3000)]).run(c)
    yield d
    d.cleanup()


def test_table_emptied_by_mistake_brought_back_by_restore_at_and_delta(log_dep: LogDeployment):
    d = log_dep
    d.start()
    d.restorable_until("t", time.time())  # the base is written and a slice sealed
    with d.conn() as c:
        tbl = r.db(d.db).table("t")
        for i in range(200):  # writes before the mistake: updates, inserts, deletes
            tbl.get(i).update({"v": f"changed-{i}"}).run(c)
            tbl.insert({"id": 10_000 + i, "v": "new"}).run(c)
            tbl.get(2000 + i).delete().run(c)
        time.sleep(1.5)
        wanted = d.contents("t")
        time.sleep(1.0)
        mistake = time.time()
        tbl.delete().run(c)  # the mistake
        tbl.insert({"id": "after", "v": "written after the mistake"}).run(c)
    d.restorable_until("t", mistake + 2)
    at = iso(mistake - 1.0)

    done = drtool(d.policy, "restore", "--at", at, "--rename", f"{d.db}.t={d.db}.back", "-q")
    assert done.returncode == 0, done.stderr
    assert d.contents("back") == wanted
    assert len(wanted) == 3000
    with d.conn() as c:
        assert "v" in r.db(d.db).table("back").index_list().run(c)

    dry = drtool(d.policy, "restore", "--at", at, "--delta", "--dry-run", "--json", "-q")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)["tables"][0]
    assert (report["written_count"], report["deleted_count"]) == (3000, 1)
    assert set(d.contents("t")) == {"after"}
    done = drtool(d.policy, "restore", "--at", at, "--delta", "-q")
    assert done.returncode == 0, done.stderr
    assert d.contents("t") == wanted

    before = drtool(d.policy, "restore", "--at", "2020-01-01T00:00:00Z", "--rename",
                    f"{d.db}.t={d.db}.never", "-q")
    assert before.returncode == 2
    assert before.stderr.strip().count("\n") == 0 and "nearest restorable times" in before.stderr
    with d.conn() as c:
        assert "never" not in r.db(d.db).table_list().run(c)
    d.proc.send_signal(signal.SIGUSR1)  # what it is doing, in its log; it goes on
    wait_until(lambda: "tasks: what the runner is doing" in d.log.read_text(), "the task list")
    assert f"task archive {d.db}.t:" in d.log.read_text()
    assert d.proc.poll() is None
    assert d.stop() == 0
