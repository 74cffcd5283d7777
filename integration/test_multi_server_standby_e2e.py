"""Losing a server of the standby cluster: a 1-server primary and a 2-server standby
(``[replication] standby_replicas = 1``), all started here from ``DRTOOL_RETHINKDB_BIN``
(integration/clusters.py) and named by ``hosts`` lists in the policy. The replicated table
has two shards, one on each standby server; drtool's own state tables get one replica per
server (two). A standby server is killed with -9 while the application writes to the
primary, then started again: the runner keeps running, ``status`` names the table that is
unavailable and why, the runner repairs it (no second copy) and ``drtool diff`` exits 0.

Observed on 2.4.4 (see the report of issue 17): with one server of two killed, a table with
two replicas (drtool's state tables) can be neither read nor written (``Cannot perform read:
The primary replica isn't connected to a quorum of replicas. The read was not performed, you
can do an outdated read using `read_mode="outdated"``, or ``primary replica for shard ["",
+inf) not available`` when its primary was on the killed server) until the server is back:
the runner can renew neither its lease nor its heartbeat, so it writes nothing meanwhile.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rethinkdb import RethinkDB

from drtool.cluster import connect
from drtool.cluster.rethink import schema as rethink_schema
from drtool.coordination.state import StateStore
from drtool.errors import ClusterUnreachable
from drtool.model import ClusterConfig

from clusters import Writer, until
from test_multi_server_e2e import MultiDeployment, cluster_pair, make_tables, replicas_of
from test_replicate_e2e import drtool

r = RethinkDB()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    yield from cluster_pair(tmp_path_factory, 1, 2)


def shard_servers(conn, db: str, table: str) -> list[str]:
    """The server holding each shard of ``db.table`` (one replica each)."""
    config = r.db(db).table(table).config().run(conn)
    return [shard["primary_replica"] for shard in config["shards"]]


def status_json(d: MultiDeployment) -> dict:
    done = drtool(d.policy, "status", "--json", timeout=120)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # never dies
    return json.loads(done.stdout)


async def ensure_state_tables(cluster, state_db: str, monkeypatch) -> None:
    """StateStore.ensure on ``cluster`` through the servers that answer, waiting at most
    2 s for each state table to be ready for writes."""
    monkeypatch.setattr(rethink_schema, "STATE_READY_TIMEOUT", 2.0)
    alive = tuple(s.address for s in cluster.servers if s.proc is not None)
    conn = await connect(ClusterConfig("standby", alive))
    try:
        await asyncio.wait_for(StateStore(conn, state_db, "p").ensure(), 60)  # never hangs
    finally:
        await conn.close()


def test_runner_through_a_standby_server_killed_and_restarted(tmp_path, clusters,
                                                              monkeypatch):
    primary, standby = clusters
    d = MultiDeployment(tmp_path, primary, standby)
    name = f"{d.db}.t"
    try:
        make_tables(d, {"t": (2, 1, 2000)})
        d.start()
        d.streaming({"t"})
        with d.conn("standby") as c:
            assert set(replicas_of(c, d.state_db).values()) == {2}  # one per server
            assert replicas_of(c, d.db) == {"t": 1}
            holders = shard_servers(c, d.db, "t")
        assert sorted(holders) == sorted(s.name for s in standby.servers), holders
        writer = Writer(primary, d.db, "t")
        writer.start()
        until(lambda: writer.acked > 20, "the application to write")
        standby.kill(0)  # the first of the standby's hosts: connections move to the other

        def reported():
            got = status_json(d)
            tables = f"cannot read {d.state_db}.tables on the standby: "  # 2 replicas, 1 up
            return got if any(u["table"] == name and u["cluster"] == "standby"
                              for u in got["unavailable"]) and any(
                x.startswith(tables) for x in got["unreadable"]) else None
        got = until(reported, f"status to name {name} unavailable on the standby and its "
                    "state tables unreadable")
        why = next(u["reason"] for u in got["unavailable"] if u["table"] == name)
        assert why.startswith(f"standby 127.0.0.1:{standby.servers[1].port} table {name}: the "
                              "cluster is not available: "), why
        assert f"{name}: unavailable on the standby: {why}" in got["problems"]
        assert got["healthy"] is False
        for args in (["diff", "-q"], ["replicate", "--no-wait"]):  # one line: try again later
            done = drtool(d.policy, *args, timeout=120)
            *notes, last = done.stderr.strip().splitlines()
            assert done.returncode == 3, (args, done.stderr)
            assert last.startswith("drtool: error: standby ") and last.endswith(
                "; try again later") and "the cluster is not available" in last, (
                args, done.stderr)
            # diff compares the table again 4 times first (drtool.util.retry), saying so
            assert len(notes) == (4 if args[0] == "diff" else 0), (args, done.stderr)
            assert all(": starting again in " in n for n in notes), (args, done.stderr)
        with pytest.raises(ClusterUnreachable) as refused:  # no wait for ever: a limit
            asyncio.run(ensure_state_tables(standby, d.state_db, monkeypatch))
        assert str(refused.value).endswith(  # one line, naming the table and what to do
            f"table {d.state_db}.heartbeat: not ready for writes after 2 s (Timed out while "
            "waiting for tables): drtool's own tables take writes only while most of their "
            "replicas' servers are up; start the standby's servers that are down, then try "
            "again")
        before = writer.acked  # a long outage: the table's backoff grows past 1 s meanwhile
        until(lambda: writer.acked > before + 800, "the application to write on meanwhile")
        assert d.proc.poll() is None, d.log.read_text()  # the runner waits, it does not die
        standby.restart(0)
        standby.wait_ready(d.db)
        d.streaming({"t"})
        acked = writer.stop()
        d.equal()  # drtool diff exits 0: nothing the application wrote was lost
        with d.conn("standby") as c:
            assert r.db(d.db).table("t").count().run(c) == 2000 + acked

        def recovered():
            got = status_json(d)
            return got["healthy"] and got["lease"]["pid"] == d.proc.pid
        until(recovered, "status to see every table again, and the same runner active")
        log = d.log.read_text()
        assert log.count("table-copied") == 1, log  # repaired, never copied again
        assert log.count(f"connection-restored: {name}: connected again") == 1, log
        assert d.proc.poll() is None, log
    finally:
        d.cleanup()
