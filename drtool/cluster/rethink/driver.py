"""The official ``rethinkdb`` driver, as the real-server adapter uses it: the only drtool
module that imports ``rethinkdb``. The adapter's other modules (``rethink/*.py``) take the
driver's pieces from here, so what drtool relies on in the driver is listed in one place:
the asyncio-mode ``RethinkDB`` entry point, its error classes, the protocol's response types,
the default JSON decoder of responses and the asyncio connection and cursor classes.
"""

from __future__ import annotations

from rethinkdb import RethinkDB, ql2_pb2
from rethinkdb import errors as rerr
from rethinkdb.ast import ReQLDecoder
from rethinkdb.asyncio_net.net_asyncio import AsyncioCursor
from rethinkdb.asyncio_net.net_asyncio import Connection as AsyncioConnection

__all__ = ["AsyncioConnection", "AsyncioCursor", "ReQLDecoder", "RethinkDB", "new_driver",
           "ql2_pb2", "rerr"]


def new_driver() -> RethinkDB:
    """A driver instance in asyncio mode (one per connection pool; nothing global)."""
    r = RethinkDB()
    r.set_loop_type("asyncio")
    return r
