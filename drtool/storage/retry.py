"""Retry wrapper: repeats operations that failed with a retryable error.

Only errors whose ``retryable`` attribute is true (StorageUnreachable: network drop, timeout)
are retried, with exponential backoff and jitter; permanent errors (ObjectNotFound,
ObjectExists, permission denied, disk full, AuthError, UsageError) pass through at once.

Retrying ``put`` is safe because ``put`` is idempotent for equal content: if the first attempt
completed on the server before the connection dropped, the retry finds the object with the
same content and is a no-op. Retrying ``delete`` is safe because deleting a missing object
succeeds. A ``list`` that fails part-way is restarted and skips the names already yielded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from drtool.errors import DrtoolError
from drtool.storage.base import ObjectInfo, Storage

log = logging.getLogger("drtool.storage")
T = TypeVar("T")


class RetryingStorage(Storage):
    """Wraps ``inner``; each operation gets up to ``attempts`` tries.

    The wait before try ``n+1`` is ``min(max_delay, base_delay * 2**(n-1))`` scaled by a
    random factor in [0.5, 1] (jitter, so that many clients do not retry in lockstep). When
    every try fails, the last error is raised with the number of tries appended. ``sleep`` is
    the coroutine used to wait (replaceable in tests).
    """

    def __init__(
        self,
        inner: Storage,
        attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.location = inner.location
        self.retention = inner.retention
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    async def _after_failure(self, exc: DrtoolError, failures: int, what: str) -> None:
        """Wait before the next try, or raise if ``exc`` is permanent or tries are used up."""
        if not exc.retryable:
            raise exc
        if failures >= self.attempts:
            raise type(exc)(f"{exc} (gave up after {failures} tries)") from None
        wait = self.delay(failures)
        log.warning("%s: %s; retrying %s in %.1fs", self.location, exc, what, wait)
        await self._sleep(wait)

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        failures = 0
        while True:
            try:
                return await op()
            except DrtoolError as exc:
                failures += 1
                await self._after_failure(exc, failures, what)

    async def put(self, name: str, data: bytes) -> None:
        """As ``inner.put``; retried (idempotent for equal content)."""
        await self._retry(f"put {name}", lambda: self.inner.put(name, data))

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """As ``inner.get``; retried."""
        return await self._retry(f"get {name}", lambda: self.inner.get(name, offset, length))

    async def stat(self, name: str) -> ObjectInfo:
        """As ``inner.stat``; retried."""
        return await self._retry(f"stat {name}", lambda: self.inner.stat(name))

    async def delete(self, name: str) -> None:
        """As ``inner.delete``; retried (idempotent)."""
        await self._retry(f"delete {name}", lambda: self.inner.delete(name))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """As ``inner.list``; restarted after a retryable failure, never yields a name twice."""
        seen: set[str] = set()
        failures = 0
        while True:
            try:
                async for info in self.inner.list(prefix):
                    if info.name not in seen:
                        seen.add(info.name)
                        yield info
                return
            except DrtoolError as exc:
                failures += 1
                await self._after_failure(exc, failures, f"list {prefix or '/'}")

    async def check(self) -> list[str]:
        return await self.inner.check()

    async def extend_retention(self, name: str) -> bool:
        """As ``inner.extend_retention``; retried (extending twice is harmless)."""
        return await self._retry(f"extend {name}", lambda: self.inner.extend_retention(name))

    async def close(self) -> None:
        await self.inner.close()
