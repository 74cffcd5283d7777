"""Bandwidth wrapper: limits the bytes a storage uploads and downloads per second.

``put`` hands a whole in-memory object (at most a few MiB) to the backend, whose own send
cannot be slowed from here. So the upload budget is paid *before* sending: ``put`` acquires
``len(data)`` bytes from the upload limiter (chunk by chunk, at the limited rate) and only then
calls ``inner.put``. The bytes handed to the backend by any time therefore never exceed what
the limiter granted by then; each object leaves in one burst at the backend's speed, so on the
wire the rate is exact on average and bursty at the scale of one object per concurrent writer.

``get`` cannot know the size before it receives the bytes (without an extra ``stat``), so it
pays the download budget *after* receiving: the next ``get`` waits for it. Bytes received run
ahead of the budget by at most one object per concurrent reader.

Failed operations are not refunded: a retried upload (``RetryingStorage`` sits outside this
wrapper) pays again, as its bytes cross the network again. ``list``, ``stat`` and ``delete``
pass through unlimited (their traffic is small).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from drtool.storage.base import ObjectInfo, Storage
from drtool.util.throttle import RateLimiter, bandwidth_limiters
from drtool.util.units import BandwidthSchedule


class BandwidthLimitedStorage(Storage):
    """Wraps ``inner``: ``put`` draws ``len(data)`` bytes from ``upload`` before sending, ``get``
    draws the bytes it returns from ``download`` after receiving (see the module docstring).
    A limiter that is None, or whose rate is None, does not limit. Otherwise every operation
    behaves exactly as ``inner``'s (same results, same errors): the Storage contract holds."""

    def __init__(
        self, inner: Storage, upload: RateLimiter | None = None,
        download: RateLimiter | None = None,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.retention = inner.retention
        self.upload = upload
        self.download = download

    async def put(self, name: str, data: bytes) -> None:
        """Wait for ``len(data)`` bytes of upload budget, then ``inner.put``."""
        if self.upload is not None:
            await self.upload.acquire(len(data))
        await self.inner.put(name, data)

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """``inner.get``, then wait for as many bytes of download budget as it returned."""
        data = await self.inner.get(name, offset, length)
        if self.download is not None:
            await self.download.acquire(len(data))
        return data

    async def stat(self, name: str) -> ObjectInfo:
        return await self.inner.stat(name)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix):
            yield info

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)

    async def check(self) -> list[str]:
        return await self.inner.check()

    async def extend_retention(self, name: str) -> bool:
        return await self.inner.extend_retention(name)

    async def close(self) -> None:
        await self.inner.close()


def limit_bandwidth(
    storage: Storage, schedule: BandwidthSchedule | None, *,
    clock: Callable[[], datetime] = datetime.now,
) -> Storage:
    """``storage`` wrapped in a ``BandwidthLimitedStorage`` following ``schedule`` (the policy's
    ``throttle.bandwidth``); ``storage`` itself when nothing is ever limited (no schedule, or
    ``off`` both ways at every time of the week)."""
    upload, download = bandwidth_limiters(schedule, clock=clock)
    if upload is None and download is None:
        return storage
    return BandwidthLimitedStorage(storage, upload, download)
