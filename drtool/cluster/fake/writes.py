"""Writes of the fake cluster: inserts, deletes and drtool's state writes (a mixin of FakeCluster).

Follows the real server (shared/reql-facts.md, shared/reql-golden.json and the contract suite):
documents are stored as the server's canonical text (``drtool.reql.canonical``); a batch
that is not valid JSON is refused as a whole (ClusterError); per-document failures (not an
object, a refused primary key, a duplicate with ``conflict="error"``, a rejecting write hook)
are counted in the WriteResult with the server's exact ``first_error`` texts; a document
without its primary key gets a generated UUID. ``write_state`` evaluates its Guard
(``guard_passes``) and writes in one step, like the server's atomic ``replace``. Write and
config permissions are enforced (drtool.cluster.fake.users).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence

from drtool.reql import canonical
from drtool.cluster.base import ConflictMode, Guard, StateWrite
from drtool.cluster.fake.store import Table
from drtool.cluster.fake.users import hook_refusal
from drtool.errors import ClusterError
from drtool.model import KeyText, TableName, WriteResult
from drtool.reql.ordering import InvalidKey, key_bytes, parse_key

_TRUNC_LEN = 300


def guard_passes(guard: Guard, old: dict | None, now: float) -> bool:
    """``Guard`` evaluated like the real server does (see drtool.cluster.base.Guard)."""
    if guard.always:
        return True
    if old is None:
        return guard.if_absent
    if guard.fields and all(old.get(f) == json.loads(v) for f, v in guard.fields):
        return True
    stamp = old.get(guard.expired) if guard.expired else None
    return isinstance(stamp, dict) and stamp.get("$reql_type$") == "TIME" and \
        float(stamp["epoch_time"]) < now


def _trunc(text: str) -> str:
    return text if len(text) <= _TRUNC_LEN else text[: _TRUNC_LEN - 3] + "..."


def _pretty_plain(value) -> str:
    return canonical.pretty(canonical.parse(canonical.json.dumps(value)))


def key_error_message(err: InvalidKey, key_value) -> str:
    """The server's message for a refused primary key (``key_value`` in parsed form)."""
    if err.kind == "type":
        return (
            "Primary keys must be either a number, string, bool, pseudotype or array "
            f"(got type {err.type_name}):\n{_trunc(canonical.pretty(key_value))}"
        )
    if err.kind == "too_long":
        return f"Primary key too long (max 127 characters): {canonical.pretty(key_value)}"
    if err.kind == "array_item":
        return (
            "Array keys can only contain numbers, strings, bools,  pseudotypes, or arrays "
            f"(got {_pretty_plain(err.value)} of type {err.type_name})."
        )
    if err.kind == "geometry":
        return ("Cannot use a geometry value as a key value in a primary or non-geospatial "
                "secondary index.")
    offset = err.value.encode("utf-8").index(b"\x00")
    return f"String {canonical.dumps(err.value[:20])} (truncated) contains NULL byte at offset {offset} in index key."


def insert_docs(tbl: Table, docs: Sequence[str], conflict: str, ignore_hook: bool) -> WriteResult:
    """Insert JSON texts into ``tbl`` like the server's ``insert(r.json(...))`` with that
    ``conflict`` mode ("error", "replace" or "skip"), through the table's write hook unless
    ``ignore_hook``. Permissions are the caller's business. Raises ClusterError (nothing
    written) when a text is not JSON; every other failure is counted in the result."""
    res = WriteResult()
    pk = tbl.primary_key

    def error(msg: str) -> None:
        res.errors += 1
        if res.first_error is None:
            res.first_error = msg

    for text in docs:
        try:
            value = canonical.parse(text)
        except canonical.CanonicalError as exc:
            raise ClusterError(f"{tbl.name}: the server refused the batch: {exc}") from None
        if not isinstance(value, dict) or "$reql_type$" in value:
            kind = "ARRAY" if isinstance(value, list) else "OBJECT" if isinstance(value, dict) else (
                "NUMBER" if canonical.is_number(value) else "STRING" if isinstance(value, str)
                else "NULL" if value is None else "BOOL")
            error(f"Expected type OBJECT but found {kind}.")
            continue
        if pk not in value:
            value[pk] = str(uuid.uuid4())  # the server generates a key
        key_value = value[pk]
        key_text = canonical.dumps(key_value)
        try:
            order = key_bytes(parse_key(key_text))
        except InvalidKey as exc:
            error(key_error_message(exc, key_value))
            continue
        doc = canonical.dumps(value)
        existing = tbl.docs.get(order)
        if existing is not None:
            if conflict == "error":
                old = canonical.pretty(canonical.parse(existing[1]))
                error(f"Duplicate primary key `{pk}`:\n{old}\n{canonical.pretty(value)}")
                continue
            if conflict == "skip" or existing[1] == doc:
                res.unchanged += 1
                continue
        refused = None if ignore_hook else hook_refusal(tbl.write_hook)
        if refused:
            error(refused)
            continue
        if existing is not None:
            res.replaced += 1
        else:
            res.inserted += 1
        if tbl.write_hook is not None and not ignore_hook:
            tbl.hooked_writes += 1
        tbl.put(order, existing[0] if existing else key_text, doc)
    return res


class FakeWritesMixin:
    """Implements the writing half of drtool.cluster.base.Cluster and drtool's state writes
    on ``self.server``. Needs: the host (FakeCluster) provides ``server``, ``description``,
    ``_check(method)`` and ``_table(name)``, and FakeUsersMixin's ``_may_write`` (the
    permission and write-hook check)."""

    async def insert_texts(self, table: TableName, docs: Sequence[str], *,
                           conflict: ConflictMode = "error", ignore_write_hook: bool = False) -> WriteResult:
        self._check("insert_texts")
        if conflict not in ("error", "replace", "skip"):
            raise ClusterError(f"{self.description}: unknown conflict mode {conflict!r}")
        self._may_write(table, ignore_write_hook)
        return insert_docs(self._table(table), docs, conflict, ignore_write_hook)

    async def delete_keys(self, table: TableName, keys: Sequence[KeyText], *,
                          ignore_write_hook: bool = False) -> WriteResult:
        self._check("delete_keys")
        tbl = self._table(table)
        self._may_write(table, ignore_write_hook)
        orders = [self.server._order(k) for k in keys]
        res = WriteResult()
        refused = None if ignore_write_hook else hook_refusal(tbl.write_hook)
        for order in orders:
            if order in tbl.docs and refused:
                res.errors += 1
                res.first_error = res.first_error or refused
            elif order in tbl.docs:
                if tbl.write_hook is not None and not ignore_write_hook:
                    tbl.hooked_writes += 1
                res.deleted += tbl.delete(order)
        return res

    async def sync(self, table: TableName) -> None:
        self._check("sync")
        self._table(table)

    # --- drtool's own state -------------------------------------------------------------
    async def server_time(self) -> float:
        self._check("server_time")
        return self.server.now()

    async def write_state(self, table: TableName, key: KeyText, doc: str | None, guard: Guard, *,
                          now_fields: Mapping[str, float] | None = None) -> StateWrite:
        self._check("write_state")
        tbl, now = self._table(table), self.server.now()
        order = self.server._order(key)
        old = tbl.docs.get(order)
        if not guard_passes(guard, None if old is None else json.loads(old[1]), now):
            return StateWrite(False, None if old is None else old[1], now)
        if doc is None:
            tbl.delete(order)
            return StateWrite(True, None, now)
        value = json.loads(doc)
        for field, offset in (now_fields or {}).items():
            value[field] = {"$reql_type$": "TIME", "epoch_time": round(now + offset, 3),
                            "timezone": "+00:00"}
        result = insert_docs(tbl, [json.dumps(value)], "replace", True)
        if result.errors:
            raise ClusterError(f"{self.description} table {table}: the server refused the "
                               f"write: {result.first_error}")
        stored = tbl.docs[order][1]
        return StateWrite(True, stored, now)
