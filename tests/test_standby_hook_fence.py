"""The write-hook standby fence on the fake clusters (``[failover] fence = "write-hook"``, an
application writing as admin): the runner keeps a hook refusing every write on each selected
standby table, records the primary's own hooks there, and promotion installs them (planned,
unplanned); the reversed runner fences the new standby."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from drtool.cluster.fake import NETWORK
from drtool.cluster.fake import FakeServer
from drtool.compare.shape import is_drtool_fence, plan_shape
from drtool.coordination.state import StateStore
from drtool.failover.failback import failback
from drtool.failover.planned import planned_failover
from drtool.coordination.standby_fence import read_standby_fence, standby_fence_message
from drtool.failover.unplanned import unplanned_failover
from drtool.config.policy import load_policy
from drtool.standby.status import read_status

from tests.conftest import connect_fake, load_table, write_policy
from tests.failover_helpers import APP_PASSWORD, APP_PASSWORD_ENV, failover_section
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until
from tests.test_failover import T

T2 = T.__class__("app", "plain")  # no hook of its own
OWN = FakeServer.hook_blob()


def refusal(generation: int) -> str:
    return "Error in write hook: " + standby_fence_message("test", generation)


@pytest.fixture
def policy(tmp_path, primary_server: FakeServer, standby_server: FakeServer, monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    load_table(primary_server, str(T), ['{"id":%d}' % i for i in range(20)])
    load_table(primary_server, str(T2), ['{"id":1}'])
    primary_server.table_obj(T).write_hook = OWN
    return load_policy(write_policy(tmp_path, extra=replication_section()
                                    + failover_section("admin", fence="write-hook")).path)


def hook(server: FakeServer, table=T):
    return server.table_obj(table).write_hook


async def recorded(server: FakeServer, policy) -> dict:
    record = await read_standby_fence(StateStore(connect_fake(server),
                                                 policy.replication.state_db, policy.name))
    assert record is not None and record.kind == "write-hook"
    return dict(record.hooks)


async def test_the_runner_keeps_every_standby_table_fenced(policy, primary_server, standby_server):
    async with Background(policy) as bg:
        await bg.streaming(2)
        found = await wait_equal(policy)  # the fence is not a difference, it is a note
        assert all("the standby is fenced by drtool" in " ".join(d.notes) for d in found)
        admin = connect_fake(standby_server)
        for table in (T, T2):
            res = await admin.insert_texts(table, ['{"id":"stray"}'])
            assert (res.inserted, res.first_error) == (0, refusal(0))
        assert await recorded(standby_server, policy) == {str(T): OWN, str(T2): None}
        # the runner's own writes bypass the fence
        await connect_fake(primary_server).insert_texts(T2, ['{"id":"new"}'])
        await wait_until(lambda: '{"id":"new"}' in standby_server.texts(T2), "a write replicated")
        # the primary's hook changes: recorded for the promotion, not copied
        other = FakeServer.hook_blob("function(var1, var2, var3) { return var2; }")
        await connect_fake(primary_server).set_write_hook(T2, other)
        await wait_until(async_eq(lambda: recorded(standby_server, policy),
                                  {str(T): OWN, str(T2): other}), "the new hook recorded")
        assert is_drtool_fence(hook(standby_server, T2), standby_fence_message("test", 0))
        # someone removes the fence on the standby: the runner puts it back
        await admin.set_write_hook(T, None)
        await wait_until(lambda: is_drtool_fence(hook(standby_server)), "the fence back")
        # a new table is fenced as soon as it is created on the standby
        later = T.__class__("app", "later")
        await connect_fake(primary_server).create_table(later, primary_key="id", shards=1,
                                                         replicas=1)
        await bg.streaming(3)
        res = await admin.insert_texts(later, ['{"id":"stray"}'])
        assert res.first_error == refusal(0)
    assert "stray" not in " ".join(standby_server.texts(T) + standby_server.texts(T2))


def async_eq(read, expected):
    async def check():
        return await read() == expected
    return check


async def test_planned_failover_installs_the_primary_hooks_and_the_reversed_runner_fences(
        policy, primary_server, standby_server):
    async with Background(policy) as bg:
        await bg.streaming(2)
        await wait_equal(policy)
        out = await planned_failover(policy, connector=NETWORK, reverse=True)
        assert out.generation == 1
        assert (hook(standby_server, T), hook(standby_server, T2)) == (OWN, None)
        new_primary = connect_fake(standby_server)
        assert (await new_primary.insert_texts(T2, ['{"id":"after"}'])).inserted == 1
        # the runner replicates the other way now and fences the old primary
        old = connect_fake(primary_server)
        await wait_until(lambda: all(is_drtool_fence(hook(primary_server, t),
                                                     standby_fence_message("test", 1))
                                     for t in (T, T2)), "the old primary fenced by the runner")
        assert (await old.insert_texts(T2, ['{"id":"late"}'])).first_error == refusal(1)
        await wait_until(lambda: '{"id":"after"}' in primary_server.texts(T2), "reverse replication")
        assert await recorded(primary_server, policy) == {str(T): OWN, str(T2): None}
        back = await failback(policy, connector=NETWORK, lost_writes=policy.path.parent / "lost.jsonl")
        assert back.generation == 2
        assert (hook(primary_server, T), hook(primary_server, T2)) == (OWN, None)
        await wait_until(lambda: is_drtool_fence(hook(standby_server, T),
                                                 standby_fence_message("test", 2)),
                         "the standby fenced again")
    assert (await connect_fake(primary_server).insert_texts(T2, ['{"id":"back"}'])).inserted == 1


async def test_unplanned_failover_installs_the_recorded_hooks(policy, primary_server,
                                                             standby_server):
    async with Background(policy) as bg:
        await bg.streaming(2)
        await wait_until(lambda: is_drtool_fence(hook(standby_server, T2)), "the standby fenced")
        await wait_until(async_eq(lambda: recorded(standby_server, policy),
                                  {str(T): OWN, str(T2): None}), "the hooks recorded")
    primary_server.down = True
    out = await unplanned_failover(policy, connector=NETWORK)
    assert out.generation == 1 and out.warnings == []
    assert (hook(standby_server, T), hook(standby_server, T2)) == (OWN, None)
    assert (await connect_fake(standby_server).insert_texts(T2, ['{"id":"x"}'])).inserted == 1


async def test_status_shows_which_standby_tables_carry_the_fence(policy, primary_server,
                                                                standby_server):
    async with Background(policy) as bg:
        await bg.streaming(2)
        await wait_until(lambda: all(is_drtool_fence(hook(standby_server, t)) for t in (T, T2)),
                         "both tables fenced")
    await connect_fake(standby_server).set_write_hook(T2, None)  # someone lifted it meanwhile
    status = await read_status(policy, NETWORK)
    assert status.fenced == {str(T): True, str(T2): False}
    rows = {row["table"]: row["fenced"] for row in status.to_json()["tables"]}
    assert rows == {str(T): True, str(T2): False}


@pytest.fixture
def dropping_policy(tmp_path, primary_server: FakeServer, standby_server: FakeServer,
                    monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    load_table(primary_server, str(T), ['{"id":1}'])
    load_table(primary_server, str(T2), ['{"id":1}'])
    primary_server.table_obj(T).write_hook = OWN
    return load_policy(write_policy(tmp_path, extra=replication_section(drop_tables="true")
                                    + failover_section("admin", fence="write-hook")).path)


async def test_a_table_dropped_on_the_primary_leaves_the_hook_record(
        dropping_policy, primary_server, standby_server):
    """Its recorded hook would make an unplanned failover warn "not restored ... NotFound"."""
    policy = dropping_policy
    async with Background(policy) as bg:
        await bg.streaming(2)
        await wait_until(async_eq(lambda: recorded(standby_server, policy),
                                  {str(T): OWN, str(T2): None}), "the hooks recorded")
        await connect_fake(primary_server).drop_table(T)
        await wait_until(async_eq(lambda: recorded(standby_server, policy), {str(T2): None}),
                         "the dropped table's hook forgotten")
    primary_server.down = True
    out = await unplanned_failover(policy, connector=NETWORK)
    assert out.generation == 1 and out.warnings == []
    assert hook(standby_server, T2) is None


async def test_copying_a_shape_keeps_a_fence_and_never_installs_one(primary_server):
    fenced = await _meta_with_fence(primary_server)
    own = fenced.__class__(**{**fenced.__dict__, "write_hook": OWN})
    mirrored = plan_shape(own, fenced, mirror=True)  # reconcile into a fenced standby
    assert mirrored.actions == [] and "fence kept" in mirrored.notes[0]
    restored = plan_shape(fenced, None, mirror=False)  # restore of a standby's snapshot
    assert restored.actions == [] and "not copied" in restored.notes[0]


async def _meta_with_fence(server: FakeServer):
    admin = connect_fake(server)
    await admin.ensure_db(T.db)
    await admin.create_table(T, primary_key="id", shards=1, replicas=1)
    await admin.set_rejecting_write_hook(T, standby_fence_message("p", 3))
    return await connect_fake(server).table_meta(T)


@pytest.mark.parametrize("kind", ["fake", "real"])
async def test_hook_fence_recognises_its_own_hook_and_lifts_to_the_recorded_one(kind):
    """On the real server two settings of the same hook give different blobs: the fence is
    recognised by its message, so a second ``keep`` changes nothing; lifting the record
    installs the source's hook (here none)."""
    import uuid

    from drtool.coordination.fence import lift_fence
    from drtool.coordination.standby_fence import HookFence
    from tests.replication_helpers import fake_or_real_cluster

    cluster = await fake_or_real_cluster(kind, "standby")
    db = "drtool_hookfence_" + uuid.uuid4().hex[:8]
    store = StateStore(cluster, db + "_state", "pol_" + uuid.uuid4().hex[:6])
    table = T.__class__(db, "t")
    try:
        await store.ensure()
        await cluster.ensure_db(db)
        await cluster.create_table(table, primary_key="id", shards=1, replicas=1)
        fence = HookFence(store, 4)
        assert await fence.keep(cluster, table, None, None) is True
        current = (await cluster.table_meta(table)).write_hook
        assert await HookFence(store, 4).keep(cluster, table, None, current) is False
        assert await HookFence(store, 5).keep(cluster, table, None, current) is True  # newer
        res = await cluster.insert_texts(table, ['{"id":1}'])
        assert res.first_error == "Error in write hook: " + standby_fence_message(store.policy, 5)
        assert (await cluster.insert_texts(table, ['{"id":1}'], ignore_write_hook=True)).inserted == 1
        record = await read_standby_fence(store)
        assert (record.kind, record.hooks) == ("write-hook", [(str(table), None)])
        assert await lift_fence(cluster, record) == []
        assert (await cluster.table_meta(table)).write_hook is None
        assert (await cluster.insert_texts(table, ['{"id":2}'])).inserted == 1
    finally:
        for name in (db, db + "_state"):
            with contextlib.suppress(Exception):
                await cluster.drop_db(name)
        await cluster.close()


def test_a_snapshot_of_the_fenced_standby_records_the_primarys_hooks(policy, primary_server,
                                                                     standby_server):
    from tests.conftest import Cli, latest_manifest

    cli = Cli(policy.path)
    assert cli("keygen", "--out", str(policy.path.parent / "keys" / "identity.txt")).exit_code == 0
    assert cli("init").exit_code == 0

    async def replicate():
        async with Background(policy) as bg:
            await bg.streaming(2)
            await wait_until(async_eq(lambda: recorded(standby_server, policy),
                                      {str(T): OWN, str(T2): None}), "the hooks recorded")

    asyncio.run(replicate())
    assert is_drtool_fence(hook(standby_server, T))
    done = cli("snapshot", "--from", "standby")
    assert done.exit_code == 0, done.stderr
    hooks = {str(t.name): t.meta.write_hook for t in latest_manifest(policy.path).tables}
    assert hooks == {str(T): OWN, str(T2): None}
