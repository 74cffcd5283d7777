"""The runner's fencing and control through drtool's state database (fake clusters): a stale
generation stops it, ``step = "stop-replication"`` drains it and a new generation with
``replicate`` starts it in the new direction; scheduled snapshots with retention."""

from __future__ import annotations

import asyncio

import pytest

from drtool.wiring.open import open_repository
from drtool.coordination.state import Roles, StateStore, runner_lease
from drtool.errors import ClusterUnreachable, StaleGeneration
from drtool.model import TableName
from drtool.config.policy import load_policy
from drtool.standby.events import LOGGER

from tests.conftest import Cli, connect_fake, write_policy
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until

T = TableName("app", "t")


async def make_table(server, n: int = 20) -> None:
    c = connect_fake(server)
    await c.ensure_db("app")
    await c.create_table(T, primary_key="id", shards=1, replicas=1)
    await c.insert_texts(T, ['{"id":%d}' % i for i in range(n)])


@pytest.fixture
def policy(tmp_path, primary_server, standby_server):
    return load_policy(write_policy(tmp_path, extra=replication_section()).path)


def store(server, policy) -> StateStore:
    return StateStore(connect_fake(server), policy.replication.state_db, policy.name)


async def stop_replication(bg: Background, policy, standby_server) -> StateStore:
    """What a planned failover does first: the runner streams, is asked to stop, goes idle."""
    await bg.streaming(1)
    target = store(standby_server, policy)
    assert (await target.write_roles(Roles(0, "primary", step="stop-replication"),
                                     expected_generation=0))[0]
    await wait_until(lambda: bg.runner.state == "idle", "the runner to go idle")
    return target


async def reverse(policy, primary_server, standby_server) -> None:
    """failover --reverse: generation 1, the standby is primary, replicate into the old one."""
    new = Roles(1, "standby", replicate=True)
    for server in (standby_server, primary_server):
        assert (await store(server, policy).write_roles(new, expected_generation=0))[0]


async def test_a_newer_generation_on_the_target_stops_a_stale_runner(
        policy, primary_server, standby_server):
    await make_table(primary_server)
    bg = Background(policy)
    task = asyncio.create_task(bg.runner.run())
    bg.task = task
    await bg.streaming(1)
    done, _ = await store(standby_server, policy).write_roles(Roles(1, "standby"),
                                                              expected_generation=0)
    assert done
    with pytest.raises(StaleGeneration) as stale:
        await asyncio.wait_for(task, 30)
    assert "roles are at generation 1 (primary: standby) but this runner started at " \
           "generation 0" in str(stale.value)
    assert stale.value.exit_code == 8
    # it released its lease on the way out and wrote nothing after the check
    assert await store(standby_server, policy).read_lease(runner_lease(policy.name)) is None


async def test_stop_replication_drains_then_new_roles_reverse_the_direction(
        policy, primary_server, standby_server):
    await make_table(primary_server)
    async with Background(policy) as bg:
        target = await stop_replication(bg, policy, standby_server)
        assert await target.read_lease(runner_lease(policy.name)) is None
        assert [s.state for s in await target.table_states()] == ["stopped"]
        assert (await target.read_runner())["state"] == "idle"
        await wait_equal(policy)
        await reverse(policy, primary_server, standby_server)
        await wait_until(lambda: bg.runner.state == "running", "the runner to resume")
        await bg.streaming(1)
        assert bg.runner.roles.source == "standby"
        standby_server.put_texts(T, ['{"id":"written on the new primary"}'])
        await wait_until(lambda: '{"id":"written on the new primary"}' in primary_server.texts(T),
                         "the write to reach the old primary")
        lease = await store(primary_server, policy).read_lease(runner_lease(policy.name))
        assert lease.holder == bg.runner.holder.id and lease.generation == 1


async def test_a_cluster_unreachable_when_replication_resumes_is_retried_not_fatal(
        policy, primary_server, standby_server, caplog):
    """At start an unreachable cluster ends the runner (exit 3); once it has run, e.g. when
    a failover's new roles start it again, it retries with backoff."""
    await make_table(primary_server)
    caplog.set_level("WARNING", logger=LOGGER)
    async with Background(policy) as bg:
        target = await stop_replication(bg, policy, standby_server)
        # the new direction's target does not answer the first two times
        lost = ClusterUnreachable("primary: cannot reach any of fake-primary:28015 (injected)")
        primary_server.fail_next("ensure_table", lost, times=2)
        await reverse(policy, primary_server, standby_server)
        await wait_until(lambda: bg.runner.state == "retrying", "the runner to retry")
        await wait_until(lambda: bg.runner.state == "running", "the runner to resume", 20)
        await bg.streaming(1)
        assert not bg.task.done()
        standby_server.put_texts(T, ['{"id":"after the retries"}'])
        await wait_until(lambda: '{"id":"after the retries"}' in primary_server.texts(T),
                         "the write to reach the old primary")
    warned = [m for m in caplog.messages if m.startswith("connection-lost: starting to")]
    assert warned[0] == ("connection-lost: starting to replicate: primary: cannot reach any of "
                         "fake-primary:28015 (injected); retrying in 1 s")
    assert warned[1].endswith("; retrying in 2 s")


async def scheduled_snapshot_with_retention(policy, primary_server, standby_server) -> dict:
    """Runs the runner on a 50-document table until a scheduled snapshot was followed by a
    forget; returns the runner's record of that snapshot."""
    await make_table(primary_server, 50)
    async with Background(policy) as bg:
        await bg.streaming(1)

        async def snapshots_taken():
            record = await store(standby_server, policy).read_runner()
            snap = (record or {}).get("snapshot") or {}
            return snap if snap.get("result") == "ok" and snap.get("documents") == 50 and \
                snap.get("forgot", 0) >= 1 else None
        return await wait_until(snapshots_taken, "a snapshot after which retention removed one")


def test_scheduled_snapshots_from_the_standby_with_retention(tmp_path, primary_server,
                                                             standby_server):
    extra = replication_section() + '[schedule]\nsnapshot_every = "1s"\nprune = true\n' \
        "[retention]\nkeep_last = 2\n"
    dep = write_policy(tmp_path, extra=extra)
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    policy = load_policy(dep.path)
    assert policy.schedule.scheduled_from == "standby"

    async def body():
        snap = await scheduled_snapshot_with_retention(policy, primary_server, standby_server)
        assert snap["source"] == "standby" and "pruned_bytes" in snap
        async with await open_repository(policy) as repo:
            ids = await repo.list_snapshots()
            assert 1 <= len(ids) <= 2 and snap["id"] in ids
            manifest = await repo.resolve(snap["id"])
            assert manifest.source.startswith("standby") and manifest.doc_count == 50

    asyncio.run(body())


def test_a_schedule_without_retention_is_warned_about(tmp_path, primary_server, standby_server,
                                                      caplog):
    dep = write_policy(tmp_path, extra=replication_section() + '[schedule]\nsnapshot_every = "1h"\n')
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    caplog.set_level("WARNING", logger=LOGGER)

    async def body():
        await make_table(primary_server)
        async with Background(load_policy(dep.path)) as bg:
            await bg.streaming(1)
    asyncio.run(body())
    assert ("no-retention: scheduled snapshots every 3600 s and no [retention] in the policy: "
            "every snapshot is kept and the repository only grows; add [retention] "
            "keep_last/keep_daily/... to forget old ones") in caplog.messages
