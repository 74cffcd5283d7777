"""Several runners sharing a policy's tables (``[replication] share_tables``, fake clusters):
they split the tables (per-table leases, rendezvous hashing over the live runners), one of
them holds the policy-wide duties, and when one stops the other takes its tables over by a
repair, never a full recopy; ``drtool status`` shows each table's owner."""

from __future__ import annotations

import asyncio

import pytest

from drtool.cluster import fake
from drtool.cluster.fake.server import FakeCluster
from drtool.config.policy import load_policy
from drtool.coordination.state import LeaseHolder
from drtool.model import TableName
from drtool.standby.share import table_owners
from drtool.standby.status import read_status

from tests.conftest import connect_fake, write_policy
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until

TABLES = [TableName("app", f"t{i}") for i in range(6)]
A, B = LeaseHolder("runner-a", "machine-a", 1001), LeaseHolder("runner-b", "machine-b", 1002)


@pytest.fixture
def policy(tmp_path, primary_server, standby_server):
    return load_policy(write_policy(tmp_path, extra=replication_section(
        share_tables="true")).path)


async def make_tables(server) -> None:
    c = connect_fake(server)
    await c.ensure_db("app")
    for t in TABLES:
        await c.create_table(t, primary_key="id", shards=1, replicas=1)
        await c.insert_texts(t, ['{"id":%d}' % i for i in range(30)])


def shared(bg: Background) -> set[TableName]:
    share = bg.runner.share
    return set() if share is None else {t for t, r in share.replicators.items()
                                        if r.state == "streaming"}


def owner(table: TableName, members: list[str]) -> str:
    return table_owners(TABLES, members)[table]


def test_the_tables_are_split_as_evenly_as_the_numbers_allow_and_move_little():
    for n_tables in range(1, 13):
        tables = [TableName("app", f"x{i}") for i in range(n_tables)]
        for members in (["runner-a", "runner-b"], ["runner-a", "runner-b", "runner-c"],
                        [f"r{i}" for i in range(5)]):
            owners = table_owners(tables, members)
            assert set(owners) == set(tables)
            counts = [list(owners.values()).count(m) for m in members]
            assert max(counts) - min(counts) <= 1, (n_tables, members, counts)
            assert table_owners(list(reversed(tables)), list(reversed(members))) == owners
    two = table_owners(TABLES, ["runner-a", "runner-b"])
    three = table_owners(TABLES, ["runner-a", "runner-b", "runner-c"])
    moved = {t for t in TABLES if two[t] != three[t]}
    assert len(moved) <= 3 and all(three[t] == "runner-c" for t in moved)  # only to the new one
    assert set(table_owners(TABLES, ["runner-a"]).values()) == {"runner-a"}
    assert table_owners(TABLES, []) == {}


async def test_two_runners_split_the_tables_and_rebalance_when_one_stops(
        policy, primary_server, standby_server):
    await make_tables(primary_server)
    mine = {h.id: {t for t in TABLES if owner(t, [A.id, B.id]) == h.id} for h in (A, B)}
    a = Background(policy, holder=A)
    await a.__aenter__()
    async with Background(policy, holder=B) as b:
        await wait_until(lambda: shared(a) == mine[A.id] and shared(b) == mine[B.id],
                         "the two runners to split the tables")
        primary_server.put_texts(TABLES[0], ['{"id":"while shared"}'])
        primary_server.put_texts(TABLES[5], ['{"id":"while shared"}'])
        await wait_equal(policy)
        status = await read_status(policy, fake.NETWORK)
        owners = status.to_json()["owners"]
        assert owners == {str(t): owner(t, [A.id, B.id]) for t in TABLES}
        assert sorted(owners.values()) == [A.id] * 3 + [B.id] * 3  # as even as it gets
        await a.__aexit__(None, None, None)  # runner a stops: b takes its tables over
        await wait_until(lambda: shared(b) == set(TABLES), "runner b to hold every table")
        taken = b.runner.share.replicators
        assert all(taken[t].stats.copied == 0 for t in mine[A.id])  # repaired, not recopied
        primary_server.put_texts(TABLES[1], ['{"id":"after the rebalance"}'])
        await wait_equal(policy)
        owners = (await read_status(policy, fake.NETWORK)).to_json()["owners"]
        assert set(owners.values()) == {B.id}


def test_status_shows_each_runners_share(tmp_path, primary_server, standby_server):
    from tests.conftest import Cli

    dep = write_policy(tmp_path, extra=replication_section(share_tables="true",
                                                           lag_threshold='"1h"'))
    policy = load_policy(dep.path)

    async def go():
        await make_tables(primary_server)
        async with Background(policy, holder=A) as a:
            await wait_until(lambda: shared(a) == set(TABLES), "runner a to hold every table")
            for _ in range(20):  # its record says so from its next renewal (every second)
                text = await asyncio.to_thread(Cli(dep.path), "status")  # its own loop
                if "6 of 6 tables streaming" in text.stdout:
                    break
                await asyncio.sleep(0.25)
            return text
    text = asyncio.run(go())
    assert text.exit_code == 0, text.stdout
    assert ("shares: runner runner-a replicates " + ", ".join(map(str, TABLES))
            + " (on machine-a, 6 of 6 tables streaming, lag 0.000 s)") in text.stdout


async def test_each_runners_lag_is_its_oldest_change_not_yet_applied(
        policy, primary_server, standby_server, monkeypatch):
    """A runner whose writes into one of its tables hang shows a growing lag in status (its
    own, in its membership record); the other runner shows none; both go back to 0."""
    await make_tables(primary_server)
    stuck, held, hang = TABLES[0], asyncio.Event(), []
    write = FakeCluster.insert_texts

    async def hanging(self, table, docs, **options):
        if hang and table == stuck and self.server is standby_server:
            await held.wait()
        return await write(self, table, docs, **options)
    monkeypatch.setattr(FakeCluster, "insert_texts", hanging)
    slow, other = (A, B) if owner(stuck, [A.id, B.id]) == A.id else (B, A)

    def runners(status) -> dict:
        return {x["runner"]: x for x in status.to_json()["runners"]}

    async def lag_of(holder) -> float:
        return runners(await read_status(policy, fake.NETWORK))[holder.id]["lag"]

    async with Background(policy, holder=A) as a, Background(policy, holder=B) as b:
        await wait_until(lambda: len(shared(a)) == 3 and len(shared(b)) == 3, "3 + 3 tables")
        hang.append(True)
        primary_server.put_texts(stuck, ['{"id":"waits"}'])
        for _ in range(30):  # the record is renewed every second
            if await lag_of(slow) >= 1.0:
                break
            await asyncio.sleep(0.2)
        status = runners(await read_status(policy, fake.NETWORK))
        assert status[slow.id]["lag"] >= 1.0 and status[other.id]["lag"] == 0.0
        assert status[slow.id]["tables"] == 3 and status[slow.id]["host"] == slow.host
        held.set()
        await wait_equal(policy)
        for _ in range(30):
            if await lag_of(slow) == 0.0:
                break
            await asyncio.sleep(0.2)
        assert await lag_of(slow) == 0.0



async def test_sharing_runners_let_go_of_their_tables_for_a_planned_failover(
        policy, primary_server, standby_server):
    from drtool.failover.planned import planned_failover

    await make_tables(primary_server)
    a = Background(policy, holder=A)
    await a.__aenter__()
    try:
        async with Background(policy, holder=B) as b:
            mine = {t for t in TABLES if owner(t, [A.id, B.id]) == B.id}
            await wait_until(lambda: shared(b) == mine, "runner b to hold its share")
            lines: list[str] = []
            await planned_failover(policy, connector=fake.NETWORK, say=lines.append)
            assert not b.runner.share.replicators  # drained and released before promotion
            status = await read_status(policy, fake.NETWORK)
            assert status.owners == {} and status.roles.generation == 1
    finally:
        await a.__aexit__(None, None, None)


async def test_a_table_dropped_on_the_primary_is_dropped_on_the_standby_when_shared(
        tmp_path, primary_server, standby_server, caplog):
    from drtool.standby.events import LOGGER

    caplog.set_level("WARNING", logger=LOGGER)
    policy = load_policy(write_policy(tmp_path, extra=replication_section(
        share_tables="true", drop_tables="true")).path)
    await make_tables(primary_server)
    async with Background(policy, holder=A) as a:
        await wait_until(lambda: shared(a) == set(TABLES), "runner a to hold every table")
        await connect_fake(primary_server).drop_table(TABLES[2])
        standby = connect_fake(standby_server)
        await wait_until(lambda: TABLES[2] not in standby_server.dbs["app"],
                         "the table to be dropped on the standby")

        async def forgotten() -> bool:  # the owner's last "stopped" may come after a forget
            states = await a.runner._store("standby").table_states()
            return TABLES[2] not in {s.table for s in states}
        await wait_until(forgotten, "the dropped table's state to be forgotten")
        assert TABLES[2] not in a.runner.share.replicators
        assert set(TABLES) - {TABLES[2]} <= set(await standby.list_tables())
    assert any(m.startswith(f"table-dropped: {TABLES[2]}: dropped on the primary; dropping it")
               for m in caplog.messages)
