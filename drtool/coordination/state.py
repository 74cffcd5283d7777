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
* ``leases`` ``{"id": "<policy>:runner" | "<policy>:failover" | "<policy>:table:<db.table>"
  | "<policy>:spare:<holder>", "holder", "host", "pid", "generation", "token",
  "expires": <r.now() + ttl>}`` on the replication target. Acquire/renew/release are
  compare-and-set on the server; its clock decides expiry. ``generation`` is the roles
  generation the holder started with; ``token`` the lease's own generation, +1 each time the
  lease changes hands (read, then compare-and-set: two takers never both pass). A spare
  runner's ``<policy>:spare:<holder>`` record says it waits (drtool.coordination.leases).
* ``tables`` ``{"id": "<policy>:<db.table>", "state", "progress", "message", "last_repair",
  "updated"}`` and ``runner`` ``{"id": policy, ...}``: what ``drtool status`` shows.

Every write is one atomic server-side step (``Cluster.write_state``); times always come from
the server's clock. ``StateStore`` holds no connection of its own and keeps no cache: it can be
used for months by a long-running process and from a one-shot command alike.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from drtool.cluster.base import ALWAYS, Cluster, Guard
from drtool.errors import NotFound
from drtool.coordination.documents import key_literal, doc_text, epoch, format_time  # noqa: F401
from drtool.coordination.roles import (  # noqa: F401 (the protocol, re-exported)
    ROLE_NAMES, Roles, failover_lease, newest_roles, runner_lease, spare_lease, table_lease,
)
from drtool.config.policy import Policy
from drtool.model import TableName

HEARTBEAT, ROLES, LEASES, TABLES, RUNNER = "heartbeat", "roles", "leases", "tables", "runner"
STATE_TABLES = (HEARTBEAT, ROLES, LEASES, TABLES, RUNNER)
TABLE_STATES = ("copying", "streaming", "repairing", "error", "stopped")


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
    token: int = 0
    #: what the holder says of itself with each renewal (a sharing runner: its tables, lag)
    note: dict | None = None

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
                   epoch(doc.get("expires")) or 0.0, now, int(doc.get("token", 0)),
                   doc.get("note"))


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
        return doc_text({"id": f"{policy}:{self.table}", "table": str(self.table),
                      "state": self.state, "message": self.message, "progress": self.progress,
                      "last_repair": self.last_repair})

    @classmethod
    def from_doc(cls, text: str) -> "TableState":
        doc = json.loads(text)
        return cls(TableName.parse(doc["table"]), doc["state"], doc.get("message"),
                   doc.get("progress"), doc.get("last_repair"), epoch(doc.get("updated")))


def state_store(cluster: Cluster, policy: Policy) -> "StateStore":
    """The policy's state database on ``cluster`` (``[replication] state_db``)."""
    return StateStore(cluster, policy.replication.state_db, policy.name)


async def current_roles(policy: Policy, *clusters: Cluster) -> Roles:
    """The current roles of ``policy``: ``newest_roles`` of what each of ``clusters`` records
    (generation 0 when none). Raises what the clusters raise."""
    return newest_roles(*await asyncio.gather(*[state_store(c, policy).read_roles()
                                                 for c in clusters]))


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
            rows = await self.cluster.get_docs(self.table(name), [key_literal(key)])
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
        done = await self.cluster.write_state(self.table(ROLES), key_literal(self.policy),
                                              roles.to_doc(self.policy), guard,
                                              now_fields={"updated": 0})
        return done.applied, Roles.from_doc(done.doc)

    # --- leases --------------------------------------------------------------------------
    async def read_lease(self, name: str) -> Lease | None:
        text = await self._get(LEASES, name)
        return None if text is None else Lease.from_doc(text, await self.cluster.server_time())

    async def _stored_token(self, name: str) -> tuple[str | None, int]:
        text = await self._get(LEASES, name)
        if text is None:
            return None, 0
        doc = json.loads(text)
        return doc.get("holder"), int(doc.get("token", 0))

    async def acquire_lease(self, name: str, holder: LeaseHolder, ttl: float, *,
                            instead_of: str | None = None, note: dict | None = None
                            ) -> LeaseResult:
        """Take the lease if it is free, already ours, expired on the server's clock, or (with
        ``instead_of``, a holder known to be gone) held by that holder instead of ours; it
        then lasts ``ttl`` seconds, carries ``note`` (replacing the previous one) and its
        ``token`` is one more than the stored one (the same when it was ours already).
        Refused: ``acquired`` False and the holder's lease."""
        was, token = await self._stored_token(name)
        return await self._lease(name, holder, ttl, Guard(
            fields=(("holder", key_literal(instead_of or holder.id)),), expired="expires"),
            token if was == holder.id else token + 1, note)

    async def renew_lease(self, name: str, holder: LeaseHolder, ttl: float, *,
                          token: int | None = None) -> LeaseResult:
        """Extend our lease by ``ttl`` from now, keeping its ``token`` (read first when not
        given). Refused when someone else holds it (it expired and was taken over) or it is
        gone (released or deleted)."""
        if token is None:
            token = (await self._stored_token(name))[1]
        return await self._lease(name, holder, ttl, Guard(
            if_absent=False, fields=(("holder", key_literal(holder.id)),)), token)

    async def _lease(self, name: str, holder: LeaseHolder, ttl: float, guard: Guard,
                     token: int, note: dict | None = None) -> LeaseResult:
        doc = doc_text({"id": name, "holder": holder.id, "host": holder.host, "pid": holder.pid,
                        "generation": holder.generation, "token": int(token),
                        **({"note": note} if note else {})})
        done = await self.cluster.write_state(self.table(LEASES), key_literal(name), doc, guard,
                                              now_fields={"expires": float(ttl)})
        lease = None if done.doc is None else Lease.from_doc(done.doc, done.now)
        return LeaseResult(done.applied, lease)

    async def leases(self, prefix: str) -> list[Lease]:
        """Every lease whose id starts with ``prefix`` that has not expired, in id order."""
        rows = await self._prefixed(LEASES, prefix)
        now = await self.cluster.server_time()
        found = (Lease.from_doc(doc, now) for _, doc in rows)
        return sorted((lease for lease in found if not lease.expired), key=lambda x: x.name)

    async def release_lease(self, name: str, holder_id: str) -> bool:
        """Delete the lease if we hold it. True when it is ours no more (released, or not
        there); False when another runner holds it."""
        done = await self.cluster.write_state(self.table(LEASES), key_literal(name), None,
                                              Guard(fields=(("holder", key_literal(holder_id)),)))
        return done.applied

    # --- heartbeat -----------------------------------------------------------------------
    async def write_heartbeat(self, runner: str, seq: int) -> float:
        """Write the policy's heartbeat with this server's r.now(); return that time."""
        doc = doc_text({"id": self.policy, "runner": runner, "seq": int(seq)})
        done = await self.cluster.write_state(self.table(HEARTBEAT), key_literal(self.policy), doc,
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
        await self.cluster.write_state(self.table(TABLES), key_literal(f"{self.policy}:{state.table}"),
                                       state.to_doc(self.policy), ALWAYS,
                                       now_fields={"updated": 0})

    async def table_states(self) -> list[TableState]:
        """Every table state recorded for this policy, in table order."""
        rows = await self._prefixed(TABLES, f"{self.policy}:")
        return sorted((TableState.from_doc(doc) for _, doc in rows), key=lambda s: s.table)

    async def _prefixed(self, name: str, prefix: str) -> list[tuple[str, str]]:
        """The rows of state table ``name`` whose string key starts with ``prefix`` (a few:
        one per table or runner of the policy); none when the table does not exist."""
        after, upto = key_literal(prefix), key_literal(prefix[:-1] + chr(ord(prefix[-1]) + 1))
        try:
            return [row async for batch in self.cluster.scan(self.table(name), after=after,
                                                             upto=upto) for row in batch]
        except NotFound:
            return []

    async def forget_table_state(self, table: TableName) -> None:
        await self.cluster.write_state(self.table(TABLES), key_literal(f"{self.policy}:{table}"),
                                       None, ALWAYS)

    async def put_runner(self, record: dict) -> None:
        """Store the runner's record (state, last snapshot and its result, ...) for status;
        ``updated`` from the server's clock."""
        await self.cluster.write_state(self.table(RUNNER), key_literal(self.policy),
                                       doc_text({**record, "id": self.policy}), ALWAYS,
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
