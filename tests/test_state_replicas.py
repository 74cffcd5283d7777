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
