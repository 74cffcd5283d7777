"""The real-server adapter: ``Cluster`` over the official ``rethinkdb`` driver in asyncio mode.

This is the ONLY drtool module that imports ``rethinkdb`` (and ``msgspec``, which splits scan
responses into document texts without decoding them). Driver exceptions are translated
here (``translate_error``) and never escape. Behaviour relied on is recorded in
shared/reql-facts.md; the rest follows the official ReQL documentation.

``RethinkSession`` owns the connections; ``RethinkCluster`` (drtool.cluster.rethink_cluster,
re-exported here) builds the ReQL queries and runs them through it.

Connections: a small pool of query connections (up to ``POOL_SIZE``, opened lazily, shared:
the driver multiplexes queries on one connection by token); every changefeed gets its own
connection, closed with the feed. A dead connection is dropped and replaced on next use.
Cancelling an awaiting ``run()`` makes the driver close the whole connection, so every query
is awaited through ``asyncio.shield`` and never under ``wait_for``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from rethinkdb import RethinkDB
from rethinkdb import errors as rerr
from rethinkdb import ql2_pb2
from rethinkdb.ast import ReQLDecoder
from rethinkdb.asyncio_net.net_asyncio import AsyncioCursor
from rethinkdb.asyncio_net.net_asyncio import Connection as AsyncioConnection

from drtool.cluster import rethink_util as util
from drtool.cluster.base import Cluster, TextBatch
from drtool.cluster.rethink_cluster import RethinkCluster
from drtool.cluster.rethink_util import PermissionDenied
from drtool.errors import (
    AuthError,
    ClusterError,
    ClusterUnreachable,
    DrtoolError,
    NotFound,
    UsageError,
)
from drtool.model import ClusterConfig, TableName

__all__ = ["RethinkCluster", "RethinkSession", "connect_rethinkdb", "translate_error"]

POOL_SIZE = 4
_MISSING = re.compile(
    r"^(Table `[^`]*` does not exist|Database `[^`]*` does not exist|User `[^`]*` not found)")
# 2.4.4 reports a missing config permission for ignore_write_hook as an internal error
_PERMISSION = re.compile(r"does not have the required `\w+` permission")
_DRIVER_FAILURES = (rerr.ReqlError, OSError, EOFError)
_END = object()  # end of a cursor
# OpFailed/OpIndeterminate/runtime messages meaning "not available now" (retryable)
_UNAVAILABLE = re.compile(
    r"unavailable|not available|Cannot perform (read|write)|lost contact|timed out|"
    r"Could not find|not ready|Connection is closed", re.IGNORECASE)


def translate_error(err: BaseException, where: str, table: TableName | None = None,
                    secret: str | None = None) -> DrtoolError:
    """Map a driver (or socket) exception to the drtool error to raise ``from None``.

    ``where`` is the role and host (``Cluster.description``). Uses the server's message
    without the query printout, so documents in a query never end up in a message."""
    msg = util.scrub(" ".join(str(getattr(err, "message", None) or err).split()), secret)
    what = f"{where} table {table}" if table is not None else where
    if isinstance(err, rerr.ReqlAuthError):
        return AuthError(f"{where}: credentials refused: {msg}")
    if isinstance(err, (rerr.ReqlDriverError, OSError, EOFError)) or (
        isinstance(err, rerr.ReqlRuntimeError) and msg.startswith("Connection is closed")
    ):
        return ClusterUnreachable(f"{what}: connection lost ({msg}); try again later")
    if isinstance(err, rerr.ReqlPermissionError) or (
        isinstance(err, rerr.ReqlInternalError) and _PERMISSION.search(msg)
    ):
        return PermissionDenied(f"{what}: permission denied: {msg}")
    if isinstance(err, rerr.ReqlOpFailedError) and _MISSING.match(msg):
        return NotFound(f"{what}: {msg}")
    if isinstance(err, rerr.ReqlOpIndeterminateError) or (
        isinstance(err, rerr.ReqlRuntimeError) and _UNAVAILABLE.search(msg)
    ):
        return ClusterUnreachable(f"{what}: the cluster is not available: {msg}; try again later")
    if isinstance(err, rerr.ReqlError):
        return ClusterError(f"{what}: the server refused the query: {msg}")
    return ClusterError(f"{what}: unexpected {type(err).__name__}: {msg}")


_SUCCESS = (ql2_pb2.Response.ResponseType.SUCCESS_SEQUENCE,
            ql2_pb2.Response.ResponseType.SUCCESS_PARTIAL)


@functools.lru_cache(maxsize=64)
def text_decoder(pk: str) -> type:
    """A driver ``json_decoder`` class for scans of whole documents (``run(conn,
    json_decoder=...)``): each server batch becomes ONE ``TextBatch`` whose documents are the
    exact bytes of the response (the server writes a document in a response exactly as
    ``to_json_string()`` prints it: tests/cluster_contract.py checks this) and whose keys are
    the bytes of each document's top-level field ``pk``. msgspec only finds where values
    begin and end (``msgspec.Raw``); nothing is decoded into Python objects, and each text
    is copied out as ``bytes``. Any other
    response (errors) goes to the driver's own decoder."""
    key = msgspec.defstruct("Key", [("key", msgspec.Raw)], rename={"key": pk})
    docs_of = msgspec.json.Decoder(msgspec.defstruct("Docs", [("t", int), ("r", list[msgspec.Raw])])).decode
    keys_of = msgspec.json.Decoder(msgspec.defstruct("Keys", [("r", list[key])])).decode

    class TextDecoder:
        def __init__(self, reql_format_opts: Any = None) -> None:
            self._fallback = ReQLDecoder(reql_format_opts)

        def decode(self, text: str) -> dict:
            try:
                docs = docs_of(text)
                if docs.t in _SUCCESS:
                    keys = keys_of(text).r
                    # Copies: a Raw keeps the whole response alive (as str and its UTF-8),
                    # and segments hold documents from several responses.
                    batch = [TextBatch([bytes(k.key) for k in keys],
                                       [bytes(d) for d in docs.r])] if keys else []
                    return {"t": docs.t, "r": batch}
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            return self._fallback.decode(text)

    return TextDecoder


def _new_driver() -> RethinkDB:
    r = RethinkDB()
    r.set_loop_type("asyncio")
    return r


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


async def _open(r: RethinkDB, config: ClusterConfig) -> tuple[Any, str]:
    """Connect to the first host of ``config`` that answers -> (connection, "host:port")."""
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


async def connect_rethinkdb(config: ClusterConfig) -> Cluster:
    """Connect to the first reachable host of ``config`` (in order), with TLS if ``tls_ca``.

    Raises ClusterUnreachable naming every host tried, AuthError for a refused user/password
    or an untrusted TLS certificate, UsageError for a malformed host or a missing CA file."""
    r = _new_driver()
    conn, label = await _open(r, config)
    return RethinkCluster(RethinkSession(config, r, conn, label), r)


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
        conn, label = await _open(self._r, self.config)
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
        except _DRIVER_FAILURES as err:
            raise self._error(err, table) from None

    async def _next(self, cursor: Any, table: TableName | None) -> Any:
        """The next element of a cursor, or ``_END`` when it is exhausted."""
        try:
            return await cursor.__anext__()
        except StopAsyncIteration:
            return _END
        except _DRIVER_FAILURES as err:
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

    async def feed(self, query: Any, table: TableName) -> AsyncIterator[Any]:
        """Run a changefeed on a new connection of its own and yield its raw elements; the
        connection is closed when the generator is closed. A feed that ends raises
        ClusterUnreachable (a changefeed never ends by itself)."""
        conn = await self._connect()
        self._feeds.add(conn)
        cursor = None
        try:
            cursor = await self._start(conn, query, table)
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
