"""BandwidthLimitedStorage: the storage contract, and what each operation charges, and when."""

from __future__ import annotations

from datetime import datetime

import pytest

from drtool.errors import ObjectExists, ObjectNotFound
from drtool.storage.limiter import BandwidthLimitedStorage, limit_bandwidth
from drtool.storage.memory import MemoryStorage
from drtool.util.throttle import ByteRateLimiter, ScheduledLimiter
from drtool.util.units import BandwidthSchedule
from tests.storage_contract import StorageContract, names

MiB = 1024 * 1024


class TestBandwidthLimitedStorage(StorageContract):
    """Real limiters (asyncio-throttle underneath), fast enough not to slow the suite."""

    @pytest.fixture
    def storage(self):
        return BandwidthLimitedStorage(
            MemoryStorage(), ByteRateLimiter(2048 * MiB), ByteRateLimiter(2048 * MiB)
        )


class TestUnlimitedBandwidthStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        return BandwidthLimitedStorage(MemoryStorage(), ByteRateLimiter(None), None)


class Log:
    """Records, in order, the charges to each limiter and the calls reaching the backend."""

    def __init__(self) -> None:
        self.events: list[tuple] = []


class RecordingLimiter:
    def __init__(self, log: Log, direction: str) -> None:
        self.log = log
        self.direction = direction

    async def acquire(self, n: float) -> None:
        self.log.events.append((self.direction, n))


class RecordingStorage(MemoryStorage):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    async def put(self, name: str, data: bytes) -> None:
        self.log.events.append(("backend put", name))
        await super().put(name, data)

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.log.events.append(("backend get", name))
        return await super().get(name, offset, length)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def recorded(log) -> BandwidthLimitedStorage:
    return BandwidthLimitedStorage(
        RecordingStorage(log), RecordingLimiter(log, "up"), RecordingLimiter(log, "down")
    )


async def test_put_pays_upload_budget_before_sending(recorded, log):
    await recorded.put("data/a", b"x" * 300_000)
    assert log.events == [("up", 300_000), ("backend put", "data/a")]


async def test_get_pays_download_budget_for_the_bytes_received(recorded, log):
    await recorded.inner.put("data/a", bytes(1000))
    log.events.clear()
    assert await recorded.get("data/a", 100, 250) == bytes(250)
    assert await recorded.get("data/a", 900) == bytes(100)
    assert log.events == [
        ("backend get", "data/a"), ("down", 250), ("backend get", "data/a"), ("down", 100),
    ]


async def test_metadata_operations_are_not_charged(recorded, log):
    await recorded.inner.put("a/b", b"xyz")
    log.events.clear()
    assert (await recorded.stat("a/b")).size == 3
    assert await names(recorded) == {"a/b": 3}
    assert await recorded.exists("a/b")
    await recorded.delete("a/b")
    assert not await recorded.exists("a/b")
    assert log.events == []


async def test_failed_operations_are_charged_and_raise_the_backends_error(recorded, log):
    await recorded.put("n", b"one")
    with pytest.raises(ObjectExists):
        await recorded.put("n", b"two")
    with pytest.raises(ObjectNotFound):
        await recorded.get("missing")
    assert log.events == [
        ("up", 3), ("backend put", "n"), ("up", 3), ("backend put", "n"),
        ("backend get", "missing"),
    ]


async def test_limited_put_takes_the_permits_its_size_needs():
    upload = ByteRateLimiter(2048 * MiB)
    storage = BandwidthLimitedStorage(MemoryStorage(), upload)
    chunk = upload.window.chunk
    await storage.put("x", bytes(int(chunk * 5)))
    assert upload.permits_taken == 5
    assert await storage.get("x") == bytes(int(chunk * 5))  # no download limiter: free
    assert upload.permits_taken == 5


async def test_close_reaches_the_backend():
    closed = []

    class Closing(MemoryStorage):
        async def close(self) -> None:
            closed.append(True)

    await BandwidthLimitedStorage(Closing()).close()
    assert closed == [True]


@pytest.mark.parametrize("text", [None, "off", "off:off", "08:00,off 20:00,unlimited"])
def test_limit_bandwidth_leaves_storage_unwrapped_when_never_limited(text):
    inner = MemoryStorage()
    schedule = None if text is None else BandwidthSchedule.parse(text)
    assert limit_bandwidth(inner, schedule) is inner


def test_limit_bandwidth_wraps_with_scheduled_limiters():
    inner = MemoryStorage("memory://x")
    wrapped = limit_bandwidth(inner, BandwidthSchedule.parse("08:00,5MiB/s:off 20:00,1MiB/s"),
                              clock=lambda: datetime(2024, 1, 1, 9))
    assert isinstance(wrapped, BandwidthLimitedStorage)
    assert wrapped.inner is inner and wrapped.location == "memory://x"
    assert isinstance(wrapped.upload, ScheduledLimiter) and wrapped.upload.rate == 5 * MiB
    assert isinstance(wrapped.download, ScheduledLimiter) and wrapped.download.rate is None
