"""Opening what a policy names: the repository and the clusters, and choosing tables."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from drtool import cluster as cluster_access
from drtool.cluster import Connector
from drtool.cluster.base import Cluster
from drtool.errors import UsageError
from drtool.model import TableName
from drtool.config.policy import Policy
from drtool.repo.manifest import Manifest
from drtool.repo.objects import LOCKS_PREFIX
from drtool.repo.repository import Repository
from drtool.storage import open_storage


async def open_repository(policy: Policy, *, create: bool = False,
                          notes: list[str] | None = None) -> Repository:
    """Open (or with ``create`` initialise) the policy's repository.

    With ``create`` the storage is checked first (``Storage.check``: a missing bucket, Object
    Lock off) and its notes appended to ``notes``. Raises PolicyError when the policy has no
    [repository] or [encryption] section, and RepositoryError, StorageError,
    StorageUnreachable, AuthError, EncryptionKeyError."""
    policy.require("repository", "encryption")
    storage = open_storage(policy.repository, create=create, bandwidth=policy.throttle.bandwidth,
                           short_lived=(LOCKS_PREFIX,))  # rewritten and deleted every few minutes
    keys = policy.encryption.key_sources()
    try:
        if create:
            found = await storage.check()
            if notes is not None:
                notes += found
            return await Repository.create(storage, keys)
        return await Repository.open(storage, keys)
    except BaseException:
        await storage.close()
        raise


async def connect_role(policy: Policy, role: str, connector: Connector | None = None) -> Cluster:
    """Connect to the policy's ``primary`` or ``standby`` cluster (through ``connector``: see
    drtool.cluster; None for the real servers)."""
    if role == "primary":
        section = policy.primary
    elif role == "standby":
        policy.require("standby")
        section = policy.standby
    else:
        raise UsageError(f"unknown cluster {role!r}: expected primary or standby")
    return await cluster_access.connect(section.config(role), connector)


@contextlib.asynccontextmanager
async def repository_and_cluster(policy: Policy, role: str, *, snapshot: str | None = None,
                                 connector: Connector | None = None,
                                 ) -> AsyncIterator[tuple[Repository, Cluster, Manifest | None]]:
    """The policy's repository and its ``role``'s cluster, both closed on exit; with
    ``snapshot`` (an id, a prefix or "latest"), its manifest too, resolved BEFORE connecting,
    so an unknown snapshot is refused without touching the cluster. Raises what
    ``open_repository``, ``Repository.resolve`` and ``connect_role`` raise."""
    async with await open_repository(policy) as repo:
        manifest = None if snapshot is None else await repo.resolve(snapshot)
        async with await connect_role(policy, role, connector) as cluster:
            yield repo, cluster, manifest


def parse_tables(names: Iterable[str]) -> list[TableName]:
    return [TableName.parse(n, what="--table") for n in names]
