"""A server that stops answering (SIGSTOP: a hung host, or one cut off by the network with no
reset) must not keep drtool from closing its connections: a runner asked to stop exits
instead of waiting for the server forever. Starts its own server (``DRTOOL_RETHINKDB_BIN``).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from conftest import ThrowawayServer
from drtool.cluster import connect
from drtool.cluster.base import DEFAULT_FEED_QUEUE
from drtool.model import ClusterConfig, FeedReady, TableName
from test_pitr_e2e import wait_until

T = TableName("drtool_hung", "t")


@pytest.fixture
def server(tmp_path):
    s = ThrowawayServer(tmp_path / "data", "drtool_hung").start()
    try:
        wait_until(s.answering, "the throw-away server")
        yield s
    finally:
        if s.proc is not None:
            s.proc.send_signal(signal.SIGCONT)
        s.kill()


async def test_connections_close_though_the_server_stopped_answering(server):
    cluster = await connect(ClusterConfig("primary", (server.address,)))
    await cluster.ensure_db(T.db)
    await cluster.create_table(T, primary_key="id", shards=1, replicas=1)
    feed = cluster.changes(T, queue_size=DEFAULT_FEED_QUEUE)
    assert isinstance(await feed.__anext__(), FeedReady)
    reading = asyncio.ensure_future(feed.__anext__())  # waits for a change that never comes
    await asyncio.sleep(0.2)
    server.proc.send_signal(signal.SIGSTOP)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await asyncio.wait_for(feed.aclose(), 30)  # the feed's own connection
    await asyncio.wait_for(cluster.close(), 30)  # the pool's
