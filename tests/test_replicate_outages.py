"""The runner through repeated short outages (a rolling restart of a cluster): every outage is
logged with its cause and the reconnect backoff starts again at 1 s after each reconnection."""

from __future__ import annotations

import asyncio

import pytest

from drtool.cluster.fake import FakeServer
from drtool.config.policy import load_policy
from drtool.model import TableName
from drtool.standby.events import LOGGER, Events, Metrics

from tests.conftest import connect_fake, write_policy
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until

T = TableName("app", "t")


@pytest.fixture
def policy(tmp_path, primary_server, standby_server):
    return load_policy(write_policy(tmp_path, extra=replication_section()).path)


async def twenty_documents(primary_server: FakeServer) -> None:
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    await primary.create_table(T, primary_key="id", shards=1, replicas=1)
    await primary.insert_texts(T, ['{"id":%d}' % i for i in range(20)])


async def test_every_outage_is_logged_and_the_backoff_restarts_at_one_second(
        policy, primary_server: FakeServer, standby_server: FakeServer, caplog):
    caplog.set_level("INFO", logger=LOGGER)
    await twenty_documents(primary_server)
    async with Background(policy) as bg:
        await bg.streaming(1)
        rep = bg.runner.replicators[T]
        for outage in range(1, 5):
            primary_server.down = True
            primary_server.put_texts(T, ['{"id":"written in outage %d"}' % outage])
            await asyncio.sleep(0.05)
            primary_server.down = False
            await wait_until(lambda: rep.stats.repairs == outage and rep.state == "streaming",
                             f"streaming again after outage {outage}")
        await wait_equal(policy)
    lost = [m for m in caplog.messages if m.startswith("connection-lost: app.t:")]
    assert len(lost) == 4, lost
    assert all(m.endswith("retrying in 1 s") for m in lost), lost
    assert all("lost connection to" in m or "connection lost" in m for m in lost), lost
    restored = [m for m in caplog.messages if m == "connection-restored: app.t: connected again"]
    assert len(restored) == 4
    assert rep.stats.last_repair["reason"] == "disconnect"


async def test_a_standby_outage_ends_the_backoff_once_the_standby_answers_again(
        policy, primary_server: FakeServer, standby_server: FakeServer, caplog, monkeypatch):
    """A server of the standby lost (its state tables and a shard of the table unavailable):
    the replicator waits in its backoff; when the runner's tick sees both clusters answer
    again, the replicator starts again at once (the backoff is an hour here: it can only
    stream again by being woken), says "connected again" once, and repairs once (the tick's
    repair request is covered by the repair that follows it)."""
    caplog.set_level("INFO", logger=LOGGER)
    await twenty_documents(primary_server)
    async with Background(policy) as bg:
        await bg.streaming(1)
        rep = bg.runner.replicators[T]
        monkeypatch.setattr("drtool.standby.table.BACKOFF_FIRST", 3600.0)
        standby_server.down = True
        primary_server.put_texts(T, ['{"id":"written in the outage"}'])
        await wait_until(lambda: rep.state == "repairing" and any(
            m.startswith("connection-lost: heartbeat:") for m in caplog.messages),
            "the replicator to wait and the runner's tick to see the outage")
        standby_server.down = False
        await wait_until(lambda: rep.stats.repairs == 1 and rep.state == "streaming",
                         "streaming again once the standby answers")
        await wait_equal(policy)
        primary_server.put_texts(T, ['{"id":"written after"}'])  # applied: no repair pending
        await wait_equal(policy)
        assert rep.stats.repairs == 1
    restored = [m for m in caplog.messages if m == "connection-restored: app.t: connected again"]
    assert len(restored) == 1, caplog.messages


class SchemaErrors(Metrics):
    def __init__(self) -> None:
        self.count = 0

    def error(self, kind: str) -> None:
        self.count += kind == "schema"


async def test_the_catalogue_poll_warns_once_per_outage_and_says_when_it_works_again(
        policy, primary_server: FakeServer, standby_server: FakeServer, caplog):
    """An outage lasting several polls (a server of the standby down for a minute) is one
    warning, not one a poll; the first poll that works again says so."""
    caplog.set_level("INFO", logger=LOGGER)
    await twenty_documents(primary_server)
    metrics = SchemaErrors()
    async with Background(policy, Events(metrics=metrics)) as bg:
        await bg.streaming(1)
        primary_server.down = True
        await wait_until(lambda: metrics.count >= 3, "three polls to fail")
        primary_server.down = False
        await wait_until(lambda: any(m.startswith("schema-poll-restored:")
                                     for m in caplog.messages), "a poll to work again")
    failed = [m for m in caplog.messages if m.startswith("schema-poll-failed:")]
    assert len(failed) == 1, failed
    assert "lost connection to fake-primary:28015" in failed[0], failed
    restored = [m for m in caplog.messages if m.startswith("schema-poll-restored:")]
    assert restored[0].startswith("schema-poll-restored: following the primary's catalogue "
                                  "again after "), restored
