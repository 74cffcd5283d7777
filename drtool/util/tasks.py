"""Running coroutines concurrently with a bound, cancelling the rest on the first error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def gather_bounded(jobs: list[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run the jobs at most ``concurrency`` at a time; results in order. The first error
    cancels the others and is raised."""
    slots = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
