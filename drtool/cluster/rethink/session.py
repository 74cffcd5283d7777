"""The connections to one RethinkDB cluster: ``RethinkSession`` (part of the real-server adapter).

Every query of the adapter runs here, and only driver errors translated by
``drtool.cluster.rethink.errors`` leave. A small pool of query connections (up to
``POOL_SIZE``, opened lazily, shared: the driver multiplexes queries on one connection by
token); every changefeed gets its own connection, closed with the feed. A dead connection is
dropped and replaced on next use. Cancelling an awaiting ``run()`` makes the driver close the
whole connection, so every query is awaited through ``asyncio.shield`` and never under
``wait_for``. ``open_connection`` connects to the first host of a ClusterConfig that answers
(TLS when ``tls_ca`` is set).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from drtool.cluster.rethink import util
from drtool.cluster.base import TextBatch
from drtool.cluster.rethink.decoder import text_decoder
from drtool.cluster.rethink.driver import (
    AsyncioConnection,
    AsyncioCursor,
    RethinkDB,
    pace_continues,
    rerr,
)
from drtool.cluster.rethink.errors import DRIVER_FAILURES, translate_error
from drtool.errors import AuthError, ClusterError, ClusterUnreachable, DrtoolError, UsageError
from drtool.model import ClusterConfig, TableName

POOL_SIZE = 4
_END = object()  # end of a cursor


async def _close_quietly(conn: Any) -> None:
    try:
        await conn.close(noreply_wait=False)
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing to do
        pass


async def _close_cursor(cursor: Any) -> None:
    try:
        if isinstance(cursor, AsyncioCursor):
            await cursor.close()
    except Exception:  # noqa: BLE001 - closing a cursor of a dead connection
        pass


def _discard(task: asyncio.Future) -> None:
    """Done-callback for a query whose caller was cancelled: close a cursor it produced."""
    if task.cancelled() or task.exception() is not None:
        return
    if isinstance(task.result(), AsyncioCursor):
        asyncio.ensure_future(_close_cursor(task.result()))


async def _run(conn: Any, query: Any, **opts: Any) -> Any:
    """``query.run(conn)`` that survives the caller's cancellation (see module doc)."""
    task = asyncio.ensure_future(query.run(conn, **opts))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_discard)
        raise


async def open_connection(r: RethinkDB, config: ClusterConfig) -> tuple[Any, str]:
    """Connect to the first host of ``config`` that answers -> (connection, "host:port").

    Raises ClusterUnreachable naming every host tried, AuthError for a refused user/password
    or an untrusted TLS certificate, UsageError for no hosts, a malformed host or a missing
    CA file."""
    targets = [util.split_host(h) for h in config.hosts]
    if not targets:
        raise UsageError(f"{config.role}: no hosts configured")
    ssl = {}
    if config.tls_ca:
        if not os.path.isfile(config.tls_ca):
            raise UsageError(f"{config.role}: tls_ca file {config.tls_ca} does not exist")
        ssl = {"ca_certs": config.tls_ca}
    tried, last = [], "no host tried"
    for host, port in targets:
        label = util.host_label(host, port)
        tried.append(label)
        made: list[Any] = []

        def factory(*args: Any, **kwargs: Any) -> Any:
            conn = AsyncioConnection(*args, **kwargs)
            made.append(conn)  # kept so that a connect cut short by the timeout is closed
            return conn

        done = False
        try:
            conn = await asyncio.wait_for(
                r.make_connection(factory, host=host, port=port, user=config.user,
                                  password=config.password, timeout=config.connect_timeout,
                                  ssl=ssl),
                config.connect_timeout,
            )
            done = True
            # The driver's reader task may end with an error nobody awaits (a reset mid-query):
            # retrieve it, the query itself already failed with ClusterUnreachable.
            conn._instance._reader_task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return conn, label
        except rerr.ReqlAuthError:
            raise AuthError(util.auth_message(config.role, label, config.user)) from None
        except rerr.ReqlError as err:
            last = util.scrub(" ".join(str(err.message).split()), config.password)
            if "CERTIFICATE_VERIFY_FAILED" in last:
                raise AuthError(
                    f"{config.role} {label}: TLS certificate not trusted ({last}); check that "
                    f"tls_ca {config.tls_ca} signed the server certificate and that it names {host}"
                ) from None
            if ssl and "ssl" in last.lower():
                last = f"TLS handshake failed: {last}"
        except TimeoutError:  # asyncio.wait_for: TCP connect or handshake too slow
            last = f"{label} did not answer within {config.connect_timeout:g} s"
        except (OSError, EOFError, ValueError) as err:
            last = util.scrub(f"{type(err).__name__}: {err}", config.password)
        finally:
            if not done:  # failed, timed out or cancelled: close what was opened
                for conn in made:
                    await _close_quietly(conn)
    raise ClusterUnreachable(util.unreachable_message(config.role, tried, last))


class _Slot:
    __slots__ = ("conn", "busy")

    def __init__(self, conn: Any) -> None:
        self.conn, self.busy = conn, 0


class RethinkSession:
    """The connections to one cluster and the only place queries are run.

    ``fetch`` runs a query to completion, ``stream`` reads a streaming query in batches,
    ``feed`` runs a changefeed on a connection of its own. All raise drtool errors only."""

    def __init__(self, config: ClusterConfig, r: RethinkDB, conn: Any, label: str) -> None:
        self.config, self._r = config, r
        #: role and the host last connected, for messages
        self.description = f"{config.role} {label}"
        self._slots: list[_Slot] = [_Slot(conn)]
        self._grow = asyncio.Lock()
        self._feeds: set[Any] = set()
        self._closed = False

    def _error(self, err: BaseException, table: TableName | None = None) -> DrtoolError:
        return translate_error(err, self.description, table, self.config.password)

    async def _connect(self) -> Any:
        if self._closed:
            raise ClusterError(f"{self.description}: connection already closed")
        conn, label = await open_connection(self._r, self.config)
        self.description = f"{self.config.role} {label}"
        return conn

    def _best(self) -> tuple[_Slot | None, bool]:
        """The least busy live connection, and whether to use it rather than open another."""
        self._slots = [s for s in self._slots if s.busy or s.conn.is_open()]
        live = [s for s in self._slots if s.conn.is_open()]
        best = min(live, key=lambda s: s.busy, default=None)
        return best, best is not None and (best.busy == 0 or len(live) >= POOL_SIZE)

    async def _pick(self) -> _Slot:
        best, use = self._best()
        if use or (best is not None and self._grow.locked()):
            return best  # type: ignore[return-value]
        async with self._grow:
            best, use = self._best()
            if use:
                return best  # type: ignore[return-value]
            try:
                slot = _Slot(await self._connect())
            except ClusterUnreachable:
                if best is not None:
                    return best
                raise
            self._slots.append(slot)
            return slot

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[Any]:
        if self._closed:
            raise ClusterError(f"{self.description}: connection already closed")
        slot = await self._pick()
        slot.busy += 1
        try:
            yield slot.conn
        finally:
            slot.busy -= 1
            if not slot.conn.is_open() and slot in self._slots:
                self._slots.remove(slot)
                await _close_quietly(slot.conn)

    async def _start(self, conn: Any, query: Any, table: TableName | None, **opts: Any) -> Any:
        try:
            return await _run(conn, query, **opts)
        except DRIVER_FAILURES as err:
            raise self._error(err, table) from None

    async def _next(self, cursor: Any, table: TableName | None) -> Any:
        """The next element of a cursor, or ``_END`` when it is exhausted."""
        try:
            return await cursor.__anext__()
        except StopAsyncIteration:
            return _END
        except DRIVER_FAILURES as err:
            raise self._error(err, table) from None

    async def fetch(self, query: Any, table: TableName | None = None, **opts: Any) -> Any:
        """Run a query to completion (a cursor is read into a list) with translated errors."""
        async with self._lease() as conn:
            result = await self._start(conn, query, table, **opts)
            if not isinstance(result, AsyncioCursor):
                return result
            try:
                items = []
                while (item := await self._next(result, table)) is not _END:
                    items.append(item)
                return items
            finally:
                await _close_cursor(result)

    async def stream(self, query: Any, table: TableName, batch_size: int,
                     convert: Callable[[Any], Any]) -> AsyncIterator[list]:
        """Yield the rows of one streaming query in lists of at most ``batch_size``: each list
        is what the cursor has buffered (the driver prefetches the next server batch)."""
        batch_size = max(int(batch_size), 1)
        async with self._lease() as conn:
            cursor = await self._start(conn, query, table)
            if not isinstance(cursor, AsyncioCursor):  # an array: no cursor
                cursor = [] if cursor is None else cursor
                for start in range(0, len(cursor), batch_size):
                    yield [convert(item) for item in cursor[start:start + batch_size]]
                return
            try:
                pending = cursor.items  # the driver's buffer (a deque)
                while True:
                    if not pending:
                        item = await self._next(cursor, table)  # waits for the next batch
                        if item is _END:
                            return
                        pending.appendleft(item)  # it was popped from the head: put it back
                    n = min(len(pending), batch_size)
                    yield [convert(pending.popleft()) for _ in range(n)]
            finally:
                await _close_cursor(cursor)

    async def stream_texts(self, query: Any, table: TableName, pk: str,
                           batch_size: int) -> AsyncIterator[TextBatch]:
        """Yield a streaming query of whole documents as one ``TextBatch`` per server batch
        (at most ``batch_size`` documents: ``max_batch_rows``, and a larger batch is split);
        see ``text_decoder``."""
        batch_size = max(int(batch_size), 1)
        async with self._lease() as conn:
            cursor = await self._start(conn, query, table, json_decoder=text_decoder(pk),
                                       max_batch_rows=batch_size)
            try:
                while (item := await self._next(cursor, table)) is not _END:
                    if not isinstance(item, TextBatch):
                        raise ClusterError(f"{self.description} table {table}: unexpected "
                                           f"scan response {str(item)[:100]!r}")
                    if len(item) <= batch_size:
                        yield item
                        continue
                    for start in range(0, len(item), batch_size):
                        end = start + batch_size
                        yield TextBatch(item.keys[start:end], item.docs[start:end])
            finally:
                await _close_cursor(cursor)

    async def feed(self, query: Any, table: TableName, *,
                   pace: float = 0.0) -> AsyncIterator[Any]:
        """Run a changefeed on a new connection of its own and yield its raw elements; the
        connection is closed when the generator is closed. A feed that ends raises
        ClusterUnreachable (a changefeed never ends by itself). ``pace`` > 0: ask for the
        next batch at most that often (``driver.pace_continues``)."""
        conn = await self._connect()
        self._feeds.add(conn)
        cursor = None
        try:
            cursor = await self._start(conn, query, table)
            if pace > 0 and isinstance(cursor, AsyncioCursor):
                pace_continues(cursor, pace)
            while (item := await self._next(cursor, table)) is not _END:
                yield item
            raise ClusterUnreachable(
                f"{self.description} table {table}: the changefeed ended; open a new one")
        finally:
            self._feeds.discard(conn)
            await _close_cursor(cursor)
            await _close_quietly(conn)

    async def close(self) -> None:
        """Close every connection (pool and feeds). Idempotent."""
        self._closed = True
        conns = [s.conn for s in self._slots] + list(self._feeds)
        self._slots, self._feeds = [], set()
        for conn in conns:
            await _close_quietly(conn)
