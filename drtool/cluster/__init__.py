"""Cluster access. ``connect`` is the one way the core obtains a ``Cluster``.

Hosts registered with the in-memory fake (``drtool.cluster.fake.register``, done only by tests
and benches) are served by the fake; every other host by the real adapter.
"""

from __future__ import annotations

from drtool.cluster.base import Cluster
from drtool.model import ClusterConfig


async def connect(config: ClusterConfig) -> Cluster:
    """Connect to the first reachable host of ``config``.

    Raises ClusterUnreachable naming the hosts tried, AuthError for a refused user/password."""
    from drtool.cluster import fake

    server = fake.lookup(config.hosts)
    if server is not None:
        return server.connect(config)
    from drtool.cluster.rethink.connect import connect_rethinkdb

    return await connect_rethinkdb(config)
