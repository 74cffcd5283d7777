"""``Cluster`` on a real RethinkDB server: the ReQL of every operation.

Queries are built with the driver's ReQL builder ``r`` (handed in by drtool.cluster.rethink.connect;
this module does not import ``rethinkdb``) and run through its ``RethinkSession``
(drtool.cluster.rethink.session), which owns the connections and translates driver errors. Obtain an instance with
``drtool.cluster.connect`` (or ``drtool.cluster.rethink.connect.connect_rethinkdb``).

Keys travel as canonical text and become values on the server with ``r.json(text)``; ranges
``(after, upto]`` are ``between(lo, hi, left_bound='open', right_bound='closed')`` with
``r.minval``/``r.maxval`` for open ends, read in primary-key order with ``order_by(index=pk)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from functools import reduce
from typing import Any

from drtool.cluster.rethink import util
from drtool.cluster.base import (
    DEFAULT_FEED_QUEUE,
    Cluster,
    ConflictMode,
    Guard,
    Row,
    StateWrite,
    TextBatch,
)
from drtool.cluster.rethink.digests import RethinkDigestsMixin
from drtool.cluster.rethink.schema import RethinkSchemaMixin
from drtool.cluster.rethink.users import RethinkUsersMixin
from drtool.cluster.rethink.util import PermissionDenied
from drtool.errors import ClusterError, NotFound, UsageError
from drtool.model import FeedEvent, KeyText, TableMeta, TableName, WriteResult


class RethinkCluster(RethinkDigestsMixin, RethinkSchemaMixin, RethinkUsersMixin, Cluster):
    """A connected RethinkDB cluster (see drtool.cluster.base for every method's contract):
    the catalogue, scans, writes, state writes and changefeeds here; digests in
    ``rethink.digests``, schema operations in ``rethink.schema``, users, permissions and the
    write-hook fence in ``rethink.users``.

    ``session`` is a drtool.cluster.rethink.session.RethinkSession; ``r`` the driver's ReQL builder."""

    def __init__(self, session: Any, r: Any) -> None:
        self._session, self._r = session, r
        self._pks: dict[TableName, str] = {}  # primary key per table
        self._no_bypass: set[TableName] = set()  # ignore_write_hook refused, table has no hook

    @property
    def description(self) -> str:  # type: ignore[override]
        return self._session.description

    def __repr__(self) -> str:
        return f"<RethinkCluster {self.description}>"

    def _table(self, table: TableName) -> Any:
        return self._r.db(table.db).table(table.table)

    async def _primary_key(self, table: TableName) -> str:
        if table not in self._pks:
            query = self._table(table).config()["primary_key"]
            self._pks[table] = await self._session.fetch(query, table)
        return self._pks[table]

    def _range(self, table: TableName, pk: str, after: KeyText | None, upto: KeyText | None) -> Any:
        r = self._r
        lo = r.minval if after is None else r.json(after)
        hi = r.maxval if upto is None else r.json(upto)
        return (self._table(table)
                .between(lo, hi, left_bound="open", right_bound="closed", index=pk)
                .order_by(index=pk))

    # --- catalogue ----------------------------------------------------------------------
    async def list_tables(self) -> list[TableName]:
        names = []
        for db in await self._session.fetch(self._r.db_list()):
            if db == "rethinkdb":
                continue
            try:
                tables = await self._session.fetch(self._r.db(db).table_list())
            except NotFound:  # dropped meanwhile
                continue
            names.extend(TableName(db, t) for t in tables)
        return sorted(names)

    async def table_meta(self, table: TableName) -> TableMeta:
        t = self._table(table)
        config = await self._session.fetch(t.config(), table)
        indexes = await self._session.fetch(t.index_status(), table, binary_format="raw")
        hook = await self._session.fetch(t.get_write_hook(), table, binary_format="raw")
        self._pks[table] = config["primary_key"]
        where = f"{self.description} table {table}"
        return util.table_meta(table, config, list(indexes), hook, where)

    async def doc_count_estimate(self, table: TableName) -> int:
        query = self._table(table).info()["doc_count_estimates"]
        return int(sum(await self._session.fetch(query, table)))

    # --- reading ------------------------------------------------------------------------
    async def key_bounds(self, table: TableName) -> tuple[KeyText, KeyText] | None:
        pk, r = await self._primary_key(table), self._r
        ends = []
        for index in (pk, r.desc(pk)):
            query = self._table(table).order_by(index=index).limit(1).map(
                lambda d: d[pk].to_json_string())
            ends.extend(await self._session.fetch(query, table))
        return (str(ends[0]), str(ends[1])) if len(ends) == 2 else None

    async def scan(self, table: TableName, *, after: KeyText | None = None,
                   upto: KeyText | None = None, batch_size: int = 1000) -> AsyncIterator[list[Row]]:
        async with aclosing(self.scan_texts(table, after=after, upto=upto,
                                            batch_size=batch_size)) as batches:
            async for batch in batches:
                yield batch.rows()

    async def scan_texts(self, table: TableName, *, after: KeyText | None = None,
                         upto: KeyText | None = None,
                         batch_size: int = 1000) -> AsyncIterator[TextBatch]:
        # Whole documents, no .map(): the server's cheapest scan (a per-document ReQL
        # function costs it more than the scan itself); the adapter cuts the response into
        # texts (drtool.cluster.rethink.decoder.text_decoder).
        pk = await self._primary_key(table)
        query = self._range(table, pk, after, upto)
        async with aclosing(self._session.stream_texts(query, table, pk, batch_size)) as batches:
            async for batch in batches:
                yield batch

    async def hash_scan(self, table: TableName, *, after: KeyText | None = None,
                        upto: KeyText | None = None,
                        batch_size: int = 5000) -> AsyncIterator[list[tuple[KeyText, str]]]:
        pk, r = await self._primary_key(table), self._r
        query = self._range(table, pk, after, upto).map(
            lambda d: [d[pk].to_json_string(), r.uuid(d.to_json_string())])
        async with aclosing(self._session.stream(query, table, batch_size, tuple)) as batches:
            async for batch in batches:
                yield batch

    async def get_docs(self, table: TableName, keys: Sequence[KeyText]) -> list[Row]:
        from drtool.reql.ordering import key_order

        keys = util.unique(keys)
        if not keys:
            return []
        pk, r = await self._primary_key(table), self._r
        query = self._table(table).get_all(r.args(r.json(util.json_array(keys)))).map(
            lambda d: [d[pk].to_json_string(), d.to_json_string()])
        rows = [tuple(row) for row in await self._session.fetch(query, table)]
        return sorted(rows, key=lambda row: key_order(row[0]))

    # --- writing ------------------------------------------------------------------------
    async def _write(self, table: TableName, build: Callable[[dict], Any],
                     ignore_write_hook: bool) -> WriteResult:
        where = f"{self.description} table {table}"
        fetch = self._session.fetch
        if ignore_write_hook and table not in self._no_bypass:
            try:
                bypassing = build({"ignore_write_hook": True})
                return util.write_result(await fetch(bypassing, table), where)
            except PermissionDenied as refused:
                # ignore_write_hook needs the config permission: without it, writing is only
                # equivalent when the table has no write hook.
                try:  # reading the hook needs the config permission too (2.4.4)
                    hook = await fetch(self._table(table).get_write_hook(), table,
                                       binary_format="raw")
                except PermissionDenied:
                    raise refused from None
                if hook is not None:
                    raise ClusterError(
                        f"{where}: the table has a write hook that user "
                        f"{self._session.config.user!r} may not bypass (ignore_write_hook needs "
                        f"the config permission): {refused}"
                    ) from None
            result = util.write_result(await fetch(build({}), table), where)
            self._no_bypass.add(table)
            return result
        return util.write_result(await fetch(build({}), table), where)

    async def insert_texts(self, table: TableName, docs: Sequence[str], *,
                           conflict: ConflictMode = "error",
                           ignore_write_hook: bool = False) -> WriteResult:
        if not docs:
            return WriteResult()
        if conflict not in ("error", "replace", "skip"):
            raise UsageError(f"conflict mode must be error, replace or skip, got {conflict!r}")
        r, text = self._r, util.json_array(docs)
        how: Any = (lambda _id, old, new: old) if conflict == "skip" else conflict
        return await self._write(table, lambda extra: self._table(table).insert(
            r.json(text), conflict=how, durability="soft", **extra), ignore_write_hook)

    async def delete_keys(self, table: TableName, keys: Sequence[KeyText], *,
                          ignore_write_hook: bool = False) -> WriteResult:
        keys = util.unique(keys)
        if not keys:
            return WriteResult()
        r, text = self._r, util.json_array(keys)
        return await self._write(table, lambda extra: self._table(table).get_all(
            r.args(r.json(text))).delete(durability="soft", **extra), ignore_write_hook)

    async def sync(self, table: TableName) -> None:
        await self._session.fetch(self._table(table).sync(), table)

    # --- drtool's own state -------------------------------------------------------------
    async def server_time(self) -> float:
        return float(await self._session.fetch(self._r.now().to_epoch_time()))

    def _passes(self, guard: Guard, old: Any, now: Any) -> Any:
        """The ReQL of ``guard`` on the current document ``old`` (None when absent)."""
        r = self._r
        if guard.always:
            return r.expr(True)
        present = []
        if guard.fields:
            present.append(reduce(lambda a, b: a & b, [
                old[f].default(None).eq(r.json(v)) for f, v in guard.fields]))
        if guard.expired:
            field = guard.expired
            present.append(r.branch(old.has_fields(field), old[field].lt(now), False))
        held = reduce(lambda a, b: a | b, present) if present else r.expr(False)
        return r.branch(old.eq(None), guard.if_absent, held)

    async def write_state(self, table: TableName, key: KeyText, doc: str | None, guard: Guard, *,
                          now_fields: Mapping[str, float] | None = None) -> StateWrite:
        r = self._r
        where = f"{self.description} table {table}"

        def write(now: Any) -> Any:
            new = None if doc is None else r.json(doc).merge(
                {f: now.add(offset) for f, offset in (now_fields or {}).items()})
            change = self._table(table).get(r.json(key)).replace(
                lambda old: r.branch(self._passes(guard, old, now), new, old),
                durability="hard", return_changes="always")
            return change.do(lambda res: res["changes"].nth(0).default(
                {"old_val": None, "new_val": None}).do(lambda ch: {
                    "errors": res["errors"], "first_error": res["first_error"].default(None),
                    "applied": self._passes(guard, ch["old_val"], now),
                    "doc": r.branch(ch["new_val"].eq(None), None, ch["new_val"].to_json_string()),
                    "now": now.to_epoch_time()}))

        out = await self._session.fetch(r.now().do(write), table)
        if out["errors"]:
            raise ClusterError(f"{where}: the server refused the write: {out['first_error']}")
        return StateWrite(bool(out["applied"]), out["doc"], float(out["now"]))

    # --- changefeeds --------------------------------------------------------------------
    async def changes(self, table: TableName, *,
                      queue_size: int = DEFAULT_FEED_QUEUE,
                      gather: float = 0.0) -> AsyncIterator[FeedEvent]:
        pk, r = await self._primary_key(table), self._r

        def shape(ch: Any) -> Any:
            deleted = ch["new_val"].eq(None)
            return r.branch(
                ch.has_fields("state"), ch,
                ch.has_fields("error"), ch,
                {"key": r.branch(deleted, ch["old_val"][pk], ch["new_val"][pk]).to_json_string(),
                 "doc": r.branch(deleted, None, ch["new_val"].to_json_string())})

        query = self._table(table).changes(
            include_states=True, squash=False, changefeed_queue_size=int(queue_size)).map(shape)
        async with aclosing(self._session.feed(query, table, pace=gather)) as items:
            async for item in items:
                event = util.feed_event(item)
                if event is not None:
                    yield event

    # --- lifecycle ----------------------------------------------------------------------
    async def close(self) -> None:
        await self._session.close()
