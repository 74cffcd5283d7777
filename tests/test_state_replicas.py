"""drtool's own tables get as many replicas as the cluster can give, up to three, and follow
the cluster as servers are added (the fake models the server count; the real three-server
cluster: integration/test_multi_server_e2e.py)."""

from __future__ import annotations

from drtool.cluster.base import STATE_REPLICAS
from drtool.cluster.fake import FakeServer
from drtool.coordination.state import STATE_TABLES, StateStore

from tests.conftest import connect_fake


async def test_state_tables_take_up_to_three_replicas_and_follow_added_servers():
    server = FakeServer(servers=2)
    cluster = connect_fake(server)
    store = StateStore(cluster, "drtool", "p")
    await store.ensure()
    assert {(await cluster.table_meta(store.table(n))).replicas for n in STATE_TABLES} == {2}
    server.servers = 5  # servers joined: the next ensure (a runner's start) follows them
    await store.ensure()
    assert {(await cluster.table_meta(store.table(n))).replicas
            for n in STATE_TABLES} == {STATE_REPLICAS} == {3}


async def test_a_running_runner_gives_its_tables_the_servers_added_meanwhile(
        tmp_path, primary_server, standby_server, monkeypatch):
    from drtool.config.policy import load_policy
    from drtool.standby import catalogue
    from tests.conftest import write_policy
    from tests.replication_helpers import Background, replication_section, wait_until

    monkeypatch.setattr(catalogue, "FOLLOW_SERVERS_EVERY", 0.5)
    primary_server.servers = standby_server.servers = 1
    policy = load_policy(write_policy(tmp_path, extra=replication_section()).path)

    async def replicas(server) -> set[int]:
        store = StateStore(connect_fake(server), policy.replication.state_db, policy.name)
        return {(await store.cluster.table_meta(store.table(n))).replicas for n in STATE_TABLES}

    async with Background(policy) as bg:
        await bg.streaming(0)
        await wait_until(lambda: bg.runner.state == "running", "the runner running")
        assert await replicas(primary_server) == await replicas(standby_server) == {1}
        primary_server.servers, standby_server.servers = 3, 2  # servers join both clusters

        async def followed():
            return (await replicas(primary_server) == {3}
                    and await replicas(standby_server) == {2})
        await wait_until(followed, "drtool's tables on the added servers")
