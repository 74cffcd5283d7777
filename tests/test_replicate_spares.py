"""Runners backing each other up (fake clusters): a dead process's lease on this host is taken
at once, a runner finding a live holder waits as a hot spare (logged once, shown by status)
and takes over when the holder stops renewing; ``wait=False`` keeps LeaseHeld (exit 8)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from drtool.cluster import fake
from drtool.config.policy import load_policy
from drtool.coordination.roles import spare_lease
from drtool.coordination.state import LeaseHolder, StateStore, runner_lease
from drtool.errors import ClusterUnreachable
from drtool.model import TableName
from drtool.standby.events import LOGGER
from drtool.standby.status import read_status

from tests.conftest import connect_fake, write_policy
from tests.test_leases import dead_pid
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until

T = TableName("app", "t")


@pytest.fixture
def policy(tmp_path, primary_server, standby_server):
    return load_policy(write_policy(tmp_path, extra=replication_section()).path)


async def setup(policy, primary_server, standby_server) -> StateStore:
    c = connect_fake(primary_server)
    await c.ensure_db("app")
    await c.create_table(T, primary_key="id", shards=1, replicas=1)
    await c.insert_texts(T, ['{"id":%d}' % i for i in range(20)])
    target = StateStore(connect_fake(standby_server), policy.replication.state_db, policy.name)
    await target.ensure()
    return target


async def test_the_lease_of_a_killed_runner_on_this_host_is_taken_at_once(
        policy, primary_server, standby_server, caplog):
    caplog.set_level("INFO", logger=LOGGER)
    target = await setup(policy, primary_server, standby_server)
    killed = LeaseHolder("killed-runner", socket.gethostname(), dead_pid())
    assert (await target.acquire_lease(runner_lease(policy.name), killed, ttl=600)).acquired
    async with Background(policy) as bg:
        await bg.streaming(1)
        lease = await target.read_lease(runner_lease(policy.name))
        assert lease.holder == bg.runner.holder.id and lease.token == 2
    assert not [m for m in caplog.messages if m.startswith("runner-spare")]


async def test_a_spare_waits_then_takes_over_when_the_holder_stops_renewing(
        policy, primary_server, standby_server, caplog):
    caplog.set_level("INFO", logger=LOGGER)
    target = await setup(policy, primary_server, standby_server)
    other = LeaseHolder("other-runner", "host-b", 4242)  # a live runner on another machine
    assert (await target.acquire_lease(runner_lease(policy.name), other, ttl=600)).acquired
    async with Background(policy) as bg:
        await wait_until(lambda: bg.runner.state == "spare", "the runner to wait as a spare")
        status = await read_status(policy, fake.NETWORK)
        assert [(s.holder, s.pid) for s in status.spares] == [(bg.runner.holder.id,
                                                                bg.runner.holder.pid)]
        assert status.to_json()["spares"][0]["runner"] == bg.runner.holder.id
        await asyncio.sleep(2.5)  # several attempts: logged once
        assert not bg.task.done() and not bg.runner.replicators
        primary_server.put_texts(T, ['{"id":"while the other runner was away"}'])
        # the other runner dies or is cut off: its lease is not renewed and runs out
        assert (await target.renew_lease(runner_lease(policy.name), other, ttl=1)).acquired
        await bg.streaming(1)
        await wait_equal(policy)
        lease = await target.read_lease(runner_lease(policy.name))
        assert lease.holder == bg.runner.holder.id and lease.token == 2
        assert (await read_status(policy, fake.NETWORK)).spares == []
    spare_lines = [m for m in caplog.messages if m.startswith("runner-spare")]
    assert len(spare_lines) == 1
    assert spare_lines[0].startswith(f"runner-spare: policy {policy.name}: another runner holds "
                                     "the lease on the standby: runner other-runner on host-b "
                                     "(pid 4242) holds it until")
    assert spare_lines[0].endswith("; waiting as a hot spare to take over when it stops renewing")
    assert await target.leases(spare_lease(policy.name)) == []


async def test_two_runners_one_active_one_spare_then_the_spare_takes_over(
        policy, primary_server, standby_server):
    await setup(policy, primary_server, standby_server)
    first = Background(policy)
    await first.__aenter__()
    await first.streaming(1)
    # the second runner stands for one on another machine (in one process, both have our pid)
    async with Background(policy, holder=LeaseHolder("second", "machine-2", 4343)) as second:
        await wait_until(lambda: second.runner.state == "spare", "the second runner to wait")
        await first.__aexit__(None, None, None)  # stops: applies, releases the lease
        await second.streaming(1)
        primary_server.put_texts(T, ['{"id":"after the takeover"}'])
        await wait_equal(policy)
        assert second.runner.replicators[T].stats.copied == 0  # repaired, never recopied


async def test_a_runner_that_cannot_renew_its_lease_stops_writing_until_it_can(
        policy, primary_server, standby_server, caplog):
    """Cut off from the lease (its renewals fail) the runner writes nothing into the target
    once the lease's local deadline passed, although the data path still works: another
    runner could hold the lease by then. Renewed again, it repairs and streams."""
    caplog.set_level("INFO", logger=LOGGER)
    await setup(policy, primary_server, standby_server)
    async with Background(policy) as bg:
        await bg.streaming(1)
        cut = ClusterUnreachable("standby: lost connection to fake-standby:28015 (injected)")
        standby_server.fail_next("write_state", cut, times=10**6)  # renewals fail from now
        n = iter(range(10**6))

        def fenced() -> bool:
            primary_server.put_texts(T, ['{"id":"before the fence %d"}' % next(n)])
            return any(m.startswith("fenced: app.t: lease ") for m in caplog.messages)
        await wait_until(fenced, "the runner to stop writing")
        primary_server.put_texts(T, ['{"id":"while fenced"}'])
        await asyncio.sleep(1.5)
        assert '{"id":"while fenced"}' not in standby_server.texts(T)
        standby_server._fail.pop("write_state")  # the lease can be renewed again
        await wait_equal(policy)
        assert bg.runner.state == "running" and not bg.task.done()
    line = next(m for m in caplog.messages if m.startswith("fenced: app.t: "))
    assert line.endswith("was not renewed in time; not writing until it is renewed")


async def test_a_runner_whose_lease_was_taken_drains_and_waits_as_a_spare(
        policy, primary_server, standby_server, caplog):
    caplog.set_level("INFO", logger=LOGGER)
    target = await setup(policy, primary_server, standby_server)
    name = runner_lease(policy.name)
    async with Background(policy) as bg:
        await bg.streaming(1)
        mine = (await target.read_lease(name)).holder
        held = LeaseHolder(mine, bg.runner.holder.host, bg.runner.holder.pid)
        assert (await target.renew_lease(name, held, ttl=-1)).acquired  # it runs out...
        other = LeaseHolder("other-runner", "host-b", 4242)
        assert (await target.acquire_lease(name, other, ttl=600)).acquired  # ...and is taken
        await wait_until(lambda: bg.runner.state == "spare", "the runner to wait as a spare")
        assert not bg.task.done() and not bg.runner.replicators
        assert (await target.read_lease(name)).holder == "other-runner"
    lost = [m for m in caplog.messages if m.startswith("lease-lost: ")]
    assert len(lost) == 1 and lost[0].endswith("; stopping; waiting as a spare")
