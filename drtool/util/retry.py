"""Starting a piece of work again after a lost connection to a cluster.

When the server a command reads from or writes to dies, the cluster's other servers answer
again once RethinkDB has elected new primaries for the tables it held (a few seconds); the
adapter's next query opens a connection to whichever listed host answers. ``again_after_lost_
connection`` is the one rule every command follows then: start the unit of work (a table)
again from its beginning, after 1, 2, 4 and 8 s, then give up with the last error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from drtool.errors import ClusterUnreachable
from drtool.util.tasks import gather_bounded

T = TypeVar("T")
K = TypeVar("K")
#: how many times a unit of work is started again after a lost connection, and the first pause
RECONNECTS, RECONNECT_FIRST = 4, 1.0


async def again_after_lost_connection(work: Callable[[], Awaitable[T]],
                                      note: Callable[[str], None],
                                      repeatable: Callable[[], bool] = lambda: True) -> T:
    """``await work()``; when it raises ClusterUnreachable and
    ``repeatable()`` says the work may start again from its beginning (reads, idempotent
    writes), tell ``note`` and run it again after a pause (1, 2, 4, 8 s), at most
    ``RECONNECTS`` more times. The last attempt's ClusterUnreachable, one that is not
    repeatable and every other error propagate."""
    delay = RECONNECT_FIRST
    for _ in range(RECONNECTS):
        try:
            return await work()
        except ClusterUnreachable as err:
            if not repeatable():
                raise
            note(f"{err}: starting again in {delay:g} s")
            await asyncio.sleep(delay)
            delay *= 2
    return await work()


async def each_again_after_lost_connection(
        items: list[K], work: Callable[[K], Awaitable[T]], concurrency: int,
        note: Callable[[K, str], None]) -> list[T]:
    """``work(item)`` for each item, at most ``concurrency`` at a time (results in order; the
    first error cancels the rest), each started again after a lost connection as
    ``again_after_lost_connection`` says, with its notes given to ``note(item, text)``."""
    return await gather_bounded(
        [lambda item=item: again_after_lost_connection(lambda: work(item),
                                                       lambda text: note(item, text))
         for item in items],
        concurrency)
