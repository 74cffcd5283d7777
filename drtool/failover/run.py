"""One failover or failback run: both clusters, their roles, the failover lease, the steps.

Roles (drtool.coordination.state, STATE-DB.md) say which of the policy's clusters is primary, with a
generation. A run moves writes ``from`` the current primary ``to`` the other cluster. It
records every step it starts in ``roles.step`` on every cluster it can reach (compare-and-set
on the generation) BEFORE doing it, with what later steps need (the fence record, the
heartbeat time, the lost-writes file) in ``roles.extra["failover"]``; so a run killed at any
point is finished by running the same command again: it resumes at the recorded step, and
every step is idempotent. ``drtool status`` shows the step.

Two runs cannot overlap: the lease ``<policy>:failover`` is held on the ``to`` cluster (the
replication target of the generation being left, the same for every kind of run), renewed in
the background. A lease left by a killed run on this host is taken over at once (its pid is
gone); another holder's lease refuses the run with who holds it and until when.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from drtool import cluster as cluster_access
from drtool.cluster.base import Cluster
from drtool.coordination.roles import (
    ROLE_NAMES, STOP_REPLICATION, Roles, failover_lease, newest_roles, other_role,
)
from drtool.coordination.leases import take_lease
from drtool.coordination.state import LeaseHolder, StateStore, format_time, state_store
from drtool.errors import DrtoolError, FailoverError, LeaseHeld, UsageError
from drtool.model import TableName
from drtool.config.policy import Policy

LEASE_TTL = 15.0
#: fault tests set DRTOOL_FAILPOINT=after-step:NAME to be killed (SIGKILL) right after a step
#: is recorded, as a crash there would leave it
FAILPOINT = "DRTOOL_FAILPOINT"
PROBE_TIMEOUT = 2.0  # connecting to a cluster that may be gone


@dataclass
class Side:
    """One of the policy's clusters as this run sees it."""

    role: str
    cluster: Cluster | None = None
    store: StateStore | None = None
    roles: Roles | None = None
    error: DrtoolError | None = None

    @property
    def reachable(self) -> bool:
        return self.cluster is not None


class FailoverRun:
    """Connections, roles and lease of one run. ``say`` prints one line for the operator."""

    def __init__(self, policy: Policy, say: Callable[[str], None],
                 connector: cluster_access.Connector | None = None) -> None:
        if policy.standby is None:
            raise UsageError(f"{policy.path}: no [standby] section: failover needs two clusters")
        self.policy, self.say, self.connector = policy, say, connector
        self.sides = {role: Side(role) for role in ROLE_NAMES}
        self.holder = LeaseHolder(f"failover-{uuid.uuid4().hex[:12]}", socket.gethostname(),
                                  os.getpid())
        self.newest = Roles()
        #: seconds since this run started at which each step started (for timings)
        self.step_started: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._lease_side: Side | None = None
        self._renewer: asyncio.Task | None = None

    # --- connections and roles ------------------------------------------------------------
    async def connect(self, role: str, *, timeout: float | None = None) -> Side:
        """Connect to one cluster and read its roles; an unreachable cluster is recorded in
        ``side.error`` (the caller decides whether that is fatal)."""
        side = self.sides[role]
        section = self.policy.primary if role == "primary" else self.policy.standby
        config = section.config(role)  # type: ignore[union-attr]
        if timeout is not None:
            config = dataclasses.replace(config, connect_timeout=timeout)
        try:
            side.cluster = await cluster_access.connect(config, self.connector)
            side.store = state_store(side.cluster, self.policy)
            side.roles = await side.store.read_roles()
        except DrtoolError as err:
            if side.cluster is not None:
                await side.cluster.close()
            side.cluster, side.store, side.error = None, None, err
            if not err.retryable:
                raise
        self._merge()
        return side

    def _merge(self) -> None:
        """The newest roles of the clusters read so far (``newest_roles``, the one rule)."""
        self.newest = newest_roles(*[s.roles for s in self.sides.values() if s.roles])

    def side(self, role: str) -> Side:
        return self.sides[role]

    def require(self, role: str) -> Side:
        side = self.sides[role]
        if not side.reachable:
            raise side.error or FailoverError(f"{role}: not connected")
        return side

    def tables_of(self, available: list[TableName]) -> list[TableName]:
        return self.policy.tables.selected(available)

    async def selected_tables(self, role: str) -> list[TableName]:
        return self.tables_of(await self.require(role).cluster.list_tables())  # type: ignore[union-attr]

    # --- recording steps ---------------------------------------------------------------------
    @property
    def progress(self) -> dict:
        """What the run in progress recorded (``roles.extra["failover"]``), or {}."""
        return dict(self.newest.extra.get("failover") or {})

    async def record(self, roles: Roles, *, only: tuple[str, ...] = ROLE_NAMES) -> None:
        """Store ``roles`` on every reachable cluster of ``only`` (compare-and-set on the
        generation each one holds), with ``extra["seq"]`` one more than the newest's. A
        cluster whose roles changed meanwhile (another run) stops this one."""
        seq = max([int(s.roles.extra.get("seq", 0)) for s in self.sides.values() if s.roles] + [0])
        roles = dataclasses.replace(roles, extra={**roles.extra, "seq": seq + 1})
        for role in only:
            side = self.sides[role]
            if not side.reachable:
                continue
            await side.store.ensure()  # type: ignore[union-attr]
            expected = side.roles.generation if side.roles else 0
            if expected > roles.generation:
                raise FailoverError(
                    f"{role} records generation {expected}, newer than this run's "
                    f"{roles.generation}: another failover happened; run drtool status")
            done, now = await side.store.write_roles(roles, expected_generation=expected)  # type: ignore[union-attr]
            if not done:
                raise FailoverError(
                    f"{role}: roles changed meanwhile (generation {now.generation}, step "
                    f"{now.step}): another failover is running? run drtool status")
            side.roles = now
        self._merge()

    @property
    def reached(self) -> str | None:
        """The step a run in progress recorded (None: no run in progress)."""
        if self.newest.step is None:
            return None
        return self.progress.get("step") or self.newest.step

    def direction(self) -> tuple[str, str, int]:
        """``(from, to, generation)`` of this failover: what the run in progress recorded, or
        for a new run the current primary, the other cluster and the newest generation."""
        if self.reached is not None:
            progress = self.progress
            return progress["from"], progress["to"], int(progress["generation"])
        source = self.newest.primary
        return source, other_role(source), self.newest.generation

    async def set_step(self, step: str, **progress) -> None:
        """Record that ``step`` starts (with ``progress`` merged into extra["failover"]).

        Once replication was asked to stop, ``roles.step`` stays "stop-replication" for the
        rest of that generation (a waiting runner resumes when it changes, see
        drtool.standby.runner); the step reached is ``extra["failover"]["step"]``."""
        extra = dict(self.newest.extra)
        extra["failover"] = {**self.progress, **progress, "step": step}
        shown = step
        if step == STOP_REPLICATION or (
                self.progress.get("stopped_at") == self.newest.generation):
            extra["failover"]["stopped_at"] = self.newest.generation
            shown = STOP_REPLICATION
        await self.record(dataclasses.replace(self.newest, step=shown, extra=extra))
        self.step_started[step] = round(time.monotonic() - self._t0, 3)
        self.say(f"step {step}")
        if os.environ.get(FAILPOINT) == f"after-step:{step}":  # fault tests: a kill -9 here
            os.kill(os.getpid(), signal.SIGKILL)

    # --- the lease ---------------------------------------------------------------------------
    async def acquire_lease(self, role: str) -> None:
        """Hold ``<policy>:failover`` on ``role``'s cluster until ``close``; FailoverError
        when another run holds it."""
        side = self.require(role)
        store = side.store
        await store.ensure()  # type: ignore[union-attr]
        name = failover_lease(self.policy.name)
        got = await take_lease(store, name, self.holder, LEASE_TTL)  # type: ignore[arg-type]
        lease = got.lease
        if not got.acquired:
            who = (f"{lease.holder} on {lease.host} (pid {lease.pid}) until "
                   f"{format_time(lease.expires)}") if lease else "another run"
            raise LeaseHeld(f"another failover or failback is running ({who}); wait for it "
                            "to finish (drtool status shows its step)")
        self._lease_side = side
        self._renewer = asyncio.ensure_future(self._renew(store, name))

    async def _renew(self, store: StateStore, name: str) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            with contextlib.suppress(DrtoolError):
                await store.renew_lease(name, self.holder, LEASE_TTL)

    async def close(self) -> None:
        """Release the lease (when held) and close every connection. Idempotent."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
            self._renewer = None
        if self._lease_side is not None and self._lease_side.reachable:
            with contextlib.suppress(DrtoolError):
                await self._lease_side.store.release_lease(  # type: ignore[union-attr]
                    failover_lease(self.policy.name), self.holder.id)
            self._lease_side = None
        for side in self.sides.values():
            if side.cluster is not None:
                await side.cluster.close()
                side.cluster = None

    async def __aenter__(self) -> "FailoverRun":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
