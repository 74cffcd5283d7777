"""Holding a lease for a long time, safely: taking over a dead process's lease at once, and the
fence every write makes.

* ``take_lease``: acquire (``StateStore.acquire_lease``); when refused and the holder ran on
  THIS host under a pid that is gone (kill -9, a crash, a reboot), take it over from that
  holder (compare-and-set on the holder): no waiting for ``lease_ttl``. A holder on
  another host is never judged by its pid. The runner and the failover both use it.
* ``LeaseKeeper``: the lease one process holds, its **generation** (``token``, +1 each time
  the lease changes hands, stored in the lease document) and its local **deadline**: the
  monotonic time the renewal that succeeded last was *sent* plus ``lease_ttl`` minus a margin
  (a third of the ttl, at least 1 s). The server's expiry is that renewal's server time plus
  ``lease_ttl``, so the deadline always falls before another process can take the lease, even
  when this one is cut off or paused. ``check()`` raises LeaseExpired past the deadline.
* ``FencedCluster``: a target Cluster whose every write (each batch of inserts or deletes, each
  schema or user change) first calls ``check()``: a runner that lost its lease stops writing
  before another can take it. Reads and ``write_state`` (the lease's own renewal) pass
  through.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from drtool.cluster.base import Cluster
from drtool.coordination.state import Lease, LeaseHolder, LeaseResult, StateStore
from drtool.errors import OwnershipError


class LeaseExpired(OwnershipError):
    """This process's lease passed its local deadline without a renewal: it must not write
    (another process may hold the lease soon)."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(lease: Lease, host: str) -> bool:
    """The lease's holder ran on ``host`` (this host) and its process is gone. (A pid reused
    since by a live process, e.g. a container restarted with the same host name, counts as
    alive: that lease is taken when it expires, as before.)"""
    return lease.host == host and not pid_alive(lease.pid)


async def take_lease(store: StateStore, name: str, holder: LeaseHolder, ttl: float) -> LeaseResult:
    """Acquire ``name`` for ``holder``; a lease whose holder is gone on this host is taken at
    once, compare-and-set on that holder (see the module doc). Refused: ``acquired`` False and the live holder's lease.
    Raises what the store raises."""
    got = await store.acquire_lease(name, holder, ttl)
    if not got.acquired and got.lease is not None and holder_gone(got.lease, holder.host):
        got = await store.acquire_lease(name, holder, ttl, instead_of=got.lease.holder)
    return got


class LeaseKeeper:
    """One lease held by this process: taken with ``take``, kept with ``renew`` (about every
    second), and the fence ``check`` (see the module doc). ``clock`` is monotonic seconds."""

    def __init__(self, store: StateStore, name: str, holder: LeaseHolder, ttl: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.name, self.holder, self.ttl = store, name, holder, ttl
        self.clock = clock
        self.margin = max(1.0, ttl / 3)
        self.deadline = float("-inf")
        self.token = 0
        self.lease: Lease | None = None

    async def take(self) -> LeaseResult:
        """``take_lease``; on success the deadline starts and ``token`` is the lease's new
        generation. Refused: the live holder's lease in the result."""
        sent = self.clock()
        got = await take_lease(self.store, self.name, self.holder, self.ttl)
        if got.acquired and got.lease is not None:
            self.token = got.lease.token
            self._held(got.lease, sent)
        return got

    async def renew(self) -> LeaseResult:
        """Renew; on success the deadline moves on. Refused: the lease is someone else's or
        gone (the caller stops being active); the deadline stays where it was."""
        sent = self.clock()
        got = await self.store.renew_lease(self.name, self.holder, self.ttl, token=self.token)
        if got.acquired and got.lease is not None:
            self._held(got.lease, sent)
        return got

    def _held(self, lease: Lease, sent: float) -> None:
        self.lease = lease
        self.deadline = sent + self.ttl - self.margin

    def check(self) -> None:
        """Raise LeaseExpired when the lease is past its local deadline."""
        if self.clock() > self.deadline:
            raise LeaseExpired(f"lease {self.name} (generation {self.token}) of runner "
                               f"{self.holder.id} was not renewed in time; not writing until "
                               "it is renewed")

    async def release(self) -> bool:
        self.deadline = float("-inf")
        return await self.store.release_lease(self.name, self.holder.id)


#: the Cluster methods that write into the target (each call is one batch or one change)
WRITES = frozenset({
    "insert_texts", "delete_keys", "ensure_db", "create_table", "ensure_table", "drop_table",
    "drop_db", "create_index", "drop_index", "set_write_hook", "set_rejecting_write_hook",
    "grant", "ensure_user", "drop_user",
})


class FencedCluster:
    """``cluster`` with ``keeper.check()`` before every write (WRITES); everything else is
    the cluster's own. Closing it does not close ``cluster`` (the runner owns that)."""

    def __init__(self, cluster: Cluster, keeper: LeaseKeeper) -> None:
        self._cluster, self._keeper = cluster, keeper

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cluster, name)
        if name not in WRITES:
            return attr

        async def fenced(*args: Any, **kwargs: Any) -> Any:
            self._keeper.check()
            return await attr(*args, **kwargs)
        return fenced

    async def close(self) -> None:
        """Nothing: the wrapped cluster is closed by its owner."""
