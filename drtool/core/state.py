"""drtool's own state database on a cluster: roles, leases, heartbeat, table and runner state.

The layout is agreed in STATE-DB.md (runner and failover); the database is named by the
policy's ``[replication] state_db`` (default ``drtool``) and exists on BOTH clusters:

* ``heartbeat`` ``{"id": policy, "runner", "seq", "time": <source's r.now()>}``: written every
  second on the current primary and replicated to the other cluster like a user table (the
  only replicated state table). Lag = the primary's r.now() - the ``time`` seen on the standby.
* ``roles`` ``{"id": policy, "generation", "primary": "primary"|"standby", "step",
  "replicate", "updated", ...}`` on each cluster (not replicated). No document = generation 0
  with the policy's [primary] as primary; the highest generation seen on either cluster wins.
  Changes are compare-and-set on ``generation``.
* ``leases`` ``{"id": "<policy>:runner" | "<policy>:failover" | "<policy>:table:<db.table>",
  "holder", "host", "pid", "generation", "expires": <r.now() + ttl>}`` on the replication
  target. Acquire/renew/release are compare-and-set on the server; its clock decides expiry.
* ``tables`` ``{"id": "<policy>:<db.table>", "state", "progress", "message", "last_repair",
  "updated"}`` and ``runner`` ``{"id": policy, ...}``: what ``drtool status`` shows.

Every write is one atomic server-side step (``Cluster.write_state``); times always come from
the server's clock. ``StateStore`` holds no connection of its own and keeps no cache: it can be
used for months by a long-running process and from a one-shot command alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drtool.cluster.base import ALWAYS, Cluster, Guard
from drtool.errors import ClusterError, NotFound
from drtool.model import TableName

HEARTBEAT, ROLES, LEASES, TABLES, RUNNER = "heartbeat", "roles", "leases", "tables", "runner"
STATE_TABLES = (HEARTBEAT, ROLES, LEASES, TABLES, RUNNER)
TABLE_STATES = ("copying", "streaming", "repairing", "error", "stopped")
ROLE_NAMES = ("primary", "standby")


def _text(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _key(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def epoch(value: Any) -> float | None:
    """A TIME read from a state document (``{"$reql_type$": "TIME", "epoch_time": ...}``)
    as epoch seconds; None for anything else."""
    if isinstance(value, dict) and value.get("$reql_type$") == "TIME":
        return float(value["epoch_time"])
    return None


def format_time(seconds: float | None) -> str:
    """Epoch seconds as ``2026-12-01 09:00:00 UTC`` for messages ("never" for None)."""
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def runner_lease(policy: str) -> str:
    """The id of the lease that makes one runner per policy."""
    return f"{policy}:runner"


def failover_lease(policy: str) -> str:
    """The id of the lease that makes one failover at a time per policy (issue 10)."""
    return f"{policy}:failover"


def table_lease(policy: str, table: TableName) -> str:
    """The id of a per-table lease (ROADMAP 8: several runners share a policy's tables)."""
    return f"{policy}:table:{table}"


@dataclass(frozen=True)
class Roles:
    """Which of the policy's clusters is primary now. ``extra`` keeps fields this module does
    not know (failover's), so rewriting a document never loses them."""

    generation: int = 0
    primary: str = "primary"
    step: str | None = None
    replicate: bool = True
    updated: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def source(self) -> str:
        """The role name ("primary"/"standby" in the policy) replication reads from."""
        return self.primary

    @property
    def target(self) -> str:
        """The role name replication writes into: the cluster that is not primary now."""
        return "standby" if self.primary == "primary" else "primary"

    def to_doc(self, policy: str) -> str:
        doc = {**self.extra, "id": policy, "generation": self.generation,
               "primary": self.primary, "step": self.step, "replicate": self.replicate}
        doc.pop("updated", None)
        return _text(doc)

    @classmethod
    def from_doc(cls, text: str | None) -> "Roles":
        if text is None:
            return cls()
        doc = json.loads(text)
        known = ("id", "generation", "primary", "step", "replicate", "updated")
        primary = doc.get("primary", "primary")
        if primary not in ROLE_NAMES:
            raise ClusterError(f"roles document {doc.get('id')!r}: primary must be primary or "
                               f"standby, got {primary!r}")
        return cls(int(doc.get("generation", 0)), primary, doc.get("step"),
                   bool(doc.get("replicate", True)), epoch(doc.get("updated")),
                   {k: v for k, v in doc.items() if k not in known})


def newest_roles(*found: Roles) -> Roles:
    """The roles with the highest generation (STATE-DB.md: the highest seen on either
    cluster wins); generation 0 when none is given."""
    return max(found, key=lambda r: r.generation, default=Roles())


@dataclass(frozen=True)
class LeaseHolder:
    """Who asks for a lease: a unique runner id, its host and pid, and the roles generation
    it started with."""

    id: str
    host: str
    pid: int
    generation: int = 0


@dataclass(frozen=True)
class Lease:
    """A lease as stored; ``now`` is the server's clock when it was read or written."""

    name: str
    holder: str
    host: str
    pid: int
    generation: int
    expires: float
    now: float

    @property
    def expired(self) -> bool:
        return self.expires < self.now

    def describe(self) -> str:
        return (f"runner {self.holder} on {self.host} (pid {self.pid}) holds it until "
                f"{format_time(self.expires)}")

    @classmethod
    def from_doc(cls, text: str, now: float) -> "Lease":
        doc = json.loads(text)
        return cls(doc["id"], str(doc.get("holder")), str(doc.get("host")),
                   int(doc.get("pid", 0)), int(doc.get("generation", 0)),
                   epoch(doc.get("expires")) or 0.0, now)


@dataclass(frozen=True)
class LeaseResult:
    """``acquired``: the caller holds the lease now; ``lease``: the lease as stored (the
    other holder's when refused; None when released or absent)."""

    acquired: bool
    lease: Lease | None


@dataclass(frozen=True)
class Heartbeat:
    runner: str
    seq: int
    time: float  # the source's r.now() when written


@dataclass
class TableState:
    """One table's replication state, for ``drtool status``. ``progress`` while copying is
    ``{"done": n, "total": estimate}``; ``last_repair`` ``{"reason", "read", "written",
    "deleted", "time", ...}``."""

    table: TableName
    state: str
    message: str | None = None
    progress: dict | None = None
    last_repair: dict | None = None
    updated: float | None = None

    def to_doc(self, policy: str) -> str:
        if self.state not in TABLE_STATES:
            raise ValueError(f"table state must be one of {TABLE_STATES}, got {self.state!r}")
        return _text({"id": f"{policy}:{self.table}", "table": str(self.table),
                      "state": self.state, "message": self.message, "progress": self.progress,
                      "last_repair": self.last_repair})

    @classmethod
    def from_doc(cls, text: str) -> "TableState":
        doc = json.loads(text)
        return cls(TableName.parse(doc["table"]), doc["state"], doc.get("message"),
                   doc.get("progress"), doc.get("last_repair"), epoch(doc.get("updated")))


class StateStore:
    """drtool's state database on ONE cluster, for one policy. Every method is one or two
    small queries; none caches. Methods raise what the cluster raises (ClusterUnreachable,
    ClusterError); reads of a state database or table that does not exist yet return the
    "nothing recorded" value instead of raising NotFound, so ``drtool status`` works before
    a runner ever ran. Writes need ``ensure()`` first."""

    def __init__(self, cluster: Cluster, db: str, policy: str) -> None:
        self.cluster, self.db, self.policy = cluster, db, policy

    def table(self, name: str) -> TableName:
        return TableName(self.db, name)

    async def ensure(self) -> None:
        """Create the state database and its tables where missing. Idempotent; safe when
        several processes do it at once (a table created meanwhile is not an error)."""
        for name in STATE_TABLES:
            await self.cluster.ensure_table(self.table(name))

    async def _get(self, name: str, key: str) -> str | None:
        try:
            rows = await self.cluster.get_docs(self.table(name), [_key(key)])
        except NotFound:
            return None
        return rows[0][1] if rows else None

    # --- roles ---------------------------------------------------------------------------
    async def read_roles(self) -> Roles:
        """The roles recorded on this cluster (generation 0 when none)."""
        return Roles.from_doc(await self._get(ROLES, self.policy))

    async def write_roles(self, roles: Roles, *, expected_generation: int) -> tuple[bool, Roles]:
        """Compare-and-set: store ``roles`` only if the recorded generation is still
        ``expected_generation`` (0 also matches no document). Returns (written, roles now
        recorded). ``updated`` is set from the server's clock."""
        guard = Guard(if_absent=expected_generation == 0,
                      fields=(("generation", str(int(expected_generation))),))
        done = await self.cluster.write_state(self.table(ROLES), _key(self.policy),
                                              roles.to_doc(self.policy), guard,
                                              now_fields={"updated": 0})
        return done.applied, Roles.from_doc(done.doc)

    # --- leases --------------------------------------------------------------------------
    async def read_lease(self, name: str) -> Lease | None:
        text = await self._get(LEASES, name)
        return None if text is None else Lease.from_doc(text, await self.cluster.server_time())

    async def acquire_lease(self, name: str, holder: LeaseHolder, ttl: float) -> LeaseResult:
        """Take the lease if it is free, already ours, or expired on the server's clock; it
        then lasts ``ttl`` seconds. Refused: ``acquired`` False and the holder's lease."""
        return await self._lease(name, holder, ttl, Guard(
            fields=(("holder", _key(holder.id)),), expired="expires"))

    async def renew_lease(self, name: str, holder: LeaseHolder, ttl: float) -> LeaseResult:
        """Extend our lease by ``ttl`` from now. Refused when someone else holds it (it
        expired and was taken over) or it is gone (released or deleted)."""
        return await self._lease(name, holder, ttl, Guard(
            if_absent=False, fields=(("holder", _key(holder.id)),)))

    async def _lease(self, name: str, holder: LeaseHolder, ttl: float, guard: Guard) -> LeaseResult:
        doc = _text({"id": name, "holder": holder.id, "host": holder.host, "pid": holder.pid,
                     "generation": holder.generation})
        done = await self.cluster.write_state(self.table(LEASES), _key(name), doc, guard,
                                              now_fields={"expires": float(ttl)})
        lease = None if done.doc is None else Lease.from_doc(done.doc, done.now)
        return LeaseResult(done.applied, lease)

    async def release_lease(self, name: str, holder_id: str) -> bool:
        """Delete the lease if we hold it. True when it is ours no more (released, or not
        there); False when another runner holds it."""
        done = await self.cluster.write_state(self.table(LEASES), _key(name), None,
                                              Guard(fields=(("holder", _key(holder_id)),)))
        return done.applied

    # --- heartbeat -----------------------------------------------------------------------
    async def write_heartbeat(self, runner: str, seq: int) -> float:
        """Write the policy's heartbeat with this server's r.now(); return that time."""
        doc = _text({"id": self.policy, "runner": runner, "seq": int(seq)})
        done = await self.cluster.write_state(self.table(HEARTBEAT), _key(self.policy), doc,
                                              ALWAYS, now_fields={"time": 0})
        return done.now

    async def read_heartbeat(self) -> Heartbeat | None:
        text = await self._get(HEARTBEAT, self.policy)
        if text is None:
            return None
        doc = json.loads(text)
        return Heartbeat(str(doc.get("runner")), int(doc.get("seq", 0)), epoch(doc.get("time")) or 0.0)

    # --- table and runner state ----------------------------------------------------------
    async def put_table_state(self, state: TableState) -> None:
        await self.cluster.write_state(self.table(TABLES), _key(f"{self.policy}:{state.table}"),
                                       state.to_doc(self.policy), ALWAYS,
                                       now_fields={"updated": 0})

    async def table_states(self) -> list[TableState]:
        """Every table state recorded for this policy, in table order."""
        prefix = f"{self.policy}:"
        after, upto = _key(prefix), _key(prefix[:-1] + chr(ord(":") + 1))
        try:
            rows = [row async for batch in self.cluster.scan(self.table(TABLES), after=after,
                                                             upto=upto) for row in batch]
        except NotFound:
            return []
        return sorted((TableState.from_doc(doc) for _, doc in rows), key=lambda s: s.table)

    async def forget_table_state(self, table: TableName) -> None:
        await self.cluster.write_state(self.table(TABLES), _key(f"{self.policy}:{table}"),
                                       None, ALWAYS)

    async def put_runner(self, record: dict) -> None:
        """Store the runner's record (state, last snapshot and its result, ...) for status;
        ``updated`` from the server's clock."""
        await self.cluster.write_state(self.table(RUNNER), _key(self.policy),
                                       _text({**record, "id": self.policy}), ALWAYS,
                                       now_fields={"updated": 0})

    async def read_runner(self) -> dict | None:
        text = await self._get(RUNNER, self.policy)
        return None if text is None else json.loads(text)


async def lag_seconds(source: Cluster, target: StateStore) -> tuple[float | None, Heartbeat | None]:
    """Replication lag by the heartbeat method: the source's r.now() minus the newest
    heartbeat time visible on the target (both from the source's clock). None when the
    target has no heartbeat yet."""
    beat = await target.read_heartbeat()
    if beat is None:
        return None, None
    return max(0.0, await source.server_time() - beat.time), beat
