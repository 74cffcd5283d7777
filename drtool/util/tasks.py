"""Running coroutines concurrently with a bound, cancelling the rest on the first error;
abandoning work when its owner is asked to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
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


class Stopped(Exception):
    """The work was abandoned because its owner was asked to stop."""


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Run ``work`` and return its result; when ``stop`` is set first, cancel it, wait until
    it has ended and raise Stopped. Errors of ``work`` are raised as they are."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise Stopped()
    return task.result()


def _awaits(task: asyncio.Task) -> list:
    """The frames of the coroutines ``task`` is awaiting, outermost first."""
    frames, awaited = [], task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return frames


def describe_tasks(limit: int = 8) -> list[str]:
    """One line per task of the running loop: its name and the innermost ``limit``
    coroutines it is awaiting (for an operator asking a stuck process what it waits for)."""
    lines = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        frames = _awaits(task)[-limit:]
        where = " <- ".join(f"{f.f_code.co_name} ({Path(f.f_code.co_filename).name}:"
                            f"{f.f_lineno})" for f in reversed(frames))
        lines.append(f"task {task.get_name()}: {where or 'running'}")
    return lines
