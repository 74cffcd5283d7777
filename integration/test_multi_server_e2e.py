"""drtool on multi-server clusters, as users run them: a 3-server primary (tables with 3 shards
and 3 replicas) and a 1-server standby (``[replication] standby_replicas = 1``, the README's
smaller standby), all started here from ``DRTOOL_RETHINKDB_BIN`` (integration/clusters.py) and
named by ``hosts`` lists in the policy. A server of the primary is killed with -9 while an
application writes; after each scenario ``drtool diff`` exits 0.

Observed on 2.4.4 (see the report of issue 17): with one server of three killed, a 3x3 table
is unavailable for ~3 s (``Cannot perform read: primary replica for shard ... not available``)
until new primaries are elected, and its changefeeds end (``Changefeed aborted
(unavailable)``); a table whose only replica was on the killed server stays unavailable
(config() holds ``None of the replicas for this table are accessible.``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from rethinkdb import RethinkDB

from clusters import LocalCluster, Writer, until
from test_replicate_e2e import Deployment, drtool

r = RethinkDB()


def cluster_pair(tmp_path_factory, primaries: int, standbys: int):
    """A module fixture's body: a primary and a standby LocalCluster of that many servers,
    started, stopped after the module."""
    base = tmp_path_factory.mktemp("clusters")
    primary = LocalCluster(base, "primary", primaries)
    standby = LocalCluster(base, "standby", standbys)
    try:
        yield primary.start(), standby.start()
    finally:
        primary.stop()
        standby.stop()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    yield from cluster_pair(tmp_path_factory, 3, 1)


class MultiDeployment(Deployment):
    """Deployment whose policy names every server of each cluster in ``hosts``."""

    def __init__(self, tmp_path, primary: LocalCluster, standby: LocalCluster) -> None:
        super().__init__(tmp_path, primary.addresses[0], standby.addresses[0],
                         standby_replicas="1")
        self.clusters = {"primary": primary, "standby": standby}
        text = self.policy.read_text()
        for cluster in (primary, standby):
            text = text.replace(f'hosts = ["{cluster.addresses[0]}"]',
                                "hosts = [" + ", ".join(f'"{a}"' for a in cluster.addresses)
                                + "]")
        self.policy.write_text(text)
        assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                               str(tmp_path / "id.txt")], capture_output=True).returncode == 0

    def conn(self, which: str = "primary"):
        """A connection to the first server of that cluster that answers."""
        return self.clusters[which].connect()


def make_tables(d: MultiDeployment, tables: dict[str, tuple[int, int, int]]) -> None:
    """Create ``name: (shards, replicas, documents)`` in the deployment's database."""
    with d.conn() as c:
        r.db_create(d.db).run(c)
        for name, (shards, replicas, n) in tables.items():
            r.db(d.db).table_create(name, shards=shards, replicas=replicas).run(c)
        r.db(d.db).wait().run(c)
        for name, (_, _, n) in tables.items():
            r.db(d.db).table(name).insert([{"id": i, "v": "x" * 200} for i in range(n)]).run(c)


def replicas_of(conn, db: str) -> dict[str, int]:
    rows = r.db("rethinkdb").table("table_config").filter({"db": db}).run(conn)
    return {row["name"]: min(len(s["replicas"]) for s in row["shards"]) for row in rows}


def test_runner_through_a_server_killed_and_restarted(tmp_path, clusters):
    primary, standby = clusters
    d = MultiDeployment(tmp_path, primary, standby)
    try:
        make_tables(d, {"t": (3, 3, 2000)})
        d.start()
        d.streaming({"t"})
        with d.conn() as c:  # drtool's own tables: one replica per server, up to three
            assert set(replicas_of(c, d.state_db).values()) == {3}
        with d.conn("standby") as c:
            assert set(replicas_of(c, d.state_db).values()) == {1}
            assert replicas_of(c, d.db) == {"t": 1}
        writer = Writer(primary, d.db, "t")
        writer.start()
        until(lambda: writer.acked > 20, "the application to write")
        primary.kill(0)  # the first of the policy's hosts: connections move to the others
        status = drtool(d.policy, "status", "--json", timeout=120)  # during the election:
        assert status.returncode in (0, 1), status.stdout + status.stderr  # never dies
        assert json.loads(status.stdout)["roles"]["generation"] == 0
        until(lambda: d.status().get("unreadable") == [],  # three replicas: all readable again
              "status to read every state table with a server down")
        until(lambda: writer.acked > 200, "the application to write again after the election")
        primary.restart(0)
        primary.wait_ready(d.db)
        acked = writer.stop()
        d.equal()  # drtool diff exits 0: nothing the application wrote was lost
        with d.conn() as c:
            assert r.db(d.db).table("t").count().run(c) == 2000 + acked
        log = d.log.read_text()
        assert log.count("table-copied") == 1  # repaired, never copied again
        assert d.proc.poll() is None, log
    finally:
        d.cleanup()


def test_snapshot_with_a_server_down(tmp_path, clusters):
    """Tables whose every shard has a ready replica are snapshotted and restore equal; a
    table whose only replica is on the server that is down is named in one line and no
    snapshot is half-made."""
    primary, standby = clusters
    d = MultiDeployment(tmp_path, primary, standby)
    try:
        make_tables(d, {"t": (3, 3, 1500), "one": (1, 1, 10)})
        with d.conn() as c:
            holder = r.db(d.db).table("one").config()["shards"][0]["primary_replica"].run(c)
        down = [s.name for s in primary.servers].index(holder)
        assert drtool(d.policy, "init").returncode == 0
        primary.kill(down)
        try:
            def t_ready():
                with primary.connect(skip=down) as c:
                    return r.db(d.db).table("t").count().run(c) == 1500
            until(t_ready, "t to be ready again after the election")
            whole = drtool(d.policy, "snapshot", "-q", timeout=300)
            assert whole.returncode == 3, whole.stderr  # unavailable: try again later
            *notes, error = whole.stderr.strip().splitlines()  # tried again 4 times first
            assert len(notes) == 4 and all(": starting again in " in n for n in notes)
            assert error.startswith("drtool: error: primary "), whole.stderr
            assert f"table {d.db}.one: the cluster is not available: The server(s) hosting " \
                f"table `{d.db}.one` are currently unreachable." in error
            assert json.loads(drtool(d.policy, "snapshots", "--json").stdout) == []
            done = drtool(d.policy, "snapshot", "-q", "--table", f"{d.db}.t", timeout=300)
            assert done.returncode == 0, done.stderr
        finally:
            primary.restart(down)
        primary.wait_ready(d.db)  # the restarted server may take its shards back: elections
        restored = drtool(d.policy, "restore", "latest", "--to", "standby", "-q", timeout=300)
        assert restored.returncode == 0, restored.stderr
        equal = drtool(d.policy, "diff", "-q", "--table", f"{d.db}.t")
        assert equal.returncode == 0, equal.stdout + equal.stderr
    finally:
        d.cleanup()


def test_every_command_moves_to_another_host_when_the_first_is_down(tmp_path, clusters):
    """The first server of the primary's ``hosts`` is down: each command that reads or writes
    the primary connects to the next one and does its work, and a runner restarted then finds
    drtool's own tables (three replicas, one of them down) ready for writes after the election
    (it used to wait for all replicas forever)."""
    primary, standby = clusters
    d = MultiDeployment(tmp_path, primary, standby)
    try:
        make_tables(d, {"t": (3, 3, 300)})
        assert drtool(d.policy, "init").returncode == 0
        d.start()  # drtool's own tables are made with every server up
        d.streaming({"t"})
        assert d.stop() == 0
        primary.kill(0)
        try:
            primary.wait_ready(d.db, "ready_for_writes")  # new primaries elected (~3 s)
            for args in (["snapshot", "-q"], ["restore", "latest", "--to", "standby", "-q",
                                              "--conflict", "replace"],
                         ["diff", "-q"], ["reconcile", "-q"], ["status", "--json"]):
                done = drtool(d.policy, *args, timeout=300)
                assert done.returncode in ((0, 1) if args[0] == "status" else (0,)), (
                    args, done.stdout, done.stderr)
                assert "cannot reach" not in done.stdout + done.stderr
            d.start()  # the runner too
            d.streaming({"t"})
            d.equal()
            dry = drtool(d.policy, "failover", "--planned", "--dry-run", timeout=300)
            assert dry.returncode == 0, dry.stdout + dry.stderr
        finally:
            primary.restart(0)
    finally:
        d.cleanup()


def test_a_snapshot_moves_to_another_server_when_the_one_it_reads_from_dies(tmp_path, clusters):
    """A snapshot (throttled so that it lasts ~10 s) reads from the first server of ``hosts``;
    that server is killed -9 a few seconds in: the snapshot goes on through another server,
    finishes (exit 0), and restores equal to the table."""
    primary, standby = clusters
    d = MultiDeployment(tmp_path, primary, standby)
    d.policy.write_text(d.policy.read_text() + '[throttle]\nprimary_reads = "3000docs/s"\n')
    try:
        make_tables(d, {"t": (3, 3, 30_000)})
        assert drtool(d.policy, "init").returncode == 0
        snap = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(d.policy),
                                 "snapshot", "-q"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # 30,000 documents at 3,000/s: the scan is under way
        assert snap.poll() is None, snap.communicate()
        primary.kill(0)
        try:
            out, err = snap.communicate(timeout=300)
            assert snap.returncode == 0, out + err
        finally:
            primary.restart(0)
        primary.wait_ready(d.db)
        [listed] = json.loads(drtool(d.policy, "snapshots", "--json").stdout)
        restored = drtool(d.policy, "restore", listed["id"], "--to", "standby", "-q",
                          timeout=300)
        assert restored.returncode == 0, restored.stderr
        equal = drtool(d.policy, "diff", "-q", "--table", f"{d.db}.t")
        assert equal.returncode == 0, equal.stdout + equal.stderr
    finally:
        d.cleanup()
