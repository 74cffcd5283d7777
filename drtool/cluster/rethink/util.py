"""Pure helpers of the RethinkDB adapter: no I/O and no ``rethinkdb`` import.

They turn configuration into connection targets, server result objects into drtool values
(WriteResult, TableMeta, feed events) and build the one-line messages of the adapter. Kept
apart from ``drtool.cluster.rethink.connect`` so they can be tested without a server or a driver.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence

from drtool.errors import ClusterError, PermissionDenied, UsageError  # noqa: F401 (re-export)
from drtool.model import (
    FeedChange,
    FeedEvent,
    FeedOverflow,
    FeedReady,
    IndexDef,
    KeyText,
    TableMeta,
    TableName,
    WriteResult,
)

DEFAULT_PORT = 28015

_SKIPPED = re.compile(r"skipped (\d+) elements?")


def split_host(text: str) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6addr]:port"`` or a bare IPv6 address -> (host, port).

    Raises UsageError for an empty host or a port that is not a number in 1..65535."""
    text = text.strip()
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise UsageError(f"cluster host {text!r}: missing ']' in IPv6 address")
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"cluster host {text!r}: expected [address]:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise UsageError(f"cluster host {text!r}: empty host name")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"cluster host {text!r}: port must be a number from 1 to 65535")
    return host, int(port)


def host_label(host: str, port: int) -> str:
    """The form used in messages: ``host:port`` (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def json_array(texts: Iterable[str]) -> str:
    """Join canonical JSON texts into the text of one JSON array (for ``r.json``)."""
    return "[" + ",".join(texts) + "]"


def unique(keys: Sequence[KeyText]) -> list[KeyText]:
    """Keys without repeats, first occurrence kept (``get_all`` does not de-duplicate)."""
    return list(dict.fromkeys(keys))


def write_result(res: object, where: str) -> WriteResult:
    """A server write result dict -> WriteResult (per-document errors are kept, not raised)."""
    if not isinstance(res, dict):
        raise ClusterError(f"{where}: unexpected write result {str(res)[:200]!r}")
    return WriteResult(
        inserted=int(res.get("inserted", 0)),
        replaced=int(res.get("replaced", 0)),
        unchanged=int(res.get("unchanged", 0)),
        skipped=int(res.get("skipped", 0)),
        deleted=int(res.get("deleted", 0)),
        errors=int(res.get("errors", 0)),
        first_error=res.get("first_error"),
    )


def decode_blob(value: object, what: str) -> bytes:
    """A function blob read with ``binary_format='raw'`` -> bytes.

    Accepts ``{'$reql_type$': 'BINARY', 'data': base64}`` (the base64 of write hooks contains
    ``\\r\\n`` line breaks; whitespace is ignored, any other damage raises ClusterError) or bytes
    (``binary_format='native'``)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict) and value.get("$reql_type$") == "BINARY":
        data = value.get("data")
        if isinstance(data, str):
            try:
                return base64.b64decode("".join(data.split()), validate=True)
            except (binascii.Error, ValueError):
                pass
    raise ClusterError(f"{what}: the server returned a function that is not valid BINARY data")


def table_meta(name: TableName, config: dict, index_rows: list[dict], hook: dict | None,
               where: str) -> TableMeta:
    """Build TableMeta from ``config()``, ``index_status()`` and ``get_write_hook()`` (all
    read with ``binary_format='raw'``). Records shard/replica counts, never server names."""
    shards = config.get("shards") or []
    hook_blob = None if hook is None else decode_blob(hook.get("function"), f"{where}: write hook")
    indexes = tuple(
        IndexDef(row["index"], decode_blob(row.get("function"), f"{where}: index {row['index']}"))
        for row in sorted(index_rows, key=lambda row: row["index"])
    )
    return TableMeta(
        name=name,
        primary_key=config["primary_key"],
        shards=max(len(shards), 1),
        replicas=max(len(shards[0].get("replicas") or []), 1) if shards else 1,
        write_acks=str(config.get("write_acks", "majority")),
        durability=str(config.get("durability", "hard")),
        indexes=indexes,
        write_hook=hook_blob,
    )


def feed_event(item: object) -> FeedEvent | None:
    """One element of the mapped changefeed -> a FeedEvent, or None for states to ignore.

    ``{'state': 'ready'}`` -> FeedReady; other states (``initializing``) -> None;
    ``{'error': 'Changefeed cache over array size limit, skipped 44 elements.'}`` ->
    FeedOverflow(message, 44); ``{'key': text, 'doc': text-or-None}`` -> FeedChange."""
    if not isinstance(item, dict):
        raise ClusterError(f"changefeed: unexpected element {str(item)[:200]!r}")
    if "state" in item:
        return FeedReady() if item["state"] == "ready" else None
    if "error" in item:
        message = str(item["error"])
        found = _SKIPPED.search(message)
        return FeedOverflow(message, int(found.group(1)) if found else 0)
    return FeedChange(item["key"], item["doc"])


def scrub(message: str, secret: str | None) -> str:
    """Remove a secret from a message (belt and braces: driver messages never echo it).
    Secrets shorter than 3 characters are left alone (replacing them would garble text)."""
    if secret and len(secret) >= 3 and secret in message:
        message = message.replace(secret, "***")
    return message


def unreachable_message(role: str, tried: Sequence[str], last_error: str) -> str:
    return (
        f"{role}: cannot reach any of {', '.join(tried)} (last error: {last_error}); "
        "check the hosts and that RethinkDB is running"
    )


def auth_message(role: str, label: str, user: str) -> str:
    return (
        f"{role} {label}: user {user!r} was refused: wrong user or password "
        "(the password comes from the environment variable named by the policy's password_env)"
    )

