"""Plain data shared by every layer. No I/O, no third-party imports.

Keys: a primary key travels everywhere as ``KeyText``, the server's canonical JSON text of the
key value (``r.expr(key).to_json_string()``), e.g. ``'"abc"'``, ``'5'``, ``'[1,"a"]'``. The
cluster adapter turns it back into a value on the server with ``r.json(text)``, so no key is
ever decoded and re-encoded in Python (which would change number forms). Client-side ordering
of keys uses ``drtool.reql.ordering.key_order``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drtool.errors import UsageError

def utcnow() -> str:
    """The current time as ISO 8601 UTC with microseconds, as recorded in manifests."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


KeyText = str  # canonical JSON text of a primary key value
DocText = str  # canonical JSON text of a whole document (to_json_string)


@dataclass(frozen=True, order=True)
class TableName:
    db: str
    table: str

    @classmethod
    def parse(cls, text: str, *, what: str = "table name") -> "TableName":
        """Parse ``db.table``; raise UsageError naming ``what`` otherwise."""
        db, sep, table = text.partition(".")
        if not sep or not db or not table or "." in table:
            raise UsageError(f"{what}: expected db.table, got {text!r}")
        return cls(db, table)

    def __str__(self) -> str:
        return f"{self.db}.{self.table}"


@dataclass(frozen=True)
class IndexDef:
    """A secondary index: its name and the server's opaque function blob (binary_format='raw')."""

    name: str
    blob: bytes

    def to_json(self) -> dict:
        return {"name": self.name, "blob": base64.b64encode(self.blob).decode()}

    @classmethod
    def from_json(cls, data: dict) -> "IndexDef":
        return cls(data["name"], base64.b64decode(data["blob"]))


@dataclass(frozen=True)
class TableMeta:
    """What is needed to recreate a table's shape (never server names: they differ per cluster)."""

    name: TableName
    primary_key: str = "id"
    shards: int = 1
    replicas: int = 1
    write_acks: str = "majority"
    durability: str = "hard"
    indexes: tuple[IndexDef, ...] = ()
    write_hook: bytes | None = None

    def to_json(self) -> dict:
        return {
            "db": self.name.db,
            "table": self.name.table,
            "primary_key": self.primary_key,
            "shards": self.shards,
            "replicas": self.replicas,
            "write_acks": self.write_acks,
            "durability": self.durability,
            "indexes": [i.to_json() for i in self.indexes],
            "write_hook": None if self.write_hook is None else base64.b64encode(self.write_hook).decode(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "TableMeta":
        hook = data.get("write_hook")
        return cls(
            name=TableName(data["db"], data["table"]),
            primary_key=data["primary_key"],
            shards=data["shards"],
            replicas=data["replicas"],
            write_acks=data["write_acks"],
            durability=data["durability"],
            indexes=tuple(IndexDef.from_json(i) for i in data["indexes"]),
            write_hook=None if hook is None else base64.b64decode(hook),
        )


@dataclass
class WriteResult:
    """Counts returned by a batch write; ``errors``/``first_error`` come from the server result."""

    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0
    errors: int = 0
    first_error: str | None = None

    def add(self, other: "WriteResult") -> None:
        for f in ("inserted", "replaced", "unchanged", "skipped", "deleted", "errors"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        if self.first_error is None:
            self.first_error = other.first_error

    @property
    def written(self) -> int:
        return self.inserted + self.replaced + self.unchanged


# --- users and permissions ----------------------------------------------------------------
PERMISSION_KEYS = ("read", "write", "config", "connect")  # connect: global scope only


@dataclass(frozen=True)
class UserInfo:
    """A user of a cluster. The server never returns passwords, only whether one is set."""

    name: str
    has_password: bool


@dataclass(frozen=True)
class PermissionRow:
    """One row of ``rethinkdb.permissions``: the overrides of ``user`` at one scope, global
    (``db`` and ``table`` None), a database (``table`` None) or a table. ``permissions`` maps
    read/write/config/connect to True or False; a key that is absent inherits."""

    user: str
    db: str | None
    table: str | None
    permissions: dict = field(default_factory=dict, hash=False)

    @property
    def scope(self) -> str:
        """``global``, ``db app`` or ``table app.users``, for messages."""
        if self.db is None:
            return "global"
        return f"db {self.db}" if self.table is None else f"table {self.db}.{self.table}"

    def sort_key(self) -> tuple:
        return (self.user, self.db or "", self.table or "")

    def to_json(self) -> dict:
        return {"user": self.user, "db": self.db, "table": self.table,
                "permissions": dict(sorted(self.permissions.items()))}

    @classmethod
    def from_json(cls, data: dict) -> "PermissionRow":
        return cls(data["user"], data.get("db"), data.get("table"), dict(data["permissions"]))


def effective_permission(overrides: dict, user: str, key: str, db: str, table: str) -> bool:
    """Whether ``user`` has permission ``key`` on ``db.table``: the nearest override (table,
    then database, then global) decides, none means no; ``admin`` has every permission.
    ``overrides`` maps ``(user, db or None, table or None)`` to a permissions dict."""
    if user == "admin":
        return True
    for scope in ((user, db, table), (user, db, None), (user, None, None)):
        value = overrides.get(scope, {}).get(key)
        if value is not None:
            return bool(value)
    return False


def overrides_of(rows: list[PermissionRow]) -> dict:
    """``list_permissions`` rows as the mapping ``effective_permission`` reads."""
    return {(r.user, r.db, r.table): r.permissions for r in rows}


# --- changefeed events --------------------------------------------------------------------
@dataclass(frozen=True)
class FeedReady:
    """The feed is ready: every write from now on will be delivered."""


@dataclass(frozen=True)
class FeedChange:
    """A document changed. ``doc`` is its new canonical text, or None when it was deleted."""

    key: KeyText
    doc: DocText | None


@dataclass(frozen=True)
class FeedOverflow:
    """The server dropped changes (changefeed queue full). What was skipped is lost."""

    message: str
    skipped: int = 0


FeedEvent = FeedReady | FeedChange | FeedOverflow


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one cluster. ``password`` is resolved from the environment at connect time
    and is never printed (repr hides it)."""

    role: str  # "primary" or "standby", for messages
    hosts: tuple[str, ...]
    user: str = "admin"
    password: str = field(default="", repr=False)
    tls_ca: str | None = None
    connect_timeout: float = 5.0
