"""Waiting as a hot spare: the part of the runner (``Runner``, drtool.standby.runner) that takes
the runner lease, or waits for it while a live runner holds it.

``--no-wait`` (``wait=False``) keeps the old refusal, LeaseHeld (exit 8). Otherwise the runner
says once that it waits (``runner-spare``), keeps a spare record in the leases table (shown
by ``drtool status``, expiring with ``lease_ttl`` if this process dies) and tries to take the
lease every second: within ``lease_ttl`` + 1 s of the active runner's last renewal it is
active. The roles are read after each attempt: when a failover began meanwhile, a lease just
taken is released and the runner looks at the roles again instead.
"""

from __future__ import annotations

import contextlib

from drtool.coordination.leases import LeaseKeeper
from drtool.coordination.roles import Roles, spare_lease
from drtool.errors import DrtoolError, LeaseHeld

TICK = 1.0  # the runner ticks (lease, heartbeat, roles) and a spare tries, every second


class Spare:
    """Mixed into Runner: needs ``policy``, ``events``, ``wait``, ``state``, ``_stop``,
    ``_pause`` and ``_read_roles``."""

    async def _become_active(self, keeper: LeaseKeeper, roles: Roles) -> bool:
        """Take the runner lease; while a live runner holds it, wait as a spare (see the
        module doc). False: stopped, or the roles changed meanwhile."""
        store, spare, logged = keeper.store, spare_lease(self.policy.name, keeper.holder.id), False
        try:
            while True:
                got = await keeper.take()
                now = await self._read_roles()  # after taking: a failover may have begun
                if (now.generation, now.step, now.replicate) != (
                        roles.generation, roles.step, roles.replicate):
                    if got.acquired:
                        await keeper.release()
                    return False
                if got.acquired:
                    self.events.metrics.runner(keeper.holder.id, "active")
                    return True
                assert got.lease is not None
                held = (f"policy {self.policy.name}: another runner holds the lease on the "
                        f"{roles.target}: {got.lease.describe()}")
                if not self.wait and not self.policy.replication.share_tables:
                    raise LeaseHeld(f"{held}; stop that runner first, or wait until its lease "
                                    "expires")
                if not logged:
                    self.state, logged = "spare", True
                    self.events.metrics.runner(keeper.holder.id, "spare")
                    self.events.emit("runner-spare", f"{held}; waiting as a hot spare to take "
                                     "over when it stops renewing", runner=keeper.holder.id)
                await store.acquire_lease(spare, keeper.holder, keeper.ttl)
                await self._pause(TICK)
                if self._stop.is_set():
                    return False
        finally:
            if logged:
                with contextlib.suppress(DrtoolError):
                    await store.release_lease(spare, keeper.holder.id)
