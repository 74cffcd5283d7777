"""The official ``rethinkdb`` driver, as the real-server adapter uses it: the only drtool
module that imports ``rethinkdb``. The adapter's other modules (``rethink/*.py``) take the
driver's pieces from here, so what drtool relies on in the driver is listed in one place:
the asyncio-mode ``RethinkDB`` entry point, its error classes, the protocol's response types,
the default JSON decoder of responses and the asyncio connection and cursor classes, and how
a cursor asks for its next batch (``pace_continues``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rethinkdb import RethinkDB, ql2_pb2
from rethinkdb import errors as rerr
from rethinkdb.ast import ReQLDecoder
from rethinkdb.asyncio_net.net_asyncio import AsyncioCursor
from rethinkdb.asyncio_net.net_asyncio import Connection as AsyncioConnection

__all__ = ["AsyncioConnection", "AsyncioCursor", "ReQLDecoder", "RethinkDB", "new_driver",
           "pace_continues", "ql2_pb2", "rerr"]


def new_driver() -> RethinkDB:
    """A driver instance in asyncio mode (one per connection pool; nothing global)."""
    r = RethinkDB()
    r.set_loop_type("asyncio")
    return r


def pace_continues(cursor: Any, seconds: float) -> None:
    """Let ``cursor`` send its CONTINUE requests at most every ``seconds``.

    The driver asks for a cursor's next batch (CONTINUE) as soon as a batch arrives, and a
    changefeed answers a pending CONTINUE as soon as one change exists: a trickle of changes
    costs one answer and one request each. Delayed, the CONTINUE finds every change made
    meanwhile queued on the server, which sends them all in one answer (up to its batch
    limits; nothing merged, nothing dropped beyond ``changefeed_queue_size``). The driver's
    ``AsyncioCursor._maybe_fetch_batch`` (called when a batch arrives and when the reader
    finds the cursor empty; it sends when the cursor is empty, open and has no request
    outstanding) is wrapped on this cursor only: a call too soon after the last request
    sent schedules one for when the interval has passed instead."""
    send_now = cursor._maybe_fetch_batch
    loop = asyncio.get_running_loop()
    last_sent = float("-inf")
    timer: asyncio.TimerHandle | None = None

    def send() -> None:
        nonlocal last_sent
        before = cursor.outstanding_requests
        send_now()
        if cursor.outstanding_requests > before:
            last_sent = loop.time()

    def fire() -> None:
        nonlocal timer
        timer = None
        send()

    def maybe_fetch_batch() -> None:
        nonlocal timer
        if timer is not None:
            return
        wait = last_sent + seconds - loop.time()
        if wait <= 0:
            send()
        else:
            timer = loop.call_later(wait, fire)

    cursor._maybe_fetch_batch = maybe_fetch_batch
