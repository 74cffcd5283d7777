"""util.tasks: abandoning work when its owner stops, and describing what a process waits for."""

from __future__ import annotations

import asyncio

import pytest

from drtool.util.tasks import Stopped, describe_tasks, unless_stopped


async def test_unless_stopped_returns_the_result_or_raises_what_the_work_raised():
    stop = asyncio.Event()

    async def answer():
        await asyncio.sleep(0)
        return 42

    async def broken():
        raise ValueError("bad")

    assert await unless_stopped(stop, answer()) == 42
    with pytest.raises(ValueError, match="bad"):
        await unless_stopped(stop, broken())


async def test_unless_stopped_cancels_the_work_and_waits_for_its_cleanup():
    stop, cleaned = asyncio.Event(), []

    async def forever():
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # cleanup that takes a moment
            cleaned.append(True)

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Stopped):
        await unless_stopped(stop, forever())
    assert cleaned == [True]


async def test_describe_tasks_names_each_task_and_where_it_waits():
    async def waiting_for_the_feed():
        await asyncio.Event().wait()

    async def the_timeline():
        await waiting_for_the_feed()

    task = asyncio.create_task(the_timeline(), name="archiver app.t")
    await asyncio.sleep(0)
    lines = describe_tasks()
    [line] = [x for x in lines if x.startswith("task archiver app.t:")]
    assert "wait (locks.py:" in line  # innermost first, down to the task's own coroutine
    assert line.index("waiting_for_the_feed (test_util_tasks.py:") < line.index("<- the_timeline")
    task.cancel()
