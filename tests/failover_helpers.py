"""Helpers of the failover tests: a deployment with an application user, a runner with the
users sync hook, an application writer that records every acknowledged write."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from drtool.cluster.fake import NETWORK
from drtool.cluster import connect
from drtool.cluster.base import Cluster
from drtool.coordination.state import Roles, StateStore
from drtool.errors import ClusterUnreachable, PermissionDenied
from drtool.coordination.users_sync import runner_users_sync
from drtool.model import ClusterConfig, TableName
from drtool.config.policy import Policy

from tests.replication_helpers import Background

APP_PASSWORD_ENV = "DRTOOL_TEST_APP_PASSWORD"
APP_PASSWORD = "app-secret-pw"


def failover_section(app_user: str = "app", *, fence: str = "permissions") -> str:
    return (f'[failover]\napp_users = ["{app_user}"]\nfence = "{fence}"\ndrain_timeout = "20s"\n'
            f'max_lag = "10s"\n[failover.users.{app_user}]\npassword_env = "{APP_PASSWORD_ENV}"\n')


def with_users_sync(bg: Background) -> Background:
    policy = bg.policy
    bg.runner.users_sync = runner_users_sync(policy.failover, policy.tables,
                                             policy.replication.state_db, policy.name)
    return bg


async def roles_of(policy: Policy, role: str) -> Roles:
    section = policy.primary if role == "primary" else policy.standby
    async with await connect(section.config(role), NETWORK) as cluster:
        return await StateStore(cluster, policy.replication.state_db, policy.name).read_roles()


async def app_connect(policy: Policy, role: str, user: str = "app") -> Cluster:
    section = policy.primary if role == "primary" else policy.standby
    return await connect(ClusterConfig(role, section.hosts, user=user, password=APP_PASSWORD),
                         NETWORK)


@dataclass
class Writer:
    """The application: writes ``{"id": n, "w": n}`` to the current primary as the app user;
    a write refused by the fence (permission error or hook error) or a lost connection is
    retried against the other cluster. ``acked`` holds every acknowledged id."""

    policy: Policy
    table: TableName
    role: str = "primary"
    rate: float = 200.0
    acked: list[int] = field(default_factory=list)
    refused: int = 0
    switched_at: float | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        conns: dict[str, Cluster] = {}
        n = 0
        try:
            while not self._stop.is_set():
                if self.role not in conns:
                    conns[self.role] = await app_connect(self.policy, self.role)
                doc = json.dumps({"id": n, "w": n})
                try:
                    res = await conns[self.role].insert_texts(self.table, [doc])
                    ok = res.errors == 0 and res.inserted == 1
                except (PermissionDenied, ClusterUnreachable):
                    ok = False
                if ok:
                    self.acked.append(n)
                    n += 1
                else:  # fenced: the application moves to the other cluster and retries
                    self.refused += 1
                    self.role = "standby" if self.role == "primary" else "primary"
                    if self.switched_at is None:
                        self.switched_at = asyncio.get_running_loop().time()
                    await asyncio.sleep(0.02)
                await asyncio.sleep(1 / self.rate)
        finally:
            for conn in conns.values():
                await conn.close()

    def stop(self) -> None:
        self._stop.set()
