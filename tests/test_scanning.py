"""resumable_scan: resumes after dropped connections and charges the read-rate limiter."""

from __future__ import annotations

import asyncio

import pytest

from drtool.cluster.scanning import resumable_scan
from drtool.errors import ClusterUnreachable
from tests.conftest import connect_fake, load_table, sample_docs


class CountingLimiter:
    """Stands in for DocRateLimiter: records what is charged (no waiting)."""

    period = 0.1

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.charged: list[int] = []

    async def acquire(self, n: int) -> None:
        self.charged.append(n)


async def _keys(cluster, table, **kwargs) -> list[str]:
    keys = []
    async for rows in resumable_scan(cluster, table, **kwargs):
        keys.extend(k for k, _ in rows)
    return keys


def test_reads_are_charged_per_batch_in_small_batches(primary_server):
    table = load_table(primary_server, "app.t", sample_docs(1000, pad=10))
    limiter = CountingLimiter(rate=2000)  # 0.1 s of budget = 200 documents per batch
    keys = asyncio.run(_keys(connect_fake(primary_server), table, reads=limiter))
    assert len(keys) == 1000
    assert sum(limiter.charged) == 1000
    assert max(limiter.charged) <= 200


def test_scan_resumes_after_drops_without_rereading(primary_server):
    table = load_table(primary_server, "app.t", sample_docs(900, pad=10))
    expected = asyncio.run(_keys(connect_fake(primary_server), table))
    primary_server.fail_scan_after(400)
    cluster = connect_fake(primary_server)
    starts: list = []
    scan = cluster.scan

    def counting_scan(table, **kwargs):
        starts.append(kwargs["after"])
        return scan(table, **kwargs)

    cluster.scan = counting_scan
    assert asyncio.run(_keys(cluster, table, batch_size=100)) == expected
    assert starts == [None, expected[399]]  # resumed after the last key received


def test_scan_gives_up_after_repeated_failures(primary_server, monkeypatch):
    table = load_table(primary_server, "app.t", sample_docs(10, pad=10))
    monkeypatch.setattr("drtool.cluster.scanning.RESUME_BASE_DELAY", 0)
    primary_server.fail_next("scan", times=10)
    with pytest.raises(ClusterUnreachable, match="gave up after 3 failed attempts"):
        asyncio.run(_keys(connect_fake(primary_server), table, attempts=3))
